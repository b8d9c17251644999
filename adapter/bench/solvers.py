"""Solve random planning instances with the exact fast path and the ILP, side by side.

    python -m adapter.bench.solvers            # full run: 100 IPA-size + 10 large instances
    python -m adapter.bench.solvers --quick    # a few instances, for a smoke test

IPA size: 5 stages x 5 variants x 8 batch sizes x up to 100 instances per stage.
Large: 20 stages x 10 variants x 8 batch sizes x up to 100 instances per stage.
Each instance is solved by both solvers in the same process; objectives must agree.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from adapter.core.plan import Mode
from adapter.core.planner import plan_pipeline
from adapter.core.profile import LatencyFit, Profiles, VariantProfile
from adapter.core.solve_ilp import IlpTimeout
from adapter.core.spec import (
    Combine, Limits, Normalize, Objective, PipelineSpec, Resources, StageSpec, VariantSpec,
)

BATCHES = (1, 2, 4, 8, 16, 32, 64, 128)


@dataclass(frozen=True)
class Instance:
    spec: PipelineSpec
    profiles: Profiles
    rps: float


def random_instance(rng: np.random.Generator, stages: int, variants: int, *, batches=BATCHES,
                    max_instances: int = 100, max_pods: int = 1, combine: Combine | None = None,
                    normalize: Normalize | None = None, pod_cpu: float | None = None,
                    rps: float | None = None) -> Instance:
    """A random pipeline whose more accurate variants are slower (as real variants are)."""
    stage_specs, profiles = [], {}
    typical = 0.0
    for s in range(stages):
        accs = np.sort(rng.uniform(0.5, 0.99, variants))
        speed = np.sort(rng.uniform(0.3, 3.0, variants))  # slower with accuracy
        vs = []
        for v in range(variants):
            name = f"s{s}v{v}"
            c0 = float(rng.uniform(1.0, 10.0) * speed[v])
            c1 = float(rng.uniform(0.05, 2.0) * speed[v])
            c2 = float(rng.choice([0.0, rng.uniform(0.0, 0.01)]))
            fit = LatencyFit(kind="poly2" if c2 else "poly1", coefficients=(c0, c1, c2), rmse_ms=0.0,
                             max_rel_error=0.0, max_batch_size=max(batches))
            eff = float(rng.choice([1.0, rng.uniform(0.6, 1.0)]))
            profiles[name] = VariantProfile(model=name, measurements=(), latency=fit, instance_efficiency=eff)
            cpu = float(rng.choice([1, 2, 4]))
            vs.append(VariantSpec(model=name, accuracy=float(accs[v]), resources=Resources(cpu=cpu, memory_mb=256)))
            typical += c0 + c1 * 4
        stage_specs.append(StageSpec(name=f"stage{s}", variants=tuple(vs), batch_sizes=tuple(batches)))
    typical /= variants
    spec = PipelineSpec(
        name="random", ensemble="random", sla_ms=float(typical * rng.uniform(1.5, 4.0)), stages=tuple(stage_specs),
        combine=combine or Combine(rng.choice([c.value for c in Combine])),
        normalize=normalize or Normalize(rng.choice([n.value for n in Normalize])),
        objective=Objective(alpha=1.0, beta=float(rng.uniform(0.0005, 0.005)), gamma=float(rng.uniform(0, 0.001))),
        limits=Limits(max_instances_per_stage=max_instances, max_pods=max_pods,
                      pod=Resources(cpu=pod_cpu or math.inf, gpu=math.inf, memory_mb=math.inf)),
        headroom=0.2,
    )
    load = rps if rps is not None else float(rng.uniform(20, 3000))
    return Instance(spec, Profiles(variants=profiles, provenance={"note": "random benchmark instance"}), load)


ILP_TIME_LIMIT_S = 60.0


def _time(inst: Instance, solver: str) -> tuple[float, float | None, bool]:
    """(ms, objective, feasible); objective None when the ILP hit its time limit."""
    start = time.perf_counter()
    try:
        plan = plan_pipeline(inst.spec, inst.profiles, inst.rps, mode=Mode.SINGLE, solver=solver,
                             ilp_time_limit_s=None if solver == "exact" else ILP_TIME_LIMIT_S)
    except IlpTimeout:
        return (time.perf_counter() - start) * 1000.0, None, False
    return (time.perf_counter() - start) * 1000.0, plan.objective, plan.feasible


def run(label: str, count: int, stages: int, variants: int, ilps: list[str], seed: int) -> dict:
    """Solve `count` random instances with every solver; times in ms, objectives must agree."""
    rng = np.random.default_rng(seed)
    times: dict[str, list[float]] = {name: [] for name in ["exact", *ilps]}
    mismatches = feasible = 0
    timeouts = {name: 0 for name in ilps}
    for _ in tqdm(range(count), desc=label, unit="inst"):
        inst = random_instance(rng, stages, variants)
        te, oe, fe = _time(inst, "exact")
        times["exact"].append(te)
        feasible += fe
        for name in ilps:
            ti, oi, fi = _time(inst, name)
            times[name].append(ti)
            if oi is None:
                timeouts[name] += 1
            elif fe != fi or abs(oe - oi) > 1e-6 * max(1.0, abs(oe)):
                mismatches += 1
    pct = {name: (float(np.percentile(t, 50)), float(np.percentile(t, 99))) for name, t in times.items()}
    return {"label": label, "count": count, "feasible": feasible, "mismatches": mismatches, "pct": pct,
            "timeouts": timeouts}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m adapter.bench.solvers", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few instances only (smoke test)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    # The ILP gets ILP_TIME_LIMIT_S per instance; an instance that hits it counts as a timeout
    # (its time is the limit). CBC is compared at IPA's size only; HiGHS at both.
    sizes = [("IPA 5x5x8x100", 5, 5, 10 if args.quick else 100, ["cbc", "highs"]),
             ("large 20x10x8x100", 20, 10, 2 if args.quick else 10, ["highs"])]
    rows = [run(label, count, s, v, ilps, args.seed + i) for i, (label, s, v, count, ilps) in enumerate(sizes)]
    print("\nsolve time per instance, ms (plan_pipeline end to end: grid + presolve + solve + plan)")
    print(f"{'size':18} {'n':>4} {'feas':>4} {'solver':>6} {'p50':>9} {'p99':>9} {'p50 ratio':>10} {'p99 ratio':>10}"
          f" {'mismatch':>8} {'timeouts':>8}")
    for r in rows:
        e50, e99 = r["pct"]["exact"]
        for name, (p50, p99) in r["pct"].items():
            ratio = "" if name == "exact" else f"{p50 / e50:>9.1f}x {p99 / e99:>9.1f}x"
            print(f"{r['label']:18} {r['count']:>4} {r['feasible']:>4} {name:>6} {p50:>9.2f} {p99:>9.2f} "
                  f"{ratio:>21} {r['mismatches'] if name == 'exact' else '':>8} {r['timeouts'].get(name, ''):>8}")
    return 1 if any(r["mismatches"] for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
