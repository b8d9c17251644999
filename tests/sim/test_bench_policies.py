"""The policy benchmark's arithmetic: medians over seeds, the gap to the oracle, the verdict."""

from __future__ import annotations

import pytest

from adapter.bench.policies import summarise, verdict


def _run(workload, policy, seed, objective, miss=0.0):
    return {"workload": workload, "policy": policy, "seed": seed, "beta": 0.05, "objective": objective,
            "sla_miss_pct": miss, "shed_pct": 0.0, "cores": 2.0, "normalised_accuracy": 0.5,
            "plan_changes": 1, "failed_pct": 0.0}


def test_the_gap_is_the_share_of_the_oracles_gain_left_and_the_verdict_counts_workloads():
    runs = []
    for seed, noise in enumerate((0.0, 0.01, -0.01)):
        runs += [_run("w", "oracle", seed, 0.30 + noise), _run("w", "static-accurate", seed, 0.10),
                 _run("w", "static-cheapest", seed, 0.20 + noise), _run("w", "adapter", seed, 0.25 + noise),
                 _run("w", "ipa", seed, 0.22 + noise, miss=2.0)]
        runs += [_run("flat", p, seed, 0.3) for p in ("oracle", "static-accurate", "static-cheapest", "adapter")]
        runs += [_run("flat", "ipa", seed, 0.31)]
    table = summarise(runs, ["adapter", "ipa", "static-accurate", "static-cheapest", "oracle"])
    row = {(r["workload"], r["policy"]): r for r in table}
    assert row["w", "adapter"]["objective"] == pytest.approx(0.25)  # the median of three seeds
    assert row["w", "adapter"]["gap"] == pytest.approx(0.5)  # (0.30 - 0.25) / (0.30 - 0.20)
    assert row["w", "oracle"]["gap"] == 0 and row["w", "static-cheapest"]["gap"] == pytest.approx(1.0)
    assert row["flat", "adapter"]["gap"] is None  # the oracle gains nothing: no share to take
    lines = verdict(table).splitlines()
    assert lines[0] == "adapter objective >= IPA's on 1 of 2 workloads (not: flat)"
    assert lines[1] == "adapter SLA misses <= max(1 %, IPA's) on 2 of 2 workloads"
    assert lines[2].startswith("adapter median gap to the oracle: 50%")
