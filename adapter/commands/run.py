"""`tpa run`: the adapter sidecar. Observes Triton, predicts load, plans, reconfigures Triton."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import threading
from pathlib import Path

from adapter import paths
from adapter.commands.argtypes import positive
from adapter.core.plan import Mode
from adapter.core.planner import SOLVER_NAMES

log = logging.getLogger(__name__)


def add_pipeline_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pipeline", default="text_search", help="pipeline (default: %(default)s)")
    parser.add_argument("--spec", type=Path, help="spec (default: ensembles/PIPELINE/pipeline.yaml)")
    parser.add_argument("--profiles", type=Path,
                        help="profiles (default: ensembles/PIPELINE/profiles.json)")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("run", help="run the adapter control loop against Triton")
    add_pipeline_arguments(parser)
    parser.add_argument("--triton-host", help="an already running Triton (default: start a local one)")
    parser.add_argument("--grpc-port", type=int, default=8001, help="its gRPC port (default: %(default)s)")
    parser.add_argument("--triton-metrics-port", type=int, default=8002,
                        help="its metrics port (default: %(default)s)")
    parser.add_argument("--prometheus", metavar="URL",
                        help="read metrics through Prometheus instead of Triton's /metrics")
    parser.add_argument("--interval", type=positive, default=10.0, help="seconds between decisions")
    parser.add_argument("--predictor", default="max-window", help="load predictor (default: %(default)s)")
    parser.add_argument("--mode", choices=[m.value for m in Mode if m is not Mode.SPLIT],
                        default="single", help="planning mode (default: %(default)s)")
    parser.add_argument("--solver", choices=SOLVER_NAMES, default="exact", help="(default: %(default)s)")
    parser.add_argument("--metrics-port", type=int, default=0,
                        help="serve the adapter's own /metrics on this port (0: off)")
    parser.add_argument("--duration", type=positive, help="stop after this many seconds")
    parser.add_argument("--metrics-address", default=None,
                        help="address for --metrics-port (default: 127.0.0.1; 0.0.0.0 with --cluster)")
    parser.add_argument("--prometheus-selector", default="",
                        help='PromQL label matchers for Triton\'s series, e.g. namespace="tpa"')
    cluster = parser.add_argument_group("cluster mode (a sidecar in a Triton pod on Kubernetes)")
    cluster.add_argument("--cluster", action="store_true",
                         help="elect a leader, publish its plan, scale the Deployment; every "
                              "sidecar applies the published plan to its own Triton")
    cluster.add_argument("--namespace", default=os.environ.get("POD_NAMESPACE", "default"),
                         help="namespace (default: $POD_NAMESPACE or %(default)s)")
    cluster.add_argument("--deployment", help="the Triton Deployment to scale (default: the pipeline "
                                              "name with - for _)")
    cluster.add_argument("--lease-name", help="the Lease (default: <deployment>-leader)")
    cluster.add_argument("--identity", default=os.environ.get("POD_NAME"),
                         help="this candidate's name in the Lease (default: $POD_NAME)")
    cluster.add_argument("--lease-duration", type=int, default=15,
                         help="seconds without renewal before another sidecar takes over "
                              "(default: %(default)s)")
    cluster.add_argument("--kubeconfig", help="kubeconfig (default: in-cluster config in a pod, "
                                              "else $KUBECONFIG or ~/.kube/config)")
    cluster.add_argument("--repository-key-header", default="tpa-repository-key",
                         help="the H of Triton's --grpc-restricted-protocol=model-repository:H=KEY; "
                              "KEY comes from $TPA_REPOSITORY_KEY (default: %(default)s)")
    parser.set_defaults(func=run)


def load_pipeline(args: argparse.Namespace):
    from adapter.core.profile import load_profiles
    from adapter.core.spec import load_spec

    spec = load_spec(args.spec or paths.ENSEMBLES / args.pipeline / "pipeline.yaml")
    profiles = load_profiles(args.profiles or paths.ENSEMBLES / spec.name / "profiles.json")
    return spec, profiles


def build_sidecar(spec, profiles, endpoints, *, prometheus: str | None = None,
                  interval_s: float = 10.0, predictor: str = "max-window", mode: str = "single",
                  solver: str = "exact", on_tick=None, model_repository: Path = paths.MODEL_REPOSITORY,
                  prometheus_selector: str = "", actuator=None):
    from adapter.core.policy import PolicyConfig
    from adapter.core.predictor import make_predictor
    from adapter.monitor import PrometheusSource, TritonMetricsSource
    from adapter.serving.actuator import TritonActuator
    from adapter.serving.repository import ModelRepository
    from adapter.sidecar import LoopSettings, Sidecar

    source = (PrometheusSource(prometheus, selector=prometheus_selector) if prometheus
              else TritonMetricsSource(endpoints.metrics_url))
    actuator = actuator or TritonActuator(ModelRepository(endpoints), spec.ensemble,
                                          list(spec.models), model_repository, profiles=profiles)
    return Sidecar(spec, profiles, source, actuator, make_predictor(predictor),
                   config=PolicyConfig(mode=Mode(mode), solver=solver),
                   settings=LoopSettings(interval_s=interval_s), on_tick=on_tick)


def run(args: argparse.Namespace) -> int:
    from adapter.serving.launcher import Endpoints, LocalTriton

    spec, profiles = load_pipeline(args)
    if args.cluster:
        from adapter.cluster.main import run_cluster

        return run_cluster(args, spec, profiles)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with contextlib.ExitStack() as stack:
        if args.triton_host:
            endpoints = Endpoints(0, args.grpc_port, args.triton_metrics_port, host=args.triton_host)
        else:
            endpoints = stack.enter_context(
                LocalTriton(log_path=paths.RUNS / "run" / "triton.log")).endpoints
        sidecar = build_sidecar(spec, profiles, endpoints, prometheus=args.prometheus,
                                interval_s=args.interval, predictor=args.predictor,
                                mode=args.mode, solver=args.solver,
                                prometheus_selector=args.prometheus_selector)
        if args.metrics_port:
            sidecar.metrics.serve(args.metrics_port, host=args.metrics_address or "127.0.0.1")
            log.info("adapter metrics on http://127.0.0.1:%d/metrics", args.metrics_port)
        log.info("adapter running for %s (Triton gRPC %s); Ctrl-C stops it", spec.name, endpoints.grpc)
        try:
            sidecar.run(stop, duration_s=args.duration)
        except KeyboardInterrupt:
            pass
    return 0
