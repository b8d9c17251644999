"""Does the simulator predict the live stack? The same trace and policy, run both ways.

    python -m adapter.bench.fidelity                       # live runs + simulations, then compare
    python -m adapter.bench.fidelity --reuse               # compare again using the live runs on disk
    python -m adapter.bench.fidelity --case bursty:adapter --case steady-high:ipa --time-scale 20
    python -m adapter.bench.fidelity --saturation          # the stage model at saturation (no runs)

For each case (workload:policy) the live experiment (`tpa experiment`: local Triton, Locust
trace replay, the policy driving Triton) and the simulation (trace-exact arrivals, the same
compressed trace, the same decision interval, starting like the live Triton from the
repository's configs) are compared on:
  stage p99     each stage's server-side p99 (live: Triton's request trace) - within 15 %
  SLA miss      end-to-end share of requests over the SLA or failed        - within 1 pp
  same variants share of seconds in which every stage runs the same variant in both
Prints a table; writes runs/fidelity/fidelity.json and fidelity.md.

`--saturation` checks the planner's stage model on its own instead, against the open-loop
sweeps stored in the profiles (`tpa profile --saturation`): per variant and (batch, instances),
the measured and predicted max rps at which one stage keeps its p99 within the SLA, within 15 %.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from adapter import paths

DEFAULT_CASES = ("bursty:adapter", "fluctuating:ipa", "steady-high:switch-only", "steady-low:scale-only",
                 "bursty:static-cheapest")
STAGE_P99_TOLERANCE = 0.15
SLA_MISS_TOLERANCE_PP = 1.0


def same_variants(live_rows: list[dict], sim_rows: list[dict], stages: list[str]) -> float | None:
    """Share of the seconds with a plan in both runs in which every stage runs the same variant."""
    both = [(a, b) for a, b in zip(live_rows, sim_rows)
            if all(a.get(f"{s}_variant") and b.get(f"{s}_variant") for s in stages)]
    if not both:
        return None
    return sum(all(a[f"{s}_variant"] == b[f"{s}_variant"] for s in stages) for a, b in both) / len(both)


def compare(live: dict, sim: dict, live_rows: list[dict], sim_rows: list[dict], stages: list[str]) -> dict:
    out = {"workload": live["workload"], "policy": live["policy"], "stages": {}}
    for stage in stages:
        a, b = live["stage_p99_ms"].get(stage), sim["stage_p99_ms"].get(stage)
        error = abs(b / a - 1.0) if a and b else None
        out["stages"][stage] = {"live_p99_ms": a, "sim_p99_ms": b,
                                "error": None if error is None else round(error, 4),
                                "ok": error is not None and error <= STAGE_P99_TOLERANCE}
    diff = sim["sla_miss_pct"] - live["sla_miss_pct"]
    out["sla_miss"] = {"live_pct": live["sla_miss_pct"], "sim_pct": sim["sla_miss_pct"],
                       "diff_pp": round(diff, 3), "ok": abs(diff) <= SLA_MISS_TOLERANCE_PP}
    out["same_variants"] = same_variants(live_rows, sim_rows, stages)
    out["p99_ms"] = {"live": live["p99_ms"], "sim": sim["p99_ms"]}
    out["requests"] = {"live": live["requests"], "sim": sim["requests"]}
    out["decisions"] = {"live": live["decisions"], "sim": sim["decisions"]}
    return out


def table(results: list[dict], stages: list[str]) -> str:
    head = ["case"] + [f"{s} p99 live / sim ms (error)" for s in stages] + [
        "SLA miss live / sim % (diff pp)", "same variants", "p99 live / sim ms", "plan changes live / sim"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        cells = [f"{r['workload']}:{r['policy']}"]
        for s in stages:
            st = r["stages"][s]
            err = "n/a" if st["error"] is None else f"{st['error']:.1%}"
            cells.append(f"{st['live_p99_ms']} / {st['sim_p99_ms']} ({err}{'' if st['ok'] else ' ✗'})")
        m = r["sla_miss"]
        cells.append(f"{m['live_pct']} / {m['sim_pct']} ({m['diff_pp']:+.2f}{'' if m['ok'] else ' ✗'})")
        cells.append("n/a" if r["same_variants"] is None else f"{r['same_variants']:.0%}")
        cells.append(f"{r['p99_ms']['live']} / {r['p99_ms']['sim']}")
        cells.append(f"{r['decisions']['live']} / {r['decisions']['sim']}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def adapter_lead_s(live_dir: Path, interval_s: float) -> float:
    """How long the live adapter's loop ran before the first request (runs that predate the
    summary's `adapter_lead_s`): its first decision came one interval after it started, and
    was recorded once its actions (each with its duration in ms) were done."""
    import re

    first = json.loads((live_dir / "decisions.json").read_text())[0]
    acting_s = sum(int(m) for a in first["actions"] for m in re.findall(r"\((\d+) ms\)$", a)) / 1000
    first_decision = first["t"] - acting_s
    t0 = min(json.loads(line)["t"] for line in (live_dir / "requests.jsonl").read_text().splitlines())
    return max(0.0, t0 - (first_decision - interval_s))


def read_rows(path: Path) -> list[dict]:
    import csv

    with path.open() as f:
        return list(csv.DictReader(f))


def saturation(profiles, sla_ms: float) -> int:
    """The stage model's max rps at the SLA against every stored saturation curve."""
    from adapter.core.saturation import check_curves, format_checks

    checks = [c for vp in profiles.variants.values() for c in check_curves(vp, sla_ms, side="client")]
    if not checks:
        print("no saturation curves in the profiles: run `tpa profile --saturation` first")
        return 1
    print(format_checks(checks))
    print(f"{sum(c.ok for c in checks)} of {len(checks)} curves within 15 % (or consistent with their bound)")
    return 0


