"""The live profiler against the real Triton (a variant the ensemble does not use, so the
ensemble keeps serving while the variant is reloaded with other batch sizes)."""

from __future__ import annotations

import pytest

from adapter.core.profile import fit
from adapter.models.scoring import load_langid_eval
from adapter.profiler import ProfileSettings, measure_variant
from adapter.serving.repository import ModelRepository

QUICK = ProfileSettings(batch_sizes=(1, 8), instances=(1, 2), warmup_requests=3,
                        min_requests=15, min_seconds=0.2, max_requests=60, throughput_seconds=0.6)


def test_profiler_measures_every_point_and_restores_the_model(triton):
    texts = [item["text"] for item in load_langid_eval()[:200]]
    repository = ModelRepository(triton.endpoints)
    before = repository.config("langid_cld2")
    seen = []
    measurements = measure_variant(triton.endpoints, "langid_cld2", "langid", texts, QUICK,
                                   progress=seen.append)
    assert seen == ["langid_cld2 b=1 n=1", "langid_cld2 b=8 n=1",
                    "langid_cld2 b=1 n=2", "langid_cld2 b=8 n=2"]
    assert [(m.batch_size, m.instances) for m in measurements] == [(1, 1), (8, 1), (1, 2), (8, 2)]
    for m in measurements:
        assert 0 < m.p50_ms <= m.p99_ms and m.requests >= 15 and m.throughput_rps > 0
        assert m.load_s is not None and 0 < m.load_s < 60  # the reload that set up this point
    by_point = {(m.batch_size, m.instances): m for m in measurements}
    # Batching is what makes CLD2 cheap per text: 8 per call must beat 1 per call clearly.
    assert by_point[(8, 1)].throughput_rps > 2 * by_point[(1, 1)].throughput_rps
    assert repository.config("langid_cld2") == before
    profile = fit(measurements)
    assert profile.latency.p99_ms(8) > 0 and 0.05 <= profile.instance_efficiency <= 1.0
    assert 0 < profile.load_s <= profile.load_s_max < 60
    print(f"langid_cld2 load s: {[m.load_s for m in measurements]} "
          f"median {profile.load_s:.3f} max {profile.load_s_max:.3f}")
    repository.close()


def test_tpa_profile_records_each_points_server_side_latency(tmp_path):
    """`tpa profile` end to end (its own traced Triton): every point also gets Triton's share of
    its requests, which is part of each client round trip and so never longer."""
    import json

    from adapter.cli import main

    out = tmp_path / "profiles.json"
    assert main(["profile", "--model", "langid_cld2", "--batch-sizes", "1,4", "--instances", "1",
                 "--out", str(out)]) == 0
    points = json.loads(out.read_text())["models"]["langid_cld2"]["measurements"]
    assert [p["batch_size"] for p in points] == [1, 4]
    for p in points:
        assert 0 < p["server_p50_ms"] <= p["server_p99_ms"]
        assert p["server_p50_ms"] <= p["p50_ms"] and p["server_p99_ms"] <= p["p99_ms"]


