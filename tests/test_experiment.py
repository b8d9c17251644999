"""A short live experiment end to end (real Triton, Locust's trace replay, the adapter), and the
simulator run on the same trace compared with it the way the fidelity script does."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from adapter import paths
from adapter.bench.fidelity import adapter_lead_s, compare
from adapter.core.profile import load_profiles
from adapter.core.spec import load_spec
from adapter.experiment import per_second_rows, run_experiment, summarise_run
from adapter.sim.run import SimSettings, simulate

SPEC = load_spec(paths.ENSEMBLES / "text_search" / "pipeline.yaml")
PROFILES = load_profiles(paths.ENSEMBLES / "text_search" / "profiles.json")


def test_shed_late_and_failed_requests_are_counted_apart():
    # second 0: served, late, shed, failed (unfinished); second 1: served, shed.
    sent = np.array([0.1, 0.2, 0.3, 0.4, 1.1, 1.2])
    latency = np.array([50.0, 150.0, 5.0, 3000.0, 20.0, 2.0])
    failed = np.array([False, False, True, True, False, True])  # a shed request is an error too
    shed = np.array([False, False, True, False, False, True])
    rows = per_second_rows(sent, latency, failed, [], [4.0, 2.0], sla_ms=100, accuracy_bounds=(0, 1), shed=shed)
    assert [(r["achieved_rps"], r["shed"], r["sla_misses"], r["failed"]) for r in rows] == [(4, 1, 2, 1), (2, 1, 0, 0)]
    assert rows[1]["p50_ms"] == 20.0  # admitted requests only
    summary = summarise_run(rows, latency, failed, {"sla_ms": 100}, shed=shed)
    assert {k: summary[k] for k in ("requests", "failed", "shed", "late")} == {
        "requests": 6, "failed": 1, "shed": 2, "late": 1}
    assert summary["served_within_sla_pct"] == summary["shed_pct"] == summary["late_pct"] == 33.333
    assert summary["sla_miss_pct"] == 50.0  # 2 of the 4 admitted
    assert summary["p99_ms"] == pytest.approx(np.percentile([50, 150, 3000, 20], 99), abs=0.01)
    # Without shedding the figures mean what they always did: every error is a failure.
    plain = summarise_run(per_second_rows(sent, latency, failed, [], [4.0, 2.0], 100, (0, 1)), latency, failed, {})
    assert (plain["failed"], plain["shed"], plain["sla_miss_pct"]) == (3, 0, pytest.approx(100 * 4 / 6, abs=0.001))


@pytest.fixture(scope="module")
def live_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("experiment")
    trace = out / "ramp.txt"
    rates = [10] * 8 + [25] * 12
    trace.write_text("\n".join(map(str, rates)) + "\n")
    summary = run_experiment(SPEC, PROFILES, "ramp", "adapter", out / "run", interval_s=5.0, trace_file=trace)
    return out / "run", summary, rates


def test_every_scheduled_request_is_in_the_results(live_run):
    run, summary, rates = live_run
    assert summary["requests"] == sum(rates)  # none lost: unfinished ones would be failures
    assert summary["failed"] == 0
    rows = list(csv.DictReader((run / "per_second.csv").open()))
    assert [int(r["achieved_rps"]) for r in rows] == rates
    assert (run / "plot.png").stat().st_size > 10_000


def test_the_trace_gives_each_stages_server_side_p99(live_run):
    run, summary, _ = live_run
    stage = summary["stage_p99_ms"]
    assert set(stage) == {"langid", "embed"}
    assert 0 < stage["langid"] < summary["p99_ms"] and 0 < stage["embed"] < summary["p99_ms"]
    assert 0 < summary["adapter_lead_s"] < 30
    assert adapter_lead_s(run, 5.0) == pytest.approx(summary["adapter_lead_s"], abs=1.5)


def test_the_simulation_of_the_same_run_compares_with_it(live_run):
    run, live, rates = live_run
    sim = simulate(SPEC, PROFILES, rates, "adapter", SimSettings(interval_s=5.0, lead_s=live["adapter_lead_s"]))
    assert sim.summary["requests"] == live["requests"]
    rows = list(csv.DictReader((run / "per_second.csv").open()))
    result = compare(live, sim.summary, rows, sim.rows, ["langid", "embed"])
    # The share of seconds with the same variants, over the seconds with a plan applied in both
    # runs: none when a busy machine took the whole 20 s to apply the live run's first plan.
    live_planned = any(r.get("langid_variant") for r in rows)
    assert (result["same_variants"] is not None) == live_planned
    assert result["same_variants"] is None or 0 <= result["same_variants"] <= 1
    for stage in ("langid", "embed"):
        assert result["stages"][stage]["live_p99_ms"] and result["stages"][stage]["sim_p99_ms"]
    json.dumps(result)  # what fidelity.json holds


def test_locust_replays_the_named_workload_at_the_experiments_damping(tmp_path):
    """The replay and the experiment's per-second targets come from the same series: a load
    factor (damping) reaches Locust, not only the targets (it once did not: a 3x run sent 1x);
    `loadtest/trace_replay.py` builds its series with `named_workload(workload, damping)`."""
    from adapter.experiment import locust_command
    from adapter.workloads import named_workload

    cmd = locust_command("127.0.0.1:1", "http", "text_search", tmp_path, 10.0, ("bursty", 8 / 3))
    assert cmd[cmd.index("--workload") + 1] == "bursty"
    assert float(cmd[cmd.index("--damping") + 1]) == pytest.approx(8 / 3)
    assert "--trace-file" in locust_command("h", "grpc", "m", tmp_path, 1.0, tmp_path / "t.txt")
    # three times the requests (each second is floored to whole requests either way)
    assert named_workload("bursty", 8 / 3).sum() == pytest.approx(3 * named_workload("bursty").sum(), rel=0.05)


def test_a_named_workload_at_another_damping_is_what_locust_sends(tmp_path):
    """Live: Locust replays steady-low at twice IPA's rates (damping 4), compressed 100x; the
    requests it sent are the per-second targets' (and twice those at IPA's damping)."""
    from adapter.workloads import named_workload, time_scale

    summary = run_experiment(SPEC, PROFILES, "steady-low", "static-cheapest", tmp_path / "run",
                             time_scale=100.0, interval_s=5.0, damping=4.0)
    target = time_scale(named_workload("steady-low", 4.0), 100.0)
    assert summary["damping"] == 4.0 and summary["failed"] == 0
    assert abs(summary["requests"] - target.sum()) <= len(target)  # each second rounds its share
    ipa = time_scale(named_workload("steady-low"), 100.0).sum()
    assert summary["requests"] == pytest.approx(2 * ipa, rel=0.1)
