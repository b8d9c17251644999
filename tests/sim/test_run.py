"""Simulated runs end to end: the live Sidecar and policies on simulated pods (no servers)."""

from __future__ import annotations

import csv
import dataclasses
import json

import numpy as np
import pytest

from adapter import paths
from adapter.core.profile import load_profiles, reconfiguration_s
from adapter.core.spec import load_spec
from adapter.errors import ConfigError
from adapter.core.admission import Admission
from adapter.sim.run import SimSettings, SimActuator, repository_configs, simulate, stage_configs, write_sim_results
from adapter.sim.engine import Engine
from adapter.sim.service import ServiceTimes
from tests.conftest import make_plan

SPEC = load_spec(paths.ENSEMBLES / "text_search" / "pipeline.yaml")
PROFILES = load_profiles(paths.ENSEMBLES / "text_search" / "profiles.json")


def step(low: float, high: float, seconds: int = 120) -> np.ndarray:
    return np.array([low] * (seconds // 2) + [high] * (seconds - seconds // 2))


def test_a_run_has_the_live_results_format(tmp_path):
    result = simulate(SPEC, PROFILES, step(5, 30), "adapter", SimSettings(interval_s=5), workload="step")
    out = write_sim_results(tmp_path / "run", result, SPEC)
    rows = list(csv.DictReader((out / "per_second.csv").open()))
    assert len(rows) == 120
    for column in ("target_rps", "achieved_rps", "p99_ms", "sla_misses", "shed", "langid_variant", "embed_variant",
                   "capacity_rps", "normalised_accuracy", "cost_cores"):
        assert column in rows[-1]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["requests"] == int(step(5, 30).sum())
    assert summary["simulated"] and summary["decisions"] >= 1
    for key in ("failed", "shed", "late", "served_within_sla_pct", "shed_pct", "late_pct", "sla_miss_pct"):
        assert key in summary  # the live summary's keys
    assert summary["served_within_sla_pct"] + summary["shed_pct"] + summary["late_pct"] == pytest.approx(100, abs=0.01)
    assert set(summary["stage_p99_ms"]) == {"langid", "embed"}
    assert (out / "plot.png").stat().st_size > 10_000
    decisions = json.loads((out / "decisions.json").read_text())
    assert any(d["reason"] == "Apply" and d["actions"] for d in decisions)


def test_the_same_seed_gives_the_same_run_and_another_seed_another():
    a = simulate(SPEC, PROFILES, step(5, 30), "adapter", SimSettings(interval_s=5, seed=1))
    b = simulate(SPEC, PROFILES, step(5, 30), "adapter", SimSettings(interval_s=5, seed=1))
    c = simulate(SPEC, PROFILES, step(5, 30), "adapter", SimSettings(interval_s=5, seed=2))
    assert np.array_equal(a.latency_ms, b.latency_ms)
    assert not np.array_equal(a.latency_ms, c.latency_ms)


def test_poisson_arrivals_keep_the_rate_but_not_the_schedule():
    exact = simulate(SPEC, PROFILES, step(20, 20), "static-cheapest", SimSettings())
    poisson = simulate(SPEC, PROFILES, step(20, 20), "static-cheapest", SimSettings(poisson=True))
    assert len(exact.sent_s) == 2400
    assert len(poisson.sent_s) == pytest.approx(2400, rel=0.1)
    assert np.allclose(np.diff(exact.sent_s[:20]), 0.05)


def test_an_overloaded_static_plan_misses_and_an_adaptive_one_does_not():
    load = step(120, 120)
    accurate = simulate(SPEC, PROFILES, load, "static-accurate", SimSettings())
    queued = simulate(SPEC, PROFILES, load, "static-accurate", SimSettings(admission=Admission.OFF))
    adaptive = simulate(SPEC, PROFILES, load, "adapter", SimSettings(warm_start=True))
    # The most accurate variants cannot carry 120 rps on one 2-core pod (under half of it), the
    # cheapest can: the excess is shed at once and what is admitted is served in time; with
    # unbounded queues nearly everything is late.
    assert accurate.summary["shed_pct"] > 40 and accurate.summary["late_pct"] < 1
    assert accurate.summary["served_within_sla_pct"] > 40
    assert queued.summary["sla_miss_pct"] > 50 and queued.summary["shed"] == 0
    assert adaptive.summary["sla_miss_pct"] < 1 and adaptive.summary["shed_pct"] < 1


def test_the_simulated_actuator_applies_the_admission_rule_like_the_live_one():
    from adapter.core.admission import queue_policies
    from adapter.core.planner import plan_pipeline
    from adapter.serving.actuator import desired_state

    plan = plan_pipeline(SPEC, PROFILES, 40.0)
    live = desired_state(plan, SPEC.ensemble, ensemble_max_batch=8)
    assert [c.queue for c in stage_configs(plan)] == [live.models[c.model].queue for c in stage_configs(plan)]
    assert all(c.queue == queue_policies(plan)[c.model] and c.queue.bounded for c in stage_configs(plan))
    engine = Engine(SPEC.ensemble, 2, np.array([]), ServiceTimes(PROFILES))
    actuator = SimActuator(engine, PROFILES, SimSettings(admission=Admission.OFF))
    actuator.start(stage_configs(plan))
    removed = actuator.reconcile(plan)  # the policies removed: reloads in place
    assert len(removed) == 2 and all(a.startswith("reconfigure") and "timeout" not in a for a in removed)
    assert actuator.reconcile(plan) == [] and not any(c.queue.bounded for c in actuator.configs)


def test_a_variant_swap_takes_the_measured_load_time_and_blocks_the_loop():
    engine = Engine(SPEC.ensemble, 2, np.array([]), ServiceTimes(PROFILES))
    actuator = SimActuator(engine, PROFILES, SimSettings(default_load_s=2.0))
    actuator.start(repository_configs(SPEC))
    from adapter.core.planner import plan_pipeline

    plan = plan_pipeline(SPEC, PROFILES, 25.0)
    actions = actuator.reconcile(plan)
    pairs = [(a, c) for a, c in zip(repository_configs(SPEC), stage_configs(plan)) if a != c]
    expected = sum(reconfiguration_s(PROFILES, c.model, c.instances, None, 2.0) + (0.003 if a.model != c.model else 0)
                   for a, c in pairs)
    assert pairs and actions
    assert actuator.busy_s == pytest.approx(expected)
    assert actuator.reconcile(plan) == [] and actuator.busy_s == 0  # level-triggered: nothing to do


def test_the_quickest_stage_change_serves_first_and_instances_change_in_place():
    engine = Engine(SPEC.ensemble, 2, np.array([]), ServiceTimes(PROFILES))
    actuator = SimActuator(engine, PROFILES, SimSettings(admission=Admission.OFF))
    slow, quick = "langid_lingua_high", "embed_l3_int8"
    assert PROFILES[slow].load_s > 5 * PROFILES[quick].load_s
    actuator.start(stage_configs(make_plan(("langid", "langid_cld2", 1, 1, 0), ("embed", "embed_l3", 1, 1, 0)),
                                 Admission.OFF))
    actions = actuator.reconcile(make_plan(("langid", slow, 1, 1, 0), ("embed", quick, 1, 1, 0)))
    assert [a.split()[1].rstrip(":") for a in actions if a.startswith("new")] == [quick, slow]
    # Adding an instance starts that instance; removing it starts nothing.
    more = actuator.reconcile(make_plan(("langid", slow, 1, 1, 0), ("embed", quick, 1, 2, 0)))
    assert more[0].startswith(f"update {quick}: 2 instance(s)")
    assert actuator.busy_s == pytest.approx(reconfiguration_s(PROFILES, quick, 2, 1, 2.0))
    assert actuator.reconcile(make_plan(("langid", slow, 1, 1, 0), ("embed", quick, 1, 1, 0)))
    assert actuator.busy_s == 0


def test_the_pool_scales_pods_and_new_pods_start_late():
    spec = dataclasses.replace(SPEC, limits=dataclasses.replace(SPEC.limits, max_pods=20))
    result = simulate(spec, PROFILES, step(20, 400, 240), "ipa",
                      SimSettings(interval_s=10, pod_start_s=30, warm_start=True))
    pods = [int(r["pods"]) for r in result.rows if "pods" in r]
    assert pods[0] == 1 and max(pods) >= 3
    assert result.summary["max_pods_used"] == max(pods)
    # The step at 120 s is seen at the next decision (at most 10 s later); its pods serve 30 s
    # after it: until then the excess is shed at admission (or, without shedding, the queue
    # builds), and no request misses or is shed afterwards.
    assert all(r["sla_misses"] + r["shed"] > 0 for r in result.rows[121:150])
    assert sum(r["sla_misses"] + r["shed"] for r in result.rows[180:]) == 0


def test_the_oracle_plans_for_the_load_that_is_coming():
    result = simulate(SPEC, PROFILES, step(5, 30), "oracle", SimSettings(interval_s=5))
    before_step = [r for r in result.rows[40:60] if "capacity_rps" in r]
    # Ahead of the step at 60 s, the oracle already holds capacity for 30 rps.
    assert before_step[-1]["capacity_rps"] >= 30


def test_bad_input_is_named():
    with pytest.raises(ConfigError, match="policy: expected one of .*oracle"):
        simulate(SPEC, PROFILES, step(5, 5), "fastest")


def test_cli_runs_a_trace_file_and_has_help(tmp_path, capsys):
    from adapter.cli import main

    trace = tmp_path / "ramp.txt"
    trace.write_text("\n".join(str(v) for v in range(1, 41)) + "\n")
    assert main(["simulate", "--trace-file", str(trace), "--policy", "ipa", "--interval", "5",
                 "--out", str(tmp_path / "out")]) == 0
    summary = json.loads((tmp_path / "out" / "ramp-ipa" / "summary.json").read_text())
    assert summary["requests"] == sum(range(1, 41))
    with pytest.raises(SystemExit) as exit_info:
        main(["simulate", "--help"])
    assert exit_info.value.code == 0
    assert "--max-pods" in capsys.readouterr().out


def test_an_ablation_replaces_one_rule_of_the_policy():
    """`SimSettings.policy_overrides` reaches the policy's own config: after a step down nothing
    foretold a return from, the adapter is back on the accurate embedder soon; with HPA's 60 s
    window on capacity instead, at least 30 s later."""
    load = np.array([250.0] * 60 + [10.0] * 90)

    def back_to_accurate_s(**overrides) -> int:
        result = simulate(SPEC, PROFILES, load, "adapter",
                          SimSettings(warm_start=True, policy_overrides=tuple(overrides.items())))
        return next(t for t, row in enumerate(result.rows) if t >= 60 and row["embed_variant"] == "embed_l6_int8")

    not_held, held = back_to_accurate_s(), back_to_accurate_s(scale_down_window_s=60.0)
    assert not_held - 60 <= 30 and held - not_held >= 30
    with pytest.raises(ConfigError, match="unknown predictor 'crystal-ball'"):
        simulate(SPEC, PROFILES, load[:5], "adapter", SimSettings(predictor="crystal-ball"))