def main(argv: list[str] | None = None) -> int:
    from adapter.commands.run import load_pipeline
    from adapter.experiment import POLICIES, run_experiment
    from adapter.sim.run import SimSettings, simulate, write_sim_results
    from adapter.workloads import named_workload, time_scale

    parser = argparse.ArgumentParser(prog="python -m adapter.bench.fidelity", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", default="text_search")
    parser.add_argument("--spec", type=Path)
    parser.add_argument("--profiles", type=Path)
    parser.add_argument("--case", action="append", dest="cases", metavar="WORKLOAD:POLICY",
                        help=f"repeatable (default: {' '.join(DEFAULT_CASES)})")
    parser.add_argument("--time-scale", type=float, default=10.0, help="(default: %(default)s)")
    parser.add_argument("--interval", type=float, default=5.0, help="(default: %(default)s)")
    parser.add_argument("--seeds", type=int, default=3,
                        help="simulations per case (service-time draws); the median is compared (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=paths.RUNS / "fidelity")
    parser.add_argument("--reuse", action="store_true", help="use the live runs already in --out")
    parser.add_argument("--saturation", action="store_true",
                        help="instead: the stage model against the profiles' saturation sweeps")
    args = parser.parse_args(argv)
    spec, profiles = load_pipeline(args)
    if args.saturation:
        return saturation(profiles, spec.sla_ms)
    stages = [s.name for s in spec.stages]
    results = []
    for case in args.cases or DEFAULT_CASES:
        workload, _, policy = case.partition(":")
        if policy not in POLICIES:
            parser.error(f"--case {case}: policy must be one of {', '.join(POLICIES)}")
        live_dir = args.out / "live" / f"{workload}-{policy}"
        if not (args.reuse and (live_dir / "summary.json").exists()):
            print(f"== live {workload} / {policy} ({args.time_scale:g}x)", flush=True)
            run_experiment(spec, profiles, workload, policy, live_dir, time_scale=args.time_scale,
                           interval_s=args.interval)
        live = json.loads((live_dir / "summary.json").read_text())
        series = time_scale(named_workload(workload), args.time_scale)
        lead = live.get("adapter_lead_s")
        if lead is None:  # a live run from before the summary recorded it
            lead = adapter_lead_s(live_dir, args.interval)
        sims = []
        for seed in range(args.seeds):
            sims.append(simulate(spec, profiles, series, policy,
                                 SimSettings(interval_s=args.interval, seed=seed, lead_s=lead), workload=workload))
        # The median run by SLA miss, so that one unlucky draw does not decide the comparison.
        sim = sorted(sims, key=lambda r: r.summary["sla_miss_pct"])[len(sims) // 2]
        sim.summary["stage_p99_ms"] = {s: float(np.median([r.summary["stage_p99_ms"][s] or np.nan for r in sims]))
                                       for s in stages}
        write_sim_results(args.out / "sim" / f"{workload}-{policy}", sim, spec)
        results.append(compare(live, sim.summary, read_rows(live_dir / "per_second.csv"), sim.rows, stages))
        print(table(results[-1:], stages).splitlines()[-1], flush=True)
    text = table(results, stages)
    (args.out / "fidelity.json").write_text(json.dumps(results, indent=1) + "\n")
    (args.out / "fidelity.md").write_text(text + "\n")
    print(text)
    ok = all(r["sla_miss"]["ok"] and all(s["ok"] for s in r["stages"].values()) for r in results)
    print("all within tolerance" if ok else "outside tolerance: see ✗")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
