"""`tpa serve`: run the local Triton with the model repository and the ensembles until Ctrl-C."""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path

from adapter import paths
from adapter.serving.launcher import Endpoints, LocalTriton, free_port


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("serve", help="start the local Triton and keep it running")
    parser.add_argument("--http-port", type=int, help="HTTP port (default: a free one)")
    parser.add_argument("--grpc-port", type=int, help="gRPC port (default: a free one)")
    parser.add_argument("--metrics-port", type=int, help="metrics port (default: a free one)")
    parser.add_argument("--model", action="append", dest="models", metavar="NAME",
                        help="load only this model (repeatable; default: every model)")
    parser.add_argument("--log", type=Path, default=paths.RUNS / "triton.log",
                        help="server log file (default: %(default)s)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    endpoints = Endpoints(args.http_port or free_port(), args.grpc_port or free_port(),
                          args.metrics_port or free_port())
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with LocalTriton(models=args.models, log_path=args.log, endpoints=endpoints):
        print(f"Triton ready: HTTP {endpoints.http}  gRPC {endpoints.grpc}  "
              f"metrics {endpoints.metrics_url}  (log {args.log}); Ctrl-C stops it")
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass
    return 0
