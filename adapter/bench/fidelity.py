"""Does the simulator predict the live stack? The same trace and policy, run both ways.

    python -m adapter.bench.fidelity                       # live runs + simulations, then compare
    python -m adapter.bench.fidelity --reuse               # compare again using the live runs on disk
    python -m adapter.bench.fidelity --case bursty:adapter --case steady-high:ipa --time-scale 20
    python -m adapter.bench.fidelity --case steady-high:static-cheapest:x3   # 3x IPA's rates
    python -m adapter.bench.fidelity --saturation          # the stage model at saturation (no runs)

For each case (workload:policy) the live experiment (`tpa experiment`: local Triton, Locust
trace replay, the policy driving Triton) and the simulation (trace-exact arrivals, the same
compressed trace, the same decision interval, starting like the live Triton from the
repository's configs) are compared on:
  stage p99     each stage's server-side p99 (live: Triton's request trace) - within 15 %
  SLA miss      end-to-end share of requests over the SLA or failed        - within 1 pp
  same variants share of seconds in which every stage runs the same variant in both
  utilisation   the bottleneck stage's busiest 10 s: arrivals over the capacity of the plan in
                force (the planner's stage model), so a reader sees which cases pushed a stage
                near saturation, where the two are hardest to keep together
Prints a table; writes runs/fidelity/fidelity.json and fidelity.md.

`--saturation` checks the planner's stage model on its own instead, against the open-loop
sweeps stored in the profiles (`tpa profile --saturation`): per variant and (batch, instances),
the measured and predicted max rps at which one stage keeps its p99 within the SLA, within 15 %:
on the profile as measured, calibrated (the profiles' `calibration`: service scale and
instance efficiency, fitted on all the variant's curves) and held out (fitted on the variant's
other curves only).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from adapter import paths

# WORKLOAD:POLICY[:xK]: xK replays the workload at K times IPA's rates (damping 8/K). The last
# three push a stage to 80 % of its capacity or more (85-198 % live, 85-89 % simulated, on
# 2026-12-03), where simulator and live are hardest to keep together; the table's utilisation
# column says how far each case went.
DEFAULT_CASES = ("bursty:adapter", "fluctuating:ipa", "steady-high:switch-only", "steady-low:scale-only",
                 "bursty:static-cheapest", "steady-high:static-accurate:x1.5", "fluctuating:adapter:x3",
                 "bursty:adapter:x3")
STAGE_P99_TOLERANCE = 0.15
SLA_MISS_TOLERANCE_PP = 1.0


def same_variants(live_rows: list[dict], sim_rows: list[dict], stages: list[str]) -> float | None:
    """Share of the seconds with a plan in both runs in which every stage runs the same variant."""
    both = [(a, b) for a, b in zip(live_rows, sim_rows)
            if all(a.get(f"{s}_variant") and b.get(f"{s}_variant") for s in stages)]
    if not both:
        return None
    return sum(all(a[f"{s}_variant"] == b[f"{s}_variant"] for s in stages) for a, b in both) / len(both)


def peak_utilisation(rows: list[dict], window_s: int = 10) -> float | None:
    """The largest mean over `window_s` consecutive seconds of arrivals / plan capacity (None
    without a plan in force)."""
    ratios = [float(r["achieved_rps"]) / float(r["capacity_rps"]) if r.get("capacity_rps") not in (None, "") and
              float(r["capacity_rps"]) > 0 else np.nan for r in rows]
    if len(ratios) < window_s or all(np.isnan(ratios)):
        return None
    means = np.convolve(np.asarray(ratios), np.ones(window_s) / window_s, mode="valid")
    return None if np.all(np.isnan(means)) else round(float(np.nanmax(means)), 3)


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
    out["utilisation"] = {"live": peak_utilisation(live_rows), "sim": peak_utilisation(sim_rows)}
    out["p99_ms"] = {"live": live["p99_ms"], "sim": sim["p99_ms"]}
    out["requests"] = {"live": live["requests"], "sim": sim["requests"]}
    out["decisions"] = {"live": live["decisions"], "sim": sim["decisions"]}
    return out


def table(results: list[dict], stages: list[str]) -> str:
    head = ["case"] + [f"{s} p99 live / sim ms (error)" for s in stages] + [
        "SLA miss live / sim % (diff pp)", "same variants", "peak utilisation live / sim", "p99 live / sim ms",
        "plan changes live / sim"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        cells = [r.get("case", f"{r['workload']}:{r['policy']}")]
        for s in stages:
            st = r["stages"][s]
            err = "n/a" if st["error"] is None else f"{st['error']:.1%}"
            cells.append(f"{st['live_p99_ms']} / {st['sim_p99_ms']} ({err}{'' if st['ok'] else ' ✗'})")
        m = r["sla_miss"]
        cells.append(f"{m['live_pct']} / {m['sim_pct']} ({m['diff_pp']:+.2f}{'' if m['ok'] else ' ✗'})")
        cells.append("n/a" if r["same_variants"] is None else f"{r['same_variants']:.0%}")
        u = r.get("utilisation", {})
        cells.append(" / ".join("n/a" if u.get(k) is None else f"{u[k]:.0%}" for k in ("live", "sim")))
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
    for label, rps in (("as measured", "raw_rps"), ("calibrated", "predicted_rps"), ("held out", "held_out_rps")):
        judged = [c.ok(getattr(c, rps)) for c in checks if getattr(c, rps) is not None]
        print(f"{label}: {sum(judged)} of {len(judged)} curves within 15 % (or consistent with their bound)")
    return 0


def parse_case(parser: argparse.ArgumentParser, case: str) -> tuple[str, str, float]:
    """WORKLOAD:POLICY[:xK] -> (workload, policy, K); a malformed case is a usage error."""
    from adapter.experiment import POLICIES
    from adapter.workloads import NAMED_WORKLOADS

    parts = case.split(":")
    load = parts[2][1:] if len(parts) == 3 and parts[2].startswith("x") else None
    try:
        factor = float(load) if load is not None else (1.0 if len(parts) == 2 else None)
    except ValueError:
        factor = None
    if factor is None or not (0 < factor < float("inf")):
        parser.error(f"--case {case}: expected WORKLOAD:POLICY or WORKLOAD:POLICY:xK (K > 0, the load factor)")
    if parts[0] not in NAMED_WORKLOADS:
        parser.error(f"--case {case}: workload must be one of {', '.join(NAMED_WORKLOADS)}")
    if parts[1] not in POLICIES:
        parser.error(f"--case {case}: policy must be one of {', '.join(POLICIES)}")
    return parts[0], parts[1], factor


def main(argv: list[str] | None = None) -> int:
    from adapter.commands.run import load_pipeline
    from adapter.experiment import run_experiment
    from adapter.sim.run import SimSettings, simulate, write_sim_results
    from adapter.workloads import IPA_DAMPING, named_workload, time_scale

    parser = argparse.ArgumentParser(prog="python -m adapter.bench.fidelity", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", default="text_search")
    parser.add_argument("--spec", type=Path)
    parser.add_argument("--profiles", type=Path)
    parser.add_argument("--case", action="append", dest="cases", metavar="WORKLOAD:POLICY[:xK]",
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
        workload, policy, load = parse_case(parser, case)
        live_dir = args.out / "live" / case.replace(":", "-")
        if not (args.reuse and (live_dir / "summary.json").exists()):
            print(f"== live {workload} / {policy} ({args.time_scale:g}x)", flush=True)
            run_experiment(spec, profiles, workload, policy, live_dir, time_scale=args.time_scale,
                           interval_s=args.interval, damping=IPA_DAMPING / load)
        live = json.loads((live_dir / "summary.json").read_text())
        series = time_scale(named_workload(workload, IPA_DAMPING / load), args.time_scale)
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
        write_sim_results(args.out / "sim" / case.replace(":", "-"), sim, spec)
        results.append({"case": case, **compare(live, sim.summary, read_rows(live_dir / "per_second.csv"),
                                                sim.rows, stages)})
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