def test_the_saturation_sweep_climbs_its_ladder_open_loop_and_restores_the_model(triton, tmp_path):
    from adapter.core.profile import load_profiles
    from adapter import paths
    from adapter.profiler import SweepSettings, sweep_variant

    profile = load_profiles(paths.ENSEMBLES / "text_search" / "profiles.json")["langid_cld2"]
    repository = ModelRepository(triton.endpoints)
    before = repository.config("langid_cld2")
    settings = SweepSettings(configs=((1, 1), (4, 1)), start_share=0.5, step=2.0, seconds=3, max_seconds=3,
                             min_requests=10, max_rps=40.0)
    texts = [item["text"] for item in load_langid_eval()[:200]]
    seen = []
    points = sweep_variant(triton.endpoints, "langid_cld2", profile, texts, settings, seen.append, tmp_path)
    # CLD2 serves thousands of texts per second: the ladder is capped at the load generator's
    # reach, and still climbs five rates to it.
    rates = [2.5, 5.0, 10.0, 20.0, 40.0]
    assert seen == [f"langid_cld2 b={b} n=1 {r:.0f} req/s" for b in (1, 4) for r in rates]
    assert [(p.batch_size, p.instances, p.offered_rps) for p in points] == [
        (b, 1, r) for b in (1, 4) for r in rates]
    for p in points:
        # Poisson arrivals over the 2 s measured: the count is a draw, within 5 sigma of the rate.
        assert abs(p.sent_rps - p.offered_rps) <= 5 * (2 * p.offered_rps) ** 0.5 / 2
        assert p.failures == 0 and p.achieved_rps >= 0.9 * p.sent_rps  # far below capacity
        assert 0 < p.p50_ms <= p.p99_ms and p.requests == round(p.sent_rps * 2)
        assert p.mean_batch is not None and 1.0 <= p.mean_batch <= p.batch_size  # Triton's counters
        assert p.compute_ms is not None and p.compute_ms > 0
    assert repository.config("langid_cld2") == before
    repository.close()


def test_tpa_profile_saturation_names_bad_configs_and_unprofiled_variants(tmp_path, capsys):
    import dataclasses

    import pytest

    from adapter import paths
    from adapter.cli import main
    from adapter.core.profile import load_profiles, save_profiles

    with pytest.raises(SystemExit):
        main(["profile", "--saturation", "--configs", "4"])
    assert "--configs: expected BATCHxINSTANCES,... (e.g. 1x1,4x2), got '4'" in capsys.readouterr().err
    for flag in ("--budget-ms", "--max-rps"):
        with pytest.raises(SystemExit):
            main(["profile", "--saturation", flag, "-5"])
        assert f"{flag}: expected a positive number, got '-5'" in capsys.readouterr().err
    profiles = load_profiles(paths.ENSEMBLES / "text_search" / "profiles.json")
    partial = tmp_path / "profiles.json"
    save_profiles(dataclasses.replace(profiles, variants={
        k: v for k, v in profiles.variants.items() if k != "embed_l3"}), partial)
    assert main(["profile", "--saturation", "--model", "embed_l3", "--out", str(partial)]) != 0
    assert "--saturation: embed_l3 not in" in capsys.readouterr().err


def test_tpa_profile_calibrate_refits_from_the_stored_curves_without_measuring(tmp_path, capsys):
    import json
    import shutil

    from adapter import paths
    from adapter.cli import main
    from adapter.core.profile import as_measured, load_profiles
    from adapter.core.saturation import calibrate

    out = tmp_path / "profiles.json"
    shutil.copy(paths.ENSEMBLES / "text_search" / "profiles.json", out)
    doc = json.loads(out.read_text())
    for entry in doc["models"].values():
        entry.pop("calibration", None)
    out.write_text(json.dumps(doc))
    assert main(["profile", "--calibrate", "--model", "embed_l6_int8", "--budget-ms", "150", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| embed_l6_int8 | 1 | 1 |" in printed and "wrote each model's calibration" in printed
    profiles = load_profiles(out)
    expected = calibrate(profiles["embed_l6_int8"], 150.0, side="client")
    assert profiles["embed_l6_int8"].service_scale == pytest.approx(expected.service_scale)
    assert profiles["embed_l6_int8"].service_scale != 1.0  # the sweep says it is slower than profiled
    other = profiles["embed_l3"]  # not chosen: as measured
    assert (other.service_scale, other.instance_efficiency) == (1.0, as_measured(other).instance_efficiency)
    assert load_profiles(out).provenance["saturation"]["calibration"]["budget_ms"] == 150.0
    assert main(["profile", "--calibrate", "--saturation", "--out", str(out)]) != 0
    assert "choose one" in capsys.readouterr().err
