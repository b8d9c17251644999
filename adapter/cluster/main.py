"""`tpa run --cluster`: build a ClusterNode from the command line and run it until SIGTERM."""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import threading

from adapter.errors import ConfigError

log = logging.getLogger(__name__)


def lease_timing(lease_duration_s: int) -> tuple[float, float]:
    """(renew_deadline_s, retry_period_s) for a lease duration, in client-go's proportions
    (15 s lease -> 10 s deadline, 2 s retry), the retry never above 2 s."""
    return lease_duration_s * 2 / 3, min(2.0, lease_duration_s / 4)


def repository_headers(header: str, key: str | None) -> dict[str, str] | None:
    """gRPC metadata unlocking Triton's `--grpc-restricted-protocol=model-repository:H=KEY`.
    Triton expects the key under `triton-grpc-protocol-H` on gRPC (measured with 2.51: a bare
    `H` is refused with "expecting header 'triton-grpc-protocol-H'")."""
    return {f"triton-grpc-protocol-{header.lower()}": key} if key else None


def default_deployment(pipeline: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", pipeline.lower()).strip("-")


def run_cluster(args: argparse.Namespace, spec, profiles) -> int:
    from kubernetes import client

    from adapter.cluster.kube import load_api_client
    from adapter.cluster.lease import LeaderElector
    from adapter.cluster.node import ClusterActuator, ClusterNode, Follower, serve_http
    from adapter.cluster.plan_store import PlanStore
    from adapter.cluster.scaler import DeploymentScaler
    from adapter.commands.run import build_sidecar
    from adapter.serving.actuator import TritonActuator
    from adapter.serving.launcher import Endpoints
    from adapter.serving.repository import ModelRepository

    if not args.prometheus:
        raise ConfigError("--cluster plans from Prometheus (Triton's metrics summed across pods): "
                          "pass --prometheus URL")
    if not args.identity:
        raise ConfigError("--cluster needs a unique identity per sidecar: set POD_NAME (the "
                          "Downward API's metadata.name) or pass --identity")
    if args.lease_duration < 3:
        raise ConfigError(f"--lease-duration: expected at least 3 seconds, got {args.lease_duration}")
    if spec.limits.max_pods <= 1:
        log.warning("%s: limits.max_pods is %d, so the plan never asks for more than one pod",
                    spec.source, spec.limits.max_pods)
    deployment = args.deployment or default_deployment(spec.name)
    lease_name = args.lease_name or f"{deployment}-leader"

    api = load_api_client(args.kubeconfig)
    store = PlanStore(client.CoreV1Api(api), args.namespace, spec.name)
    scaler = DeploymentScaler(client.AppsV1Api(api), args.namespace, deployment)
    renew_deadline_s, retry_period_s = lease_timing(args.lease_duration)
    elector = LeaderElector(client.CoordinationV1Api(api), args.namespace, lease_name,
                            args.identity, lease_duration_s=args.lease_duration,
                            renew_deadline_s=renew_deadline_s, retry_period_s=retry_period_s)

    endpoints = Endpoints(0, args.grpc_port, args.triton_metrics_port,
                          host=args.triton_host or "127.0.0.1")
    headers = repository_headers(args.repository_key_header, os.environ.get("TPA_REPOSITORY_KEY"))
    local = TritonActuator(ModelRepository(endpoints, headers=headers), spec.ensemble,
                           list(spec.models), _model_repository(), profiles=profiles)
    follower = Follower(store, local)
    sidecar = build_sidecar(spec, profiles, endpoints, prometheus=args.prometheus,
                            prometheus_selector=args.prometheus_selector,
                            interval_s=args.interval, predictor=args.predictor, mode=args.mode,
                            solver=args.solver,
                            actuator=ClusterActuator(store, scaler, elector.is_leader))
    node = ClusterNode(sidecar, elector, store, follower)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if args.metrics_port:
        host = args.metrics_address or "0.0.0.0"
        serve_http(node, args.metrics_port, host)
        log.info("adapter HTTP on %s:%d (/metrics /ready /healthz /status)", host, args.metrics_port)
    log.info("cluster mode: %s in %s, deployment %s, lease %s (%d s), plan %s, Triton gRPC %s",
             args.identity, args.namespace, deployment, lease_name, args.lease_duration,
             store.where, endpoints.grpc)
    try:
        node.run(stop, duration_s=args.duration)
    except KeyboardInterrupt:
        stop.set()
    return 0


def _model_repository():
    from adapter import paths

    return paths.MODEL_REPOSITORY
