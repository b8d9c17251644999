"""`tpa demo`: the adapter on the local stack under IPA's bursty workload (time-compressed to
a few minutes), printing its decisions as it makes them, then the run's summary and plot."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from adapter import paths
from adapter.commands.argtypes import positive


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="a short bursty run of the adapter on the local stack")
    parser.add_argument("--time-scale", type=positive, default=5.0,
                        help="compress the 1,200 s bursty trace by this factor (default: %(default)s)")
    parser.add_argument("--interval", type=positive, default=5.0,
                        help="seconds between the adapter's decisions (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=paths.RUNS / "demo",
                        help="results folder (default: %(default)s)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from adapter.commands.run import load_pipeline
    from adapter.experiment import run_experiment

    args.pipeline, args.spec, args.profiles = "text_search", None, None
    spec, profiles = load_pipeline(args)
    start = time.monotonic()

    def show(tick) -> None:
        d = tick.decision
        load = f"predicted {d.predicted_rps:5.1f} rps" if d.predicted_rps is not None else " " * 19
        if d.reason.value == "Unchanged" and not tick.actions and not tick.error:
            return  # only what changes is worth a line
        print(f"[{time.monotonic() - start:5.0f} s] {load}  {d.reason.value:11} {d.message}", flush=True)
        for action in tick.actions:
            print(f"{'':10}applied: {action}", flush=True)
        if tick.error:
            print(f"{'':10}error: {tick.error}", flush=True)

    print(f"bursty workload (IPA, Twitter trace / 8) compressed {args.time_scale:g}x; the adapter "
          f"decides every {args.interval:g} s; SLA p99 {spec.sla_ms:g} ms\n", flush=True)
    summary = run_experiment(spec, profiles, "bursty", "adapter", args.out, time_scale=args.time_scale,
                             interval_s=args.interval, on_tick=show)
    print(f"\n{summary['requests']} requests, {summary['failed']} failed; SLA miss "
          f"{summary['sla_miss_pct']} %, p99 {summary['p99_ms']} ms; accuracy {summary['accuracy']} "
          f"(normalised {summary['normalised_accuracy']}); cost {summary['cost_core_seconds']} core-s; "
          f"{summary['decisions']} plan changes")
    print(f"per-second CSV, summary and decisions in {args.out}\nplot: {summary['plot']}")
    return 0 if summary["failed"] == 0 else 1
