"""`tpa simulate`: a workload under a policy on simulated Triton pods, in seconds; the same
results folder as `tpa experiment`. `--policy all --workload all` writes a comparison table."""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from adapter import paths
from adapter.commands.argtypes import non_negative, non_negative_int, positive


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from adapter.commands.experiment import add_run_arguments
    from adapter.commands.run import add_pipeline_arguments
    from adapter.sim.run import SIM_POLICIES, SimSettings

    d = SimSettings()
    parser = subparsers.add_parser("simulate", help="simulate a workload under a policy, write results")
    add_pipeline_arguments(parser)
    add_run_arguments(parser, SIM_POLICIES)
    parser.add_argument("--damping", type=positive,
                        help="divide the Twitter trace by this (IPA: 8; 1 = the undamped rate) (default: 8; "
                             "not with --trace-file)")
    parser.add_argument("--max-pods", type=int, help="the pool: at most this many Triton pods (default: the spec's)")
    parser.add_argument("--pod-start", type=non_negative, default=d.pod_start_s,
                        help="seconds until a new pod is ready (default: %(default)s)")
    parser.add_argument("--poisson", action="store_true", help="Poisson arrivals (default: trace-exact, as Locust sends)")
    parser.add_argument("--warm-start", action="store_true",
                        help="start on the policy's plan for the first second (default: Triton's repository configs)")
    parser.add_argument("--seed", type=non_negative_int, default=d.seed)
    parser.add_argument("--out", type=Path, default=paths.RUNS / "simulations",
                        help="results root; each run gets WORKLOAD-POLICY/ (default: %(default)s)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from adapter.commands.experiment import WORKLOADS, comparison_table
    from adapter.commands.run import load_pipeline
    from adapter.errors import ConfigError
    from adapter.sim.run import SIM_POLICIES, SimSettings, simulate, write_sim_results
    from adapter.workloads import load_rps_file, named_workload, time_scale

    if args.max_pods is not None and args.max_pods < 1:
        raise ConfigError(f"--max-pods: expected an integer >= 1, got {args.max_pods}")
    if args.damping is not None and args.trace_file:
        raise ConfigError("--damping: applies to the named workloads, not to --trace-file")
    spec, profiles = load_pipeline(args)
    # Thousands of simulated decisions: they go to each run's decisions.json, not the terminal.
    logging.getLogger("adapter.sidecar").setLevel(logging.WARNING)
    settings = SimSettings(interval_s=args.interval, poisson=args.poisson, seed=args.seed,
                           pod_start_s=args.pod_start, warm_start=args.warm_start, max_pods=args.max_pods)
    workloads = [args.trace_file.stem] if args.trace_file else (
        WORKLOADS if args.workload == "all" else (args.workload,))
    policies = SIM_POLICIES if args.policy == "all" else (args.policy,)
    if any(p not in SIM_POLICIES for p in policies):
        raise ConfigError(f"--policy: expected one of {', '.join(SIM_POLICIES)} or all, got {args.policy!r}")
    summaries = []
    for workload in workloads:
        raw = load_rps_file(args.trace_file) if args.trace_file else named_workload(workload, damping=args.damping or 8.0)
        series = time_scale(raw, args.time_scale)
        for policy in policies:
            out = args.out / f"{workload}-{policy}"
            started = time.perf_counter()
            with tqdm(total=len(series), desc=f"{workload}/{policy}", unit="s", disable=None, leave=False) as bar:
                result = simulate(spec, profiles, series, policy, settings, workload=workload,
                                  progress=lambda t: bar.update(t - bar.n))
            result.summary["wall_s"] = round(time.perf_counter() - started, 2)
            write_sim_results(out, result, spec)
            summaries.append(result.summary)
            s = result.summary
            print(f"{workload:12} {policy:16} SLA miss {s['sla_miss_pct']:7.3f}%  p99 {s['p99_ms']:9.1f} ms  "
                  f"accuracy {s['normalised_accuracy']:.3f}  cost {s['cost_core_seconds']:8.0f} core-s  "
                  f"{s['requests']} requests in {s['wall_s']} s  -> {out}", flush=True)
    if len(summaries) > 1:
        table = comparison_table(summaries)
        (args.out / "comparison.md").write_text(table + "\n")
        print(table)
    elif summaries:
        print(json.dumps(summaries[0], indent=2))
    return 0
