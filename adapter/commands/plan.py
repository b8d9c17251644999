"""`tpa plan`: solve one planning problem and print the plan (a table, or JSON with --json)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from adapter import paths
from adapter.commands.argtypes import non_negative
from adapter.core.plan import Mode, Plan
from adapter.core.planner import SOLVER_NAMES, plan_pipeline
from adapter.core.profile import load_profiles
from adapter.core.spec import load_spec
from adapter.errors import ConfigError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "plan",
        help="choose variants, batching and instances for a load (no server needed)",
        description="Plan a pipeline for a request rate: per stage the variant (or a traffic split), "
                    "max_batch_size, dynamic-batcher queue delay and instance count, keeping the "
                    "end-to-end p99 within the spec's SLA.",
    )
    p.add_argument("--pipeline", help="pipeline name: reads ensembles/NAME/pipeline.yaml and profiles.json")
    p.add_argument("--spec", type=Path, help="pipeline spec YAML (instead of --pipeline)")
    p.add_argument("--profiles", type=Path, help="profiles JSON (default: profiles.json beside the spec)")
    p.add_argument("--rps", type=float, required=True, help="load to plan for, requests per second")
    p.add_argument("--mode", choices=[m.value for m in Mode], default=Mode.SINGLE.value,
                   help="single: one variant per stage (IPA); split: traffic split across variants "
                        "(InfAdapter); fixed: max accuracy on the pods' fixed resources (Proteus)")
    p.add_argument("--solver", choices=SOLVER_NAMES, default="exact",
                   help="exact fast path, or the integer program with CBC or HiGHS (default: exact)")
    p.add_argument("--headroom", type=non_negative, default=None,
                   help="capacity headroom as a fraction (default: the spec's `headroom`)")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.add_argument("--allow-infeasible", action="store_true",
                   help="exit 0 when the load cannot be served within the SLA (default: exit 1; the "
                        "best-effort plan and why it falls short are printed either way)")
    p.set_defaults(func=run)


def _resolve(args: argparse.Namespace) -> tuple[Path, Path]:
    if (args.pipeline is None) == (args.spec is None):
        raise ConfigError("plan: expected exactly one of --pipeline NAME or --spec FILE")
    spec_path = args.spec if args.spec is not None else paths.ENSEMBLES / args.pipeline / "pipeline.yaml"
    if args.pipeline is not None and not spec_path.exists():
        known = sorted(p.parent.name for p in paths.ENSEMBLES.glob("*/pipeline.yaml"))
        raise ConfigError(f"--pipeline: expected one of {known}, got {args.pipeline!r} (no {spec_path})")
    profiles_path = args.profiles if args.profiles is not None else spec_path.parent / "profiles.json"
    return spec_path, profiles_path


def run(args: argparse.Namespace) -> int:
    spec_path, profiles_path = _resolve(args)
    spec = load_spec(spec_path)
    profiles = load_profiles(profiles_path)
    start = time.perf_counter()
    plan = plan_pipeline(spec, profiles, args.rps, mode=args.mode, solver=args.solver, headroom=args.headroom)
    plan = dataclasses.replace(plan, solve_ms=(time.perf_counter() - start) * 1000.0)
    if args.json:
        print(json.dumps(plan.to_dict(), indent=2))
    else:
        print(render(plan))
    # An infeasible load still gets an answer (`feasible` / `reason`), and a failing status.
    return 0 if plan.feasible or args.allow_infeasible else 1


def _ms(value: float) -> str:
    return "inf" if value == float("inf") else f"{value:.1f}"


def render(plan: Plan) -> str:
    """A table a person can read: one line per variant in use."""
    head = ("stage", "variant", "share", "batch", "delay_us", "instances", "p99_ms", "capacity_rps", "accuracy", "cost")
    rows = []
    for s in plan.stages:
        for i, v in enumerate(s.variants):
            first = i == 0
            rows.append((
                s.stage if first else "", v.model, f"{v.share:.0%}", str(v.max_batch_size), str(v.max_queue_delay_us),
                str(v.instances), _ms(v.predicted_p99_ms), f"{v.capacity_rps:.1f}",
                f"{s.accuracy:.3f}" if first else "", f"{s.cost:g}" if first else "",
            ))
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    out = [line(head), line(["-" * w for w in widths]), *map(line, rows)]
    status = "OK" if plan.feasible else f"INFEASIBLE ({plan.reason.value})"
    pods = f", pods {plan.pods}" if plan.pods > 1 else ""
    out.append("")
    out.append(f"{plan.pipeline} at {plan.rps:g} rps, mode {plan.mode.value}, solver {plan.solver}{pods}: {status}")
    out.append(f"predicted p99 {_ms(plan.predicted_p99_ms)} ms (SLA {plan.sla_ms:g} ms), accuracy {plan.accuracy:.3f} "
               f"(score {plan.accuracy_score:.3f}), cost {plan.cost:g}, objective {plan.objective:.4f}"
               + (f", solved in {plan.solve_ms:.1f} ms" if plan.solve_ms is not None else ""))
    if not plan.feasible:
        out.append(f"why: {plan.message}")
    return "\n".join(out)
