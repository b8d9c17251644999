"""`tpa profile`: measure every variant of a pipeline on a local Triton and save its profiles."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import shutil
from pathlib import Path

from tqdm import tqdm

from adapter import paths
from adapter.commands.argtypes import positive
from adapter.errors import ConfigError


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected integers >= 1, got {text!r}")
    return values


def _config_list(text: str) -> tuple[tuple[int, int], ...]:
    try:
        configs = tuple((int(b), int(n)) for b, n in (item.split("x") for item in text.split(",")))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected BATCHxINSTANCES,... (e.g. 1x1,4x2), got {text!r}") from None
    if not configs or min(min(c) for c in configs) < 1:
        raise argparse.ArgumentTypeError(f"expected batch sizes and instances >= 1, got {text!r}")
    return configs


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "profile", help="measure latency/throughput of each variant and fit its latency model")
    parser.add_argument("--pipeline", default="text_search", help="pipeline (default: %(default)s)")
    parser.add_argument("--spec", type=Path, help="spec file (default: ensembles/PIPELINE/pipeline.yaml)")
    parser.add_argument("--out", type=Path, help="profiles file (default: ensembles/PIPELINE/profiles.json)")
    parser.add_argument("--model", action="append", dest="models", metavar="NAME",
                        help="profile only this variant (repeatable)")
    parser.add_argument("--batch-sizes", type=_int_list, help="e.g. 1,2,4,8 (default: the spec's)")
    parser.add_argument("--instances", type=_int_list, default=(1, 2),
                        help="instance counts to measure (default: 1,2)")
    parser.add_argument("--refresh", action="store_true",
                        help="measure again the variants the profiles file already has")
    parser.add_argument("--saturation", action="store_true",
                        help="instead: open-loop sweeps up to past each variant's capacity, stored with "
                             "its profile, then measured vs predicted max rps at --budget-ms")
    parser.add_argument("--calibrate", action="store_true",
                        help="instead: fit each model's calibration (service scale, instance efficiency) "
                             "again from the saturation curves already stored, at --budget-ms; no measuring")
    parser.add_argument("--configs", type=_config_list,
                        help="with --saturation: BATCHxINSTANCES,... (default: 1x1,4x2)")
    parser.add_argument("--max-rps", type=positive,
                        help="with --saturation: the highest rate to send (default: 300, what one Python "
                             "client sends reliably beside Triton on 2 cores)")
    parser.add_argument("--budget-ms", type=positive,
                        help="with --saturation: the latency one stage may take (default: the spec's SLA)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from adapter.core.profile import load_profiles, save_profiles
    from adapter.core.spec import load_spec
    from adapter.models.scoring import load_langid_eval
    from adapter.profiler import ProfileSettings, profile_variants, with_server_latency
    from adapter.serving.launcher import LocalTriton
    from adapter.serving.tracing import trace_args

    spec = load_spec(args.spec or paths.ENSEMBLES / args.pipeline / "pipeline.yaml")
    out = args.out or paths.ENSEMBLES / spec.name / "profiles.json"
    stage_of = {v.model: s.name for s in spec.stages for v in s.variants}
    unknown = sorted(set(args.models or []) - set(stage_of))
    if unknown:
        raise ConfigError(f"--model {', '.join(unknown)}: not a variant of {spec.name} "
                          f"(variants: {', '.join(stage_of)})")
    previous = load_profiles(out) if out.exists() else None
    chosen = [m for m in stage_of if m in (args.models or stage_of)]
    if args.saturation and args.calibrate:
        raise ConfigError("--calibrate and --saturation: choose one (--saturation calibrates after its sweep)")
    if args.saturation:
        return sweep(args, spec, out, previous, chosen)
    if args.calibrate:
        if previous is None:
            raise ConfigError(f"--calibrate: {out} does not exist: run `tpa profile` and `tpa profile --saturation` first")
        return calibrate_and_save(previous, chosen, args.budget_ms or spec.sla_ms, out)
    if previous is not None and previous.provenance.get("command") != "tpa profile":
        previous = None  # placeholder profiles are never reused as measurements
    variants = {m: stage_of[m] for m in (args.models or stage_of)
                if args.refresh or previous is None or m not in previous}
    settings = ProfileSettings(
        batch_sizes=args.batch_sizes or spec.stages[0].batch_sizes, instances=args.instances)
    if not variants:
        print(f"{out}: every variant already profiled (use --refresh to measure again)")
        return 0
    texts = [item["text"] for item in load_langid_eval()]
    points = len(variants) * len(settings.batch_sizes) * len(settings.instances)
    trace = paths.RUNS / "profile" / "trace" / "trace.json"  # server-side latency of every request
    shutil.rmtree(trace.parent, ignore_errors=True)
    windows: dict = {}
    with LocalTriton(models=list(variants), log_path=paths.RUNS / "profile" / "triton.log",
                     extra_args=trace_args(trace)) as triton, \
            tqdm(total=points, desc="profile", unit="point", disable=None) as bar:
        def progress(label: str) -> None:
            bar.set_postfix_str(label)
            bar.update(1)

        profiles = profile_variants(triton.endpoints, variants, texts, settings,
                                    previous=previous, progress=progress, windows=windows)
    profiles = with_server_latency(profiles, trace, windows, settings.warmup_requests)
    save_profiles(profiles, out)
    print(f"{'variant':20} {'fit':6} {'rmse ms':>8} {'max err':>8} {'inst eff':>8} {'load s':>7}"
          f"  p99 ms at b=1/8")
    for name, vp in sorted(profiles.variants.items()):
        fit = vp.latency
        load = f"{vp.load_s:7.2f}" if vp.load_s is not None else f"{'-':>7}"
        print(f"{name:20} {fit.kind:6} {fit.rmse_ms:8.2f} {fit.max_rel_error:8.1%} "
              f"{vp.instance_efficiency:8.2f} {load}  {fit.p99_ms(1):.1f} / {fit.p99_ms(8):.1f}")
    print(f"wrote {out}")
    return 0


def sweep(args: argparse.Namespace, spec, out: Path, profiles, models: list[str]) -> int:
    """`--saturation`: sweep the profiled variants, store the curves, print the check."""
    from adapter.core.saturation import predicted
    from adapter.models.scoring import load_langid_eval
    from adapter.profiler import SweepSettings, ladder, sweep_variant
    from adapter.serving.launcher import LocalTriton

    missing = [m for m in models if profiles is None or m not in profiles]
    if missing:
        raise ConfigError(f"--saturation: {', '.join(missing)} not in {out}: run `tpa profile` first "
                          f"(the sweep's rates are shares of the profiled capacity)")
    budget = args.budget_ms or spec.sla_ms
    settings = SweepSettings(**({"configs": args.configs} if args.configs else {}),
                             **({"max_rps": args.max_rps} if args.max_rps else {}), budget_ms=budget)
    texts = [item["text"] for item in load_langid_eval()]
    variants = dict(profiles.variants)
    workdir = paths.RUNS / "profile"
    workdir.mkdir(parents=True, exist_ok=True)
    with LocalTriton(models=models, log_path=workdir / "triton.log") as triton, \
            tqdm(total=sum(len(ladder(predicted(variants[m], b, n, 1.0)[1], settings))
                           for m in models for b, n in settings.configs),  # at most: a curve ends when saturated
                 desc="saturation", unit="rate", disable=None) as bar:
        def progress(label: str) -> None:
            bar.set_postfix_str(label)
            bar.update(1)

        for model in models:
            points = sweep_variant(triton.endpoints, model, variants[model], texts, settings, progress, workdir)
            kept = [p for p in variants[model].saturation if (p.batch_size, p.instances) not in settings.configs]
            variants[model] = dataclasses.replace(variants[model], saturation=tuple(kept + points))
    provenance = {
        "command": "tpa profile --saturation",
        "ladder": {"start_share": settings.start_share, "step": settings.step, "max_share": settings.max_share},
        "budget_ms": budget, "max_rps": settings.max_rps, "min_requests": settings.min_requests,
        "seconds_per_rate": [settings.seconds, settings.max_seconds], "host_cores": os.cpu_count(),
        "method": "open-loop Poisson arrivals of one text each over HTTP from a child process, latency "
                  "from the scheduled send time, the first second of each rate left out; mean batch "
                  "and compute time from Triton's statistics",
        # A sweep of some configs keeps the curves of the others: each sweep says what it measured.
        "sweeps": [*profiles.provenance.get("saturation", {}).get("sweeps", []), {
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "configs": [list(c) for c in settings.configs], "models": models}]}
    profiles = dataclasses.replace(profiles, variants=variants,
                                   provenance={**profiles.provenance, "saturation": provenance})
    print(f"measured the saturation curves of {len(models)} models")
    return calibrate_and_save(profiles, models, budget, out)


def calibrate_and_save(profiles, models: list[str], budget_ms: float, out: Path) -> int:
    """Fit the models' calibrations on their curves, store curves and calibrations, print the check."""
    from adapter.core.profile import save_saturation
    from adapter.core.saturation import calibrate, check_curves, format_checks

    variants = {m: calibrate(vp, budget_ms, side="client").apply(vp) if m in models else vp
                for m, vp in profiles.variants.items()}
    profiles = dataclasses.replace(profiles, variants=variants)
    provenance = dict(profiles.provenance.get("saturation", {}))
    provenance["calibration"] = {
        "budget_ms": budget_ms, "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "method": "per model (adapter.core.saturation.calibrate): the service scale fitted on its one-instance "
                  "curves and the instance efficiency on its others, so that the stage model's max rps at "
                  "budget_ms (client-side p99) is the measured one"}
    save_saturation(profiles, out, provenance=provenance)
    print(format_checks([c for m in models for c in check_curves(profiles[m], budget_ms, side="client")]))
    for m in models:
        print(f"{m:20} service scale {variants[m].service_scale:5.2f}  instance efficiency "
              f"{variants[m].instance_efficiency:4.2f}")
    print(f"wrote each model's calibration into {out}")
    return 0
