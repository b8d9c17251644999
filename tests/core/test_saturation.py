"""Saturation curves: JSON round trip and validation, measured and predicted max rps at a budget,
the service-scale calibration (pure; no server)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

from adapter.core.profile import (Measurement, Profiles, SaturationPoint, fit, load_profiles, save_profiles,
                                  save_saturation)
from adapter.core.saturation import (MaxRps, calibrate, curves, fit_service_scale, measured_max_rps, predicted,
                                     predicted_max_rps)
from adapter.errors import ConfigError


def _point(rate, p99, *, sent=None, achieved=None, failures=0, b=1, n=1, server_p99=None, **extra):
    sent = rate if sent is None else sent
    return SaturationPoint(batch_size=b, instances=n, offered_rps=rate, sent_rps=sent,
                           achieved_rps=sent if achieved is None else achieved, p50_ms=p99 / 2, p99_ms=p99,
                           requests=int(sent * 5), failures=failures,
                           server_p50_ms=None if server_p99 is None else server_p99 / 2,
                           server_p99_ms=server_p99, **extra)


def _constant(service_ms: float = 10.0):
    """A variant whose batch of one always takes `service_ms` (p50 = p99: no variance)."""
    return fit([Measurement(model="m", batch_size=1, instances=1, p50_ms=service_ms, p99_ms=service_ms,
                            throughput_rps=1000 / service_ms, requests=100)])


# -- the profiles file ------------------------------------------------------------------------

def test_saturation_round_trips_and_save_saturation_leaves_the_rest_untouched(tmp_path: Path):
    vp = dataclasses.replace(_constant(), saturation=(
        _point(80.0, 40.0, server_p99=35.0, mean_batch=1.0, compute_ms=9.5, other_cpu=0.01),
        _point(30.0, 12.0)))
    path = tmp_path / "p.json"
    save_profiles(Profiles(variants={"m": _constant()}, provenance={"command": "tpa profile"}), path)
    before = json.loads(path.read_text())
    save_saturation(Profiles(variants={"m": vp}), path, {"date": "2026-01-01"})
    doc = json.loads(path.read_text())
    assert doc["models"]["m"]["measurements"] == before["models"]["m"]["measurements"]
    assert doc["models"]["m"]["fit"] == before["models"]["m"]["fit"]
    assert doc["provenance"] == {"command": "tpa profile", "saturation": {"date": "2026-01-01"}}
    assert [p["offered_rps"] for p in doc["models"]["m"]["saturation"]] == [30.0, 80.0]  # sorted
    assert "server_p99_ms" not in doc["models"]["m"]["saturation"][0]  # optional fields only when known
    back = load_profiles(path)["m"]
    assert back.saturation == tuple(sorted(vp.saturation, key=lambda p: p.offered_rps))
    # save_profiles writes them too, and files without any still load
    save_profiles(Profiles(variants={"m": back}), tmp_path / "q.json")
    assert load_profiles(tmp_path / "q.json")["m"].saturation == back.saturation
    assert load_profiles(tmp_path / "q.json")["m"].measurements == back.measurements


GOOD = {"batch_size": 1, "instances": 1, "offered_rps": 100.0, "sent_rps": 98.0, "achieved_rps": 97.0,
        "p50_ms": 3.0, "p99_ms": 9.0, "requests": 490, "failures": 0}


@pytest.mark.parametrize("saturation, match", [
    ({"not": "a list"}, r"`models\.m\.saturation`: expected a list of sweep points"),
    ([5], r"`models\.m\.saturation\[0\]`: expected an object, got 5"),
    ([{k: v for k, v in GOOD.items() if k != "achieved_rps"}],
     r"`models\.m\.saturation\[0\]\.achieved_rps`: expected a number >= 0, got None"),
    ([{**GOOD, "rps": 1}], r"`models\.m\.saturation\[0\]\.rps`: unknown key"),
    ([{**GOOD, "batch_size": 0}], r"`models\.m\.saturation\[0\]\.batch_size`: expected an integer >= 1"),
    ([{**GOOD, "offered_rps": 0}], r"`models\.m\.saturation\[0\]\.offered_rps`: expected a rate > 0"),
    ([{**GOOD, "p99_ms": 2.0}], r"`models\.m\.saturation\[0\]`: expected p50_ms <= p99_ms"),
    ([{**GOOD, "server_p50_ms": 2.0, "server_p99_ms": 1.0}], r"expected server_p50_ms <= server_p99_ms"),
    ([{**GOOD, "failures": 491}], r"`models\.m\.saturation\[0\]\.failures`: expected <= requests \(490\)"),
    ([{**GOOD, "p99_ms": float("nan")}], r"`models\.m\.saturation\[0\]\.p99_ms`: expected a number"),
    ([{**GOOD, "mean_batch": "1"}], r"`models\.m\.saturation\[0\]\.mean_batch`: expected a number"),
])
def test_malformed_saturation_is_named(tmp_path: Path, saturation, match):
    path = tmp_path / "p.json"
    save_profiles(Profiles(variants={"m": _constant()}), path)
    doc = json.loads(path.read_text())
    doc["models"]["m"]["saturation"] = saturation
    path.write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match=match):
        load_profiles(path)


def test_every_saturation_problem_is_listed(tmp_path: Path):
    path = tmp_path / "p.json"
    save_profiles(Profiles(variants={"m": _constant()}), path)
    doc = json.loads(path.read_text())
    doc["models"]["m"]["saturation"] = [{**GOOD, "failures": -1}, {**GOOD, "extra": 1}, GOOD]
    path.write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match=r"2 problems:\n.*failures.*\n.*extra"):
        load_profiles(path)


# -- measured max rps -------------------------------------------------------------------------

def test_measured_max_rps_interpolates_the_first_crossing_in_log_p99():
    curve = [_point(100, 20), _point(200, 50), _point(300, 200), _point(400, 500), _point(500, 90)]
    got = measured_max_rps(curve, 100.0, side="client")
    t = (math.log(100) - math.log(50)) / (math.log(200) - math.log(50))  # = 0.5
    assert got == MaxRps(pytest.approx(200 + t * 100), "=")
    assert str(got) == "250"


def test_one_rate_over_the_budget_then_one_within_is_noise_not_a_crossing():
    """p99 grows with the rate: a window over the budget followed by one within it at a higher
    rate was a spike (measured live: 406 ms at 130 req/s, then 22 ms at 245)."""
    spike = [_point(60, 20), _point(130, 406), _point(245, 22), _point(300, 40)]
    assert measured_max_rps(spike, 150.0) == MaxRps(300, ">=")
    # confirmed by the next rate: a crossing, interpolated from the last point within
    assert measured_max_rps(spike[:2] + [_point(245, 300)], 150.0).rps < 130
    # the ladder's last rate over the budget is a crossing: nothing after it says otherwise
    assert measured_max_rps(spike[:2], 150.0).bound == "="
    # a spike before the confirmed crossing is skipped: the crossing is the later one
    later = spike[:3] + [_point(300, 200), _point(350, 400)]
    assert 245 < measured_max_rps(later, 150.0).rps < 300


def test_measured_max_rps_bounds_and_falling_behind():
    assert measured_max_rps([_point(100, 20), _point(200, 50)], 100.0) == MaxRps(200, ">=")
    assert measured_max_rps([_point(100, 200), _point(200, 500)], 100.0) == MaxRps(100, "<")
    # a point that answered under 95 % of its arrivals is over, whatever its p99: the last one within
    behind = [_point(100, 20), _point(200, 60, achieved=150)]
    assert measured_max_rps(behind, 100.0) == MaxRps(100, "=")
    failed = [_point(100, 20), _point(200, 60, failures=3)]
    assert measured_max_rps(failed, 100.0) == MaxRps(100, "=")
    # rates are what was sent (the Poisson draw), not what was asked
    assert measured_max_rps([_point(100, 20, sent=97.0)], 100.0) == MaxRps(97.0, ">=")


def test_measured_max_rps_reads_the_server_side_p99_where_measured():
    curve = [_point(100, 120, server_p99=40), _point(200, 300, server_p99=90)]
    assert measured_max_rps(curve, 100.0).bound == ">="  # the server kept it
    assert measured_max_rps(curve, 100.0, side="client") == MaxRps(100, "<")


def test_curves_group_by_configuration_sorted_by_rate():
    points = [_point(300, 5, b=4), _point(100, 5), _point(50, 5, b=4), _point(20, 5, n=2)]
    got = curves(points)
    assert list(got) == [(1, 1), (1, 2), (4, 1)]
    assert [p.offered_rps for p in got[(4, 1)]] == [50, 300]


# -- predicted max rps and the calibration ------------------------------------------------------

def test_predicted_max_rps_solves_the_stage_model():
    """Constant 10 ms service, B = n = 1: capacity 100 rps, p99 = 10 + ln(100) r/(1 - r) * 10/2
    (M/D/1 through the model's Allen-Cunneen term, Cs^2 = 0); at 150 ms r/(1-r) = 140/(5 ln 100)."""
    vp = _constant(10.0)
    x = 140 / (5 * math.log(100))
    assert predicted(vp, 1, 1, 1.0)[1] == pytest.approx(100.0)
    assert predicted_max_rps(vp, 1, 1, 150.0) == pytest.approx(100 * x / (1 + x), rel=1e-6)
    assert predicted_max_rps(vp, 1, 1, 5.0) == 0.0  # even one request alone takes 10 ms
    assert predicted_max_rps(vp, 1, 1, 1e9) == pytest.approx(100.0)  # the capacity bounds it


def test_predicted_max_rps_matches_the_model_on_a_measured_profile():
    from adapter import paths

    vp = load_profiles(paths.ENSEMBLES / "text_search" / "profiles.json")["embed_l3_int8"]
    for b, n in ((1, 1), (4, 1), (2, 2)):
        rate = predicted_max_rps(vp, b, n, 150.0)
        assert predicted(vp, b, n, rate * 0.999)[0] <= 150.0 < predicted(vp, b, n, rate * 1.01)[0]


def test_fit_service_scale_recovers_a_known_slowdown():
    vp = _constant(10.0)
    slower = dataclasses.replace(vp, service_scale=1.3)
    target = predicted_max_rps(slower, 1, 1, 150.0)
    assert fit_service_scale(vp, 1, 1, 150.0, target) == pytest.approx(1.3, rel=1e-4)
    assert fit_service_scale(vp, 1, 1, 150.0, 1e6) == 0.25  # clipped at its bounds
    assert fit_service_scale(vp, 1, 1, 150.0, 1e-3) == 4.0


def _crossing_at(vp, b, n, low=0.5, high=1.2):
    """A curve of (b, n) that crosses 150 ms exactly where `vp`'s stage model does."""
    at = predicted_max_rps(vp, b, n, 150.0)
    return [_point(at * low, 20.0, b=b, n=n), _point(at * 0.999, 149.0, b=b, n=n), _point(at * high, 900.0, b=b, n=n)]


def test_calibrate_recovers_the_service_scale_and_the_instance_efficiency():
    vp = _constant(10.0)  # measured alone: instance efficiency 1 (no measurement says otherwise)
    truth = dataclasses.replace(vp, service_scale=1.5, instance_efficiency=0.4)
    sat = _crossing_at(truth, 1, 1) + _crossing_at(truth, 4, 1) + _crossing_at(truth, 1, 2)
    stored = dataclasses.replace(vp, saturation=tuple(sat), service_scale=3.0, instance_efficiency=0.9)
    got = calibrate(stored, 150.0)  # from the profile as measured, not from what is stored
    assert got.service_scale == pytest.approx(1.5, rel=0.02)
    assert got.instance_efficiency == pytest.approx(0.4, abs=0.02)
    assert predicted_max_rps(got.apply(vp), 1, 2, 150.0) == pytest.approx(predicted_max_rps(truth, 1, 2, 150.0), rel=0.02)
    # Held out: one-instance curves alone say nothing about a second instance.
    alone = calibrate(stored, 150.0, only=[(1, 1), (4, 1)])
    assert alone.service_scale == pytest.approx(1.5, rel=0.02) and alone.instance_efficiency == 1.0
    # Without one-instance curves the scale is fitted on the others, at the measured efficiency.
    multi = calibrate(stored, 150.0, only=[(1, 2)])
    assert multi.instance_efficiency == 1.0 and multi.service_scale > 1.5
    assert calibrate(vp, 150.0).service_scale == 1.0  # no curves: no evidence


def test_calibrate_keeps_within_the_bounds_of_curves_that_never_crossed():
    vp = _constant(10.0)
    never = (_point(50, 20.0), _point(80, 40.0))  # kept 150 ms up to 80 req/s: at least that fast
    assert calibrate(dataclasses.replace(vp, saturation=never), 150.0).service_scale == 1.0
    assert calibrate(dataclasses.replace(vp, saturation=(_point(90, 20.0),)), 150.0).service_scale < 1.0
    over = (_point(20, 400.0), _point(30, 900.0))  # over already at 20 req/s: slower than 20 allows
    assert calibrate(dataclasses.replace(vp, saturation=over), 150.0).service_scale == pytest.approx(
        fit_service_scale(vp, 1, 1, 150.0, 20.0))


def test_the_calibration_round_trips_through_the_profiles_file(tmp_path: Path):
    from adapter.core.profile import Calibration

    path = tmp_path / "p.json"
    save_profiles(Profiles(variants={"m": _constant()}), path)
    assert "calibration" not in json.loads(path.read_text())["models"]["m"]  # as measured: not written
    calibrated = Calibration(1.7, 0.5).apply(_constant())
    save_saturation(Profiles(variants={"m": calibrated}), path)
    back = load_profiles(path)["m"]
    assert (back.service_scale, back.instance_efficiency) == (1.7, 0.5)
    assert service_stats_mean(back) == pytest.approx(1.7 * service_stats_mean(_constant()))
    save_profiles(load_profiles(path), tmp_path / "q.json")
    assert load_profiles(tmp_path / "q.json")["m"].service_scale == 1.7
    save_saturation(Profiles(variants={"m": _constant()}), path)  # calibrated back to as measured: removed
    assert "calibration" not in json.loads(path.read_text())["models"]["m"]
    for bad, match in (({"service_scale": -2, "instance_efficiency": 0.5}, r"`models\.m\.calibration\.service_scale`"),
                       ({"service_scale": 1.0, "instance_efficiency": 1.5}, r"instance_efficiency`: expected a number <= 1"),
                       ({"service_scale": 1.0, "instance_efficiency": 0.5, "x": 1}, r"calibration\.x`: unknown key"),
                       (3, r"`models\.m\.calibration`: expected an object")):
        doc = json.loads(path.read_text())
        doc["models"]["m"]["calibration"] = bad
        path.write_text(json.dumps(doc))
        with pytest.raises(ConfigError, match=match):
            load_profiles(path)


def service_stats_mean(vp) -> float:
    from adapter.core.profile import service_stats

    return float(service_stats(vp, 1).mean_ms[1])


# -- the fidelity check of each curve -----------------------------------------------------------

def test_a_curve_check_compares_measured_and_predicted_max_rps_and_fits_the_scale():
    from adapter.core.saturation import check_curves, format_checks

    vp = _constant(10.0)  # predicted max rps at 150 ms: about 86 (see above)
    predicted_rps = predicted_max_rps(vp, 1, 1, 150.0)
    close = [_point(40, 20), _point(80, 60), _point(100, 400)]  # crosses 150 ms between 80 and 100
    far = [_point(20, 30, b=4), _point(30, 300, b=4)]  # B = 4 crosses at ~25: far below the model
    bound = [_point(40, 20, n=2), _point(60, 30, n=2)]  # never crossed: a lower bound only
    vp = dataclasses.replace(vp, saturation=tuple(close + far + bound))
    checks = {(c.batch_size, c.instances): c for c in check_curves(vp, 150.0, side="client")}
    c = checks[(1, 1)]
    assert c.measured.bound == "=" and 80 < c.measured.rps < 100 and c.raw_rps == pytest.approx(predicted_rps)
    assert c.error(c.raw_rps) == pytest.approx(predicted_rps / c.measured.rps - 1)
    assert c.ok(c.raw_rps) == (abs(c.error(c.raw_rps)) <= 0.15)
    assert checks[(4, 1)].ok(checks[(4, 1)].raw_rps) is False  # the model is too optimistic there
    # Calibrated on both one-instance crossings: between the two; held out: fitted on B = 4 alone.
    assert c.predicted_rps == pytest.approx(predicted_max_rps(calibrate(vp, 150.0, "client").apply(vp), 1, 1, 150.0))
    alone = calibrate(vp, 150.0, "client", only=[(4, 1), (1, 2)]).apply(vp)
    assert c.held_out_rps == pytest.approx(predicted_max_rps(alone, 1, 1, 150.0))
    assert c.held_out_rps < c.predicted_rps < c.raw_rps  # the B = 4 curve says slower than (1, 1) does
    b = checks[(1, 2)]
    assert b.measured.bound == ">=" and b.error(b.raw_rps) is None
    assert b.ok(b.raw_rps) == (b.raw_rps >= 0.85 * 60)
    table = format_checks(list(checks.values()))
    assert table.splitlines()[0].startswith("| variant | B | n | measured max rps")
    assert "| m | 1 | 2 | >=60 |" in table and len(table.splitlines()) == 5
    one = dataclasses.replace(vp, saturation=tuple(close))
    assert check_curves(one, 150.0, side="client")[0].held_out_rps is None  # nothing to hold out


def test_the_fidelity_bench_checks_the_stored_curves(tmp_path: Path, capsys):
    from adapter import paths
    from adapter.bench.fidelity import main

    profiles = load_profiles(paths.ENSEMBLES / "text_search" / "profiles.json")
    without = tmp_path / "without.json"
    save_profiles(dataclasses.replace(profiles, variants={
        name: dataclasses.replace(vp, saturation=()) for name, vp in profiles.variants.items()}), without)
    assert main(["--saturation", "--profiles", str(without)]) == 1
    assert "run `tpa profile --saturation` first" in capsys.readouterr().out
    from adapter.core.profile import as_measured

    vp = as_measured(profiles["embed_l3_int8"])
    at = predicted_max_rps(vp, 1, 1, 150.0)  # a curve crossing the SLA right where the model says
    curve = (_point(at * 0.5, 20.0), _point(at * 0.9, 100.0), _point(at * 1.1, 225.0))
    with_curve = tmp_path / "with.json"
    save_profiles(dataclasses.replace(profiles, variants={
        name: dataclasses.replace(vp, saturation=curve if name == "embed_l3_int8" else ())
        for name, vp in profiles.variants.items()}), with_curve)
    assert main(["--saturation", "--profiles", str(with_curve)]) == 0
    out = capsys.readouterr().out
    assert "| embed_l3_int8 | 1 | 1 |" in out and "as measured: 1 of 1 curves within 15 %" in out
    assert "held out: 0 of 0" in out  # one curve: nothing to hold out


def test_the_sweeps_ladder_starts_well_below_the_models_capacity_and_climbs_geometrically():
    from adapter.profiler import SweepSettings, ladder, rate_seconds

    s = SweepSettings()  # from 10 % of the capacity by 1.3x up to 1.5x it or the generator's reach
    rates = ladder(100.0, s)
    assert rates[0] == pytest.approx(10.0) and rates[-1] <= 150.0 < rates[-1] * 1.3
    assert all(b / a == pytest.approx(1.3) for a, b in zip(rates, rates[1:]))
    fast = ladder(10_000.0, s)  # capped at max_rps, with at least five rates below it
    assert fast[-1] == pytest.approx(s.max_rps) and len(fast) == 5
    # each rate runs long enough for its p99 from min_requests, within [seconds, max_seconds]
    assert rate_seconds(1000.0, s) == s.seconds and rate_seconds(1.0, s) == s.max_seconds
    assert rate_seconds(20.0, s) == 1 + 200 // 20



def test_without_a_crossing_the_scale_is_tritons_compute_time_over_the_profiles():
    vp = _constant(10.0)  # 10 ms a request, as profiled
    slow = (_point(20, 30.0, compute_ms=21.0, mean_batch=1.0), _point(40, 40.0, compute_ms=19.0, mean_batch=1.0),
            _point(30, 60.0, n=2, compute_ms=35.0, mean_batch=1.0))  # two instances share cores: not evidence
    assert calibrate(dataclasses.replace(vp, saturation=slow), 1e4).service_scale == pytest.approx(2.0)
    # a curve that kept the budget further than that scale allows caps it
    far = slow[:2] + (_point(90, 60.0, compute_ms=20.0, mean_batch=1.0),)
    capped = calibrate(dataclasses.replace(vp, saturation=far), 150.0).service_scale
    assert capped == pytest.approx(fit_service_scale(vp, 1, 1, 150.0, 90.0)) and capped < 2.0
