"""`tpa demo`: the adapter on the local stack. Starts Triton, checks the pipeline answers real
sentences, then runs the adapter while a load ramps up and down, printing its decisions."""

from __future__ import annotations

import argparse
import tempfile
import threading
import time

from adapter import paths
from adapter.loadgen import load_records, start_schedule, summarise
from adapter.models.scoring import load_langid_eval
from adapter.serving.client import TextClient, decode_strings
from adapter.serving.launcher import LocalTriton

# Requests per second, per phase: (seconds, rps). Low, a burst, high, then low for longer
# than the 60 s scale-down stabilisation window, so the scale-down shows too.
RAMP = [(30, 4), (30, 30), (30, 60), (80, 6)]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="run the adapter on the local stack under a changing load")
    parser.add_argument("--interval", type=float, default=5.0,
                        help="seconds between the adapter's decisions (default: %(default)s)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the load by this")
    parser.set_defaults(func=run)


def _smoke_check(triton: LocalTriton, pipeline: str) -> None:
    items = {}
    for item in load_langid_eval():
        items.setdefault(item["lang"], item)
    sample = [items[lang] for lang in ("de", "fr", "ja", "ru", "es")]
    client = TextClient(triton.endpoints, "grpc")
    start = time.perf_counter()
    got = decode_strings(client.infer(pipeline, [i["text"] for i in sample], ["LANG"])["LANG"])
    ms = (time.perf_counter() - start) * 1000
    client.close()
    print(f"{pipeline} answers: " + ", ".join(f"{i['lang']}->{g}" for i, g in zip(sample, got))
          + f" (one batched request, {ms:.0f} ms)\n")


def run(args: argparse.Namespace) -> int:
    from adapter.commands.run import build_sidecar, load_pipeline

    args.pipeline, args.spec, args.profiles = "text_search", None, None
    spec, profiles = load_pipeline(args)
    schedule = [rate * args.scale for seconds, rate in RAMP for _ in range(seconds)]
    with LocalTriton(log_path=paths.RUNS / "demo" / "triton.log") as triton, \
            tempfile.TemporaryDirectory() as tmp:
        _smoke_check(triton, spec.ensemble)
        start = time.monotonic()

        def show(tick) -> None:
            d = tick.decision
            load = f"predicted {d.predicted_rps:5.1f} rps" if d.predicted_rps is not None else " " * 19
            print(f"[{tick.time_s - start:5.0f} s] {load}  {d.reason.value:11} {d.message}")
            for action in tick.actions:
                print(f"{'':10}applied: {action}")
            if tick.error:
                print(f"{'':10}error: {tick.error}")

        sidecar = build_sidecar(spec, profiles, triton.endpoints, interval_s=args.interval,
                                on_tick=show)
        phases = ", ".join(f"{s} s at {r * args.scale:g} rps" for s, r in RAMP)
        print(f"load: {phases}; the adapter decides every {args.interval:g} s\n")
        out = f"{tmp}/load.json"
        load = start_schedule(triton.endpoints.http, spec.ensemble, schedule, out)
        stop = threading.Event()
        loop = threading.Thread(target=sidecar.run, args=(stop,), daemon=True)
        loop.start()
        load.join()
        stop.set()
        loop.join()
        stats = summarise(load_records(out))
    print(f"\nload: {stats['requests']} requests, {stats['failed']} failed; latency p50 "
          f"{stats['p50_ms']} ms, p99 {stats['p99_ms']} ms, max {stats['max_ms']} ms "
          f"(SLA p99 {spec.sla_ms:g} ms)")
    return 0 if stats["failed"] == 0 else 1
