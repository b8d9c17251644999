"""`tpa experiment`: replay a workload against the local stack under a policy; results folder
with per-second CSV, summary JSON and a PNG plot. `--policy all --workload all` runs the whole
comparison and writes a markdown table beside the runs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from adapter import paths
from adapter.commands.argtypes import positive

WORKLOADS = ("bursty", "steady-low", "steady-high", "fluctuating")


def add_run_arguments(parser: argparse.ArgumentParser, policies: tuple[str, ...]) -> None:
    """What a run replays and under which policy (`tpa experiment` and `tpa simulate`)."""
    parser.add_argument("--workload", default="bursty",
                        help=f"one of {', '.join(WORKLOADS)}, or all (default: %(default)s)")
    parser.add_argument("--trace-file", type=Path, help="one rps value per line (instead of --workload)")
    parser.add_argument("--policy", default="adapter", help=f"one of {', '.join(policies)}, or all")
    parser.add_argument("--time-scale", type=positive, default=1.0,
                        help="compress the trace's time by this factor (default: %(default)s)")
    parser.add_argument("--interval", type=positive, default=10.0,
                        help="seconds between the policy's decisions (default: %(default)s)")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from adapter.commands.run import add_pipeline_arguments
    from adapter.experiment import POLICIES

    parser = subparsers.add_parser("experiment", help="replay a workload under a policy, write results")
    add_pipeline_arguments(parser)
    add_run_arguments(parser, POLICIES)
    parser.add_argument("--protocol", choices=["http", "grpc"], default="http")
    parser.add_argument("--out", type=Path, default=paths.RUNS / "experiments",
                        help="results root; each run gets WORKLOAD-POLICY/ (default: %(default)s)")
    parser.set_defaults(func=run)


def comparison_table(summaries: list[dict]) -> str:
    rows = ["| workload | policy | SLA miss % | p99 ms | normalised accuracy | accuracy | cost (core-s) | plan changes |",
            "|---|---|---|---|---|---|---|---|"]
    for s in summaries:
        rows.append(f"| {s['workload']} | {s['policy']} | {s['sla_miss_pct']} | {s['p99_ms']} | "
                    f"{s['normalised_accuracy']} | {s['accuracy']} | {s['cost_core_seconds']} | {s['decisions']} |")
    return "\n".join(rows)


def run(args: argparse.Namespace) -> int:
    from adapter.commands.run import load_pipeline
    from adapter.experiment import POLICIES, run_experiment

    spec, profiles = load_pipeline(args)
    workloads = WORKLOADS if args.workload == "all" else (args.workload,)
    policies = POLICIES if args.policy == "all" else (args.policy,)
    summaries = []
    for workload in ([args.trace_file.stem] if args.trace_file else workloads):
        for policy in policies:
            out = args.out / f"{workload}-{policy}"
            print(f"== {workload} / {policy} -> {out}", flush=True)
            summary = run_experiment(spec, profiles, workload, policy, out, time_scale=args.time_scale,
                                     interval_s=args.interval, trace_file=args.trace_file,
                                     protocol=args.protocol)
            print(json.dumps(summary, indent=2), flush=True)
            summaries.append(summary)
    if len(summaries) > 1:
        table = comparison_table(summaries)
        (args.out / "comparison.md").write_text(table + "\n")
        print(table)
    return 0
