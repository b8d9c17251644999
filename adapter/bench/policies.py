"""The policy benchmark: workloads x policies x seeds on simulated pods, against the oracle.

    python -m adapter.bench.policies                       # the whole suite (minutes, all cores)
    python -m adapter.bench.policies --workload bursty --policy adapter --policy ipa --seeds 1
    python -m adapter.bench.policies --quick               # 3 workloads, 1 seed: a smoke run
    python -m adapter.bench.policies --ablation            # each rule of the adapter's policy taken out

Every run: Poisson arrivals, decisions every 10 s, new pods ready after 30 s, every policy
starting on its own plan for the first second, a pool of up to 200 pods (the capped-pool
workload: 3). Per run, from its per-second results:

    objective   alpha * (accuracy of the plan in force, summed over the requests served
                within the SLA) / (all requests)  -  beta * (mean planned cores)
                the spec's own trade-off; a request late, failed or shed earns nothing
    gap         (oracle - policy) / (oracle - best static plan): the share of the oracle's gain
                over never adapting that the policy leaves on the table (0 = as good as the oracle)

Printed per workload (medians over seeds): objective, gap, SLA-miss % (late or failed among
all requests), shed % (rejected at admission), mean cores, normalised accuracy, plan changes;
then the accuracy-cost frontier: each policy's mean normalised accuracy and cores on IPA's
workloads under three weightings of cost (beta). Results also go to `--out` as JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import statistics
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from adapter import paths

BASE_POLICIES = ("adapter", "ipa", "scale-only", "switch-only", "static-accurate", "static-cheapest", "oracle")
STATIC = ("static-accurate", "static-cheapest")
BETAS = (0.02, 0.05, 0.1)
# `--ablation`: the adapter with one rule of its policy taken out at a time (docs/policies.md):
# name -> PolicyConfig fields replaced, and SimSettings fields replaced.
ABLATIONS: dict[str, tuple[dict, dict]] = {
    # max-window + the spec's headroom; the release horizon needs the scenarios, so HPA's 60 s window
    "quantile-forecast": ({"headroom": None, "scale_down_window_s": 60.0}, {"predictor": "max-window"}),
    "release-horizon": ({"release_horizon_s": None}, {}),  # capacity released as the forecast falls
    "scale-down-hysteresis": ({"scale_down_hysteresis": 0.0}, {}),
    "amortised-switching": ({"plan_lifetime_s": None}, {}),  # one-off costs charged per decision
    "backlog-drain": ({"drain_s": None}, {}),
    "pool-clamp": ({"clamp_to_pool": False}, {}),
    "overload-trigger": ({"overload_trigger": None}, {}),
    "correction": ({"max_latency_scale": 1.0}, {}),
    "admission": ({}, {"admission": "off"}),  # unbounded queues: the excess is answered late
}
ABLATION_REFERENCE = ("adapter", "static-accurate", "static-cheapest", "oracle")


def _flash(base: float, peak: float, at: int, width: int, seconds: int) -> np.ndarray:
    series = np.full(seconds, base)
    series[at:at + width] = peak
    return series


def generated_workloads() -> dict[str, tuple[np.ndarray, dict]]:
    """Shapes the policy was not built on, 600 s each: (per-second rates, SimSettings overrides
    and spec overrides under the key `spec`)."""
    t = np.arange(600)
    rng = np.random.default_rng(7)  # the shapes are fixed; the seeds vary the arrivals
    return {
        "step-up": (np.where(t < 200, 20.0, 300.0), {}),
        "step-down": (np.where(t < 300, 300.0, 20.0), {}),
        "flash-crowd": (_flash(67, 240, 200, 60, 600), {}),
        "diurnal": (140 + 110 * np.sin(2 * np.pi * t / 600), {}),
        "on-off": (np.where((t // 60) % 2 == 0, 20.0, 200.0), {}),
        "slow-ramp": (20 + 280 * t / 600, {}),
        "noisy-low": (np.clip(6 + rng.normal(0, 3, 600), 0, None), {}),
        "capped-pool": (_flash(67, 240, 200, 120, 600), {"max_pods": 3}),
        "tight-sla": (140 + 110 * np.sin(2 * np.pi * t / 300), {"spec": {"sla_ms": 40.0}}),
    }


def workloads() -> dict[str, tuple[np.ndarray, dict]]:
    from adapter.workloads import NAMED_WORKLOADS, named_workload

    ipa = {name: (named_workload(name, damping=1), {}) for name in NAMED_WORKLOADS}
    return {**ipa, **generated_workloads()}


def run_objective(rows: list[dict], alpha: float, beta: float) -> float:
    requests = sum(r["achieved_rps"] for r in rows)
    good = sum((r["achieved_rps"] - r["sla_misses"] - r.get("shed", 0)) * r.get("accuracy", 0.0) for r in rows)
    cores = float(np.mean([r.get("cost_cores", 0.0) for r in rows])) if rows else 0.0
    return alpha * good / max(requests, 1) - beta * cores


def _one(job: tuple) -> dict:
    from adapter.core.profile import load_profiles
    from adapter.core.spec import load_spec
    from adapter.sim.run import SimSettings, simulate

    workload, policy, seed, beta, series, overrides, *ablation = job
    config, sim = ABLATIONS[ablation[0]] if ablation else ({}, {})
    logging.getLogger("adapter").setLevel(logging.ERROR)
    spec = load_spec(paths.ENSEMBLES / "text_search" / "pipeline.yaml")
    profiles = load_profiles(paths.ENSEMBLES / "text_search" / "profiles.json")
    spec = dataclasses.replace(spec, objective=dataclasses.replace(spec.objective, beta=beta),
                               **overrides.get("spec", {}))
    settings = SimSettings(interval_s=10, poisson=True, seed=seed, warm_start=True, pod_start_s=30,
                           max_pods=overrides.get("max_pods", 200), policy_overrides=tuple(config.items()), **sim)
    result = simulate(spec, profiles, series, policy, settings, workload=workload)
    s = result.summary
    requests = max(s["requests"], 1)
    return {
        "workload": workload, "policy": f"{policy} w/o {ablation[0]}" if ablation else policy, "seed": seed,
        "beta": beta, "objective": run_objective(result.rows, spec.objective.alpha, beta),
        "sla_miss_pct": s["sla_miss_pct"],
        "shed_pct": s.get("shed_pct", 0.0),
        "cores": float(np.mean([r.get("cost_cores", 0.0) for r in result.rows])),
        "normalised_accuracy": s["normalised_accuracy"],
        "plan_changes": s["decisions"],
        "failed_pct": 100.0 * s["failed"] / requests,
    }


def _median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def summarise(results: list[dict], policies: list[str]) -> list[dict]:
    """Per workload and policy: medians over seeds, and the gap to the oracle."""
    table = []
    for workload in dict.fromkeys(r["workload"] for r in results):
        runs = {p: [r for r in results if r["workload"] == workload and r["policy"] == p and r["beta"] == 0.05]
                for p in policies}
        runs = {p: v for p, v in runs.items() if v}
        objective = {p: _median(v, "objective") for p, v in runs.items()}
        oracle = objective.get("oracle")
        statics = [objective[p] for p in STATIC if p in objective]
        base = max(statics) if statics else None
        for p, v in runs.items():
            gain = None if oracle is None or base is None else oracle - base
            table.append({
                "workload": workload, "policy": p, "objective": objective[p],
                "gap": (oracle - objective[p]) / gain if gain and gain > 1e-9 else None,
                **{k: _median(v, k) for k in ("sla_miss_pct", "shed_pct", "cores", "normalised_accuracy",
                                              "plan_changes")},
                "seeds": len(v),
            })
    return table


def frontier(results: list[dict], policies: list[str]) -> list[dict]:
    out = []
    for beta in sorted({r["beta"] for r in results}):
        for p in policies:
            runs = [r for r in results if r["beta"] == beta and r["policy"] == p and r["workload"] in IPA_NAMES]
            if runs:
                out.append({"beta": beta, "policy": p, "normalised_accuracy": float(np.mean([r["normalised_accuracy"] for r in runs])),
                            "cores": float(np.mean([r["cores"] for r in runs])),
                            "sla_miss_pct": float(np.mean([r["sla_miss_pct"] for r in runs]))})
    return out


IPA_NAMES = ("bursty", "steady-low", "steady-high", "fluctuating")


def format_table(table: list[dict]) -> str:
    lines = ["| workload | policy | objective | gap to oracle | SLA miss % | shed % | mean cores | norm. accuracy | plan changes |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in table:
        gap = "" if r["gap"] is None else f"{100 * r['gap']:.0f}%"
        lines.append(f"| {r['workload']} | {r['policy']} | {r['objective']:.4f} | {gap} | {r['sla_miss_pct']:.2f} | "
                     f"{r['shed_pct']:.2f} | {r['cores']:.2f} | {r['normalised_accuracy']:.3f} | {r['plan_changes']:.0f} |")
    return "\n".join(lines)


def format_frontier(rows: list[dict]) -> str:
    lines = ["| beta | policy | norm. accuracy | mean cores | SLA miss % |", "|---|---|---|---|---|"]
    lines += [f"| {r['beta']:g} | {r['policy']} | {r['normalised_accuracy']:.3f} | {r['cores']:.2f} | "
              f"{r['sla_miss_pct']:.2f} |" for r in rows]
    return "\n".join(lines)


def verdict(table: list[dict]) -> str:
    """The targets of the decision-quality work, checked on this run."""
    lines = []
    by = {(r["workload"], r["policy"]): r for r in table}
    names = list(dict.fromkeys(r["workload"] for r in table))
    if all((w, "adapter") in by and (w, "ipa") in by for w in names):
        beats = [w for w in names if by[w, "adapter"]["objective"] >= by[w, "ipa"]["objective"] - 1e-9]
        lines.append(f"adapter objective >= IPA's on {len(beats)} of {len(names)} workloads"
                     + ("" if len(beats) == len(names) else f" (not: {', '.join(w for w in names if w not in beats)})"))
        ok_miss = [w for w in names if by[w, "adapter"]["sla_miss_pct"] <= max(1.0, by[w, "ipa"]["sla_miss_pct"])]
        lines.append(f"adapter SLA misses <= max(1 %, IPA's) on {len(ok_miss)} of {len(names)} workloads")
    gaps = [by[w, "adapter"]["gap"] for w in names if (w, "adapter") in by and by[w, "adapter"]["gap"] is not None]
    if gaps:
        lines.append(f"adapter median gap to the oracle: {100 * statistics.median(gaps):.0f}% of the oracle's gain "
                     f"over the best static plan")
    return "\n".join(lines)


def ablation_summary(table: list[dict]) -> str:
    """Per rule taken out: across workloads, the median change of the objective against the
    whole adapter, on how many workloads it fell / rose, and the median SLA-miss and shed %."""
    by = {(r["workload"], r["policy"]): r for r in table}
    names = list(dict.fromkeys(r["workload"] for r in table))
    lines = ["| without | median objective change | workloads worse / better | median gap | "
             "median SLA miss % | median shed % |", "|---|---|---|---|---|---|"]
    for rule in ABLATIONS:
        label = f"adapter w/o {rule}"
        pairs = [(by[w, label], by[w, "adapter"]) for w in names if (w, label) in by and (w, "adapter") in by]
        if not pairs:
            continue
        deltas = [a["objective"] - b["objective"] for a, b in pairs]
        gaps = [a["gap"] for a, _ in pairs if a["gap"] is not None]
        lines.append(f"| {rule} | {statistics.median(deltas):+.4f} | {sum(d < -1e-4 for d in deltas)} / "
                     f"{sum(d > 1e-4 for d in deltas)} of {len(pairs)} | "
                     f"{'' if not gaps else f'{100 * statistics.median(gaps):.0f}%'} | "
                     f"{statistics.median(a['sla_miss_pct'] for a, _ in pairs):.2f} | "
                     f"{statistics.median(a['shed_pct'] for a, _ in pairs):.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from tqdm import tqdm

    from adapter.sim.run import SIM_POLICIES

    suite = workloads()
    parser = argparse.ArgumentParser(prog="python -m adapter.bench.policies", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", action="append", dest="workloads", choices=list(suite),
                        help="repeatable (default: all)")
    parser.add_argument("--policy", action="append", dest="policies", choices=SIM_POLICIES,
                        help="repeatable (default: all but ipa-lstm when its model is missing)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--no-frontier", action="store_true", help="skip the three-beta frontier runs")
    parser.add_argument("--quick", action="store_true", help="bursty, flash-crowd and capped-pool, one seed, no frontier")
    parser.add_argument("--ablation", action="store_true",
                        help="instead: the adapter with each rule of its policy taken out in turn "
                             f"({', '.join(ABLATIONS)}), beside the adapter, the static plans and the oracle")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, default=paths.RUNS / "bench-policies")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error("--seeds: expected at least 1")
    names = args.workloads or (["bursty", "flash-crowd", "capped-pool"] if args.quick else list(suite))
    policies = args.policies or [p for p in SIM_POLICIES if p in BASE_POLICIES or _lstm_available(p)]
    if args.ablation:
        policies = list(ABLATION_REFERENCE)
    seeds = 1 if args.quick else args.seeds
    jobs = [(w, p, seed, 0.05, suite[w][0], suite[w][1]) for w in names for p in policies for seed in range(seeds)]
    if args.ablation:
        jobs += [(w, "adapter", seed, 0.05, suite[w][0], suite[w][1], rule)
                 for w in names for rule in ABLATIONS for seed in range(seeds)]
        policies += [f"adapter w/o {rule}" for rule in ABLATIONS]
    elif not (args.quick or args.no_frontier):
        jobs += [(w, p, 0, beta, suite[w][0], suite[w][1]) for w in names if w in IPA_NAMES
                 for p in policies for beta in BETAS if beta != 0.05]
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = list(tqdm(pool.map(_one, jobs), total=len(jobs), desc="simulated runs", unit="run"))
    table = summarise(results, policies)
    print(format_table(table))
    front = frontier(results, policies)
    if len({r["beta"] for r in front}) > 1:
        print()
        print(format_frontier(front))
    print()
    print(ablation_summary(table) if args.ablation else verdict(table))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({"runs": results, "table": table, "frontier": front}, indent=1) + "\n")
    print(f"\nresults: {args.out / 'results.json'}")
    return 0


def _lstm_available(policy: str) -> bool:
    if policy != "ipa-lstm":
        return False
    try:
        from adapter.core.predictor import make_predictor

        make_predictor("ipa-lstm").predict([1.0] * 120)
        return True
    except Exception:  # noqa: BLE001 - a missing or broken model only drops the baseline from the default set
        return False


if __name__ == "__main__":
    raise SystemExit(main())
