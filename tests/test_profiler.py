"""The live profiler against the real Triton (a variant the ensemble does not use, so the
ensemble keeps serving while the variant is reloaded with other batch sizes)."""

from __future__ import annotations

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
