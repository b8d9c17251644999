"""Profiles: latency fit choice and error, instance scaling, JSON round trip and errors."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from adapter import paths
from adapter.core.profile import FORMAT, Measurement, Profiles, fit, fit_latency, load_profiles, save_profiles
from adapter.errors import ConfigError


def _m(b, p99, n=1, thr=None, model="m"):
    return Measurement(model=model, batch_size=b, instances=n, p50_ms=p99 * 0.8, p99_ms=p99,
                       throughput_rps=thr if thr is not None else 1000 * b / p99, requests=500)


def test_linear_data_gets_a_linear_fit():
    f = fit_latency([1, 2, 4, 8, 16], [3 + 0.5 * b for b in (1, 2, 4, 8, 16)])
    assert f.kind == "poly1"
    assert f.coefficients == pytest.approx((3.0, 0.5, 0.0), abs=1e-9)
    assert f.rmse_ms == pytest.approx(0.0, abs=1e-9) and f.max_batch_size == 16


def test_quadratic_data_gets_a_quadratic_fit_with_reported_error():
    bs = [1, 2, 4, 8, 16, 32]
    f = fit_latency(bs, [2 + 0.1 * b + 0.02 * b * b for b in bs])
    assert f.kind == "poly2"
    assert f.coefficients == pytest.approx((2.0, 0.1, 0.02), rel=1e-6)
    assert f.p99_ms(10) == pytest.approx(2 + 1 + 2)
    lin = fit_latency(bs[:3], [2 + 0.1 * b + 0.02 * b * b for b in bs[:3]])
    assert lin.kind == "poly1" and lin.max_rel_error > 0  # 3 points: no quadratic, error reported


def test_noisy_quadratic_that_would_decrease_is_rejected():
    f = fit_latency([1, 2, 4, 8], [10.0, 4.0, 4.5, 9.0])  # a parabola would dip below its b=1 value
    assert f.kind == "poly1"
    grid = [f.p99_ms(b) for b in range(1, 9)]
    assert all(b2 >= b1 - 1e-9 for b1, b2 in zip(grid, grid[1:]))


def test_single_point_is_flat():
    f = fit_latency([4], [7.0])
    assert f.kind == "poly0" and f.p99_ms(1) == 7.0


def test_instance_efficiency_from_measurements():
    ms = [_m(1, 10.0, thr=100.0), _m(4, 20.0, thr=200.0), _m(4, 20.0, n=2, thr=360.0), _m(1, 10.0, n=3, thr=260.0)]
    vp = fit(ms)
    # (360/200 - 1)/1 = 0.8 and (260/100 - 1)/2 = 0.8
    assert vp.instance_efficiency == pytest.approx(0.8) and vp.efficiency_measured
    assert vp.latency.max_batch_size == 4  # from the single-instance points
    assert fit([_m(1, 10.0), _m(2, 12.0)]).instance_efficiency == 1.0


def test_fit_rejects_mixed_models():
    with pytest.raises(ConfigError, match=r"fit: expected measurements of one model"):
        fit([_m(1, 1.0, model="a"), _m(2, 2.0, model="b")])


def test_round_trip(tmp_path: Path):
    profiles = Profiles(variants={"m": fit([_m(1, 3.0), _m(2, 3.5), _m(4, 4.5), _m(8, 6.5)])},
                        provenance={"host_cores": 2, "triton_version": "2.51.0", "date": "2026-01-01",
                                    "command": "tpa profile"})
    save_profiles(profiles, tmp_path / "p.json")
    doc = json.loads((tmp_path / "p.json").read_text())
    assert doc["format"] == FORMAT and doc["models"]["m"]["fit"]["kind"] == "poly1"
    back = load_profiles(tmp_path / "p.json")
    assert back.provenance == profiles.provenance
    assert back["m"].measurements == profiles["m"].measurements
    assert back["m"].latency == profiles["m"].latency


def test_load_times_round_trip_and_older_files_still_load(tmp_path: Path):
    ms = [_m(1, 3.0), _m(2, 3.5), _m(4, 4.5), _m(4, 4.0, n=2, thr=1500.0)]
    timed = [replace(m, load_s=s) for m, s in zip(ms, (0.8, 0.5, 2.0, 0.6))]
    vp = fit(timed)
    assert vp.load_s == pytest.approx(0.7) and vp.load_s_max == 2.0  # median and max over all n
    save_profiles(Profiles(variants={"m": vp, "old": fit([_m(1, 3.0, model="old")])}), tmp_path / "p.json")
    doc = json.loads((tmp_path / "p.json").read_text())
    assert [x["load_s"] for x in doc["models"]["m"]["measurements"]] == [0.8, 0.5, 2.0, 0.6]
    assert doc["models"]["m"]["fit"]["load_s"] == pytest.approx(0.7)
    assert "load_s" not in doc["models"]["old"]["measurements"][0] and "load_s" not in doc["models"]["old"]["fit"]
    back = load_profiles(tmp_path / "p.json")
    assert back["m"].measurements == vp.measurements
    assert (back["m"].load_s, back["m"].load_s_max) == (vp.load_s, vp.load_s_max)
    assert back["old"].load_s is None and back["old"].load_s_max is None
    # A file written before load times were measured loads, without them.
    (tmp_path / "old.json").write_text(json.dumps({"format": FORMAT, "models": {"m": {"measurements": [GOOD_M]}}}))
    assert load_profiles(tmp_path / "old.json")["m"].load_s is None


def test_server_side_percentiles_round_trip(tmp_path: Path):
    vp = fit([replace(_m(1, 3.0), server_p50_ms=0.4, server_p99_ms=1.1), _m(2, 3.5)])
    save_profiles(Profiles(variants={"m": vp}), tmp_path / "p.json")
    back = load_profiles(tmp_path / "p.json")["m"].measurements
    assert (back[0].server_p50_ms, back[0].server_p99_ms) == (0.4, 1.1)
    assert back[1].server_p50_ms is None  # only where measured


GOOD_M = {"batch_size": 1, "instances": 1, "p50_ms": 1.0, "p99_ms": 2.0, "throughput_rps": 5.0, "requests": 9}


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        ("{", r"p\.json: not valid JSON"),
        ([], r"p\.json: `<top>`: expected a JSON object, got list"),
        ({"format": "x", "models": {"m": {"measurements": [GOOD_M]}}}, r"`format`: expected 'tpa-profiles/1', got 'x'"),
        ({"format": FORMAT, "models": {}}, r"`models`: expected a non-empty object"),
        ({"format": FORMAT, "models": {"m": {"measurements": []}}}, r"`models\.m\.measurements`: expected a non-empty list"),
        ({"format": FORMAT, "models": {"m": {"measurements": [{**GOOD_M, "batch_size": 0}]}}},
         r"`models\.m\.measurements\[0\]\.batch_size`: expected an integer >= 1, got 0"),
        ({"format": FORMAT, "models": {"m": {"measurements": [{**GOOD_M, "p99_ms": 0.5}]}}},
         r"`models\.m\.measurements\[0\]\.p99_ms`: expected >= p50_ms \(1\.0\), got 0\.5"),
        ({"format": FORMAT, "models": {"m": {"measurements": [{**GOOD_M, "p99ms": 1}]}}},
         r"`models\.m\.measurements\[0\]\.p99ms`: unknown key"),
        ({"format": FORMAT, "models": {"m": {"measurements": [{**GOOD_M, "load_s": 0}]}}},
         r"p\.json: `models\.m\.measurements\[0\]\.load_s`: expected a number >= 1e-09, got 0"),
        ({"format": FORMAT, "models": {"m": {"measurements": [{**GOOD_M, "load_s": "1.2"}]}}},
         r"`models\.m\.measurements\[0\]\.load_s`: expected a number >= 1e-09, got '1\.2'"),
        ('{"format": "tpa-profiles/1", "models": {"m": {"measurements": [{"batch_size": 1, "instances": 1, '
         '"p50_ms": 1, "p99_ms": 2, "throughput_rps": 5, "requests": 9, "load_s": Infinity}]}}}',
         r"`models\.m\.measurements\[0\]\.load_s`: expected a number >= 1e-09, got inf"),
        ({"format": FORMAT, "models": {"m": {"measurements": [{**GOOD_M, "server_p99_ms": -1}]}}},
         r"`models\.m\.measurements\[0\]\.server_p99_ms`: expected a number >= 1e-09, got -1"),
    ],
)
def test_malformed_profiles(tmp_path: Path, doc, match):
    (tmp_path / "p.json").write_text(doc if isinstance(doc, str) else json.dumps(doc))
    with pytest.raises(ConfigError, match=match):
        load_profiles(tmp_path / "p.json")


def test_every_problem_is_listed(tmp_path: Path):
    bad = {"format": FORMAT, "models": {"a": {"measurements": [{**GOOD_M, "requests": -1}]},
                                         "b": {"measurements": [{**GOOD_M, "throughput_rps": "x"}]}}}
    (tmp_path / "p.json").write_text(json.dumps(bad))
    with pytest.raises(ConfigError, match=r"2 problems:\n  - `models\.a\.measurements\[0\]\.requests`.*\n"
                                          r"  - `models\.b\.measurements\[0\]\.throughput_rps`"):
        load_profiles(tmp_path / "p.json")


def test_placeholder_profiles_cover_text_search():
    from adapter.core.spec import load_spec

    spec = load_spec(paths.ENSEMBLES / "text_search" / "pipeline.yaml")
    profiles = load_profiles(paths.ENSEMBLES / "text_search" / "profiles.json")
    assert set(spec.models) <= set(profiles.variants)
