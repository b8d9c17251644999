"""How fast the simulator runs at cluster scale: wall time per simulated run.

    python -m adapter.bench.simulator                       # IPA's workloads, undamped, 200-pod pool
    python -m adapter.bench.simulator --policy adapter --repeat 5

Each run: the whole 1,200 s (steady-high: 600 s) trace of IPA's workload at the undamped Twitter
rate (up to 388 rps), the policy planning every 10 s for a pool of up to 200 pods, arrivals
trace-exact. Prints per workload and policy the median wall time over the repeats, the requests
simulated, and how many times faster than real time.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time

from adapter import paths


def main(argv: list[str] | None = None) -> int:
    from adapter.commands.experiment import WORKLOADS
    from adapter.core.profile import load_profiles
    from adapter.core.spec import load_spec
    from adapter.sim.run import SIM_POLICIES, SimSettings, simulate
    from adapter.workloads import named_workload

    parser = argparse.ArgumentParser(prog="python -m adapter.bench.simulator", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", action="append", dest="policies", choices=SIM_POLICIES,
                        help="repeatable (default: every policy)")
    parser.add_argument("--workload", action="append", dest="workloads", choices=WORKLOADS,
                        help="repeatable (default: all four)")
    parser.add_argument("--max-pods", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    logging.getLogger("adapter").setLevel(logging.WARNING)
    spec = load_spec(paths.ENSEMBLES / "text_search" / "pipeline.yaml")
    profiles = load_profiles(paths.ENSEMBLES / "text_search" / "profiles.json")
    settings = SimSettings(max_pods=args.max_pods, warm_start=True)
    print(f"{'workload':12} {'policy':16} {'seconds':>7} {'requests':>9} {'peak rps':>8} {'pods':>4} "
          f"{'wall s (median)':>15} {'x real time':>11}")
    for workload in args.workloads or WORKLOADS:
        series = named_workload(workload, damping=1)
        for policy in args.policies or SIM_POLICIES:
            walls = []
            for _ in range(args.repeat):
                start = time.perf_counter()
                result = simulate(spec, profiles, series, policy, settings, workload=workload)
                walls.append(time.perf_counter() - start)
            wall = statistics.median(walls)
            s = result.summary
            print(f"{workload:12} {policy:16} {len(series):7d} {s['requests']:9d} {series.max():8.0f} "
                  f"{s['max_pods_used']:4d} {wall:15.2f} {len(series) / wall:11.0f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
