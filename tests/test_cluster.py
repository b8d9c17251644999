"""Cluster mode against a real control plane (etcd + kube-apiserver + kube-controller-manager
v1.20.2 on loopback, tests/kube_control_plane.py): the base manifests apply, the ServiceAccount's
own token can do exactly what the adapter needs, conflicts are retried, leader election follows
the Lease rules on an injected clock, and two real adapter processes elect one leader, scale the
Deployment through a published plan, converge their Triton to it, and hand over when the leader
is SIGKILLed.

The leader's metrics come from a canned Prometheus HTTP API (`CannedPrometheus`) that reports a
chosen pipeline rate: the point here is election, publication, scaling and the followers, not
PromQL (tests/test_monitor_prometheus.py runs a real Prometheus against a real Triton)."""

from __future__ import annotations

import base64
import contextlib
import http.server
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml
from kubernetes import client, utils
from kubernetes.client.rest import ApiException

from adapter import paths
from tests.conftest import small_spec
from adapter.cluster.lease import LeaderElector
from adapter.cluster.main import lease_timing, repository_headers
from adapter.cluster.plan_store import PlanStore, plan_from_dict
from adapter.cluster.scaler import DeploymentScaler
from adapter.core.planner import plan_pipeline
from adapter.core.profile import load_profiles
from adapter.core.spec import parse_spec
from adapter.errors import ServerError
from adapter.serving.actuator import TritonActuator
from adapter.serving.launcher import LocalTriton, free_port
from adapter.serving.repository import ModelRepository
from tests import kube_control_plane as kcp

NS = "tpa-test"
DEPLOYMENT = "text-search"
SA = "text-search-adapter"
LEASE_S = 4


# -- fixtures ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def plane():
    try:
        kcp.binaries()
    except kcp.ControlPlaneUnavailable as exc:  # `make test` installs it: missing is a failure
        pytest.fail(f"no Kubernetes control plane, cluster tests cannot run: {exc}")
    with tempfile.TemporaryDirectory(prefix="kube-") as tmp:
        with kcp.control_plane(Path(tmp)) as cp:
            yield cp


@pytest.fixture(scope="module")
def admin(plane):
    return plane.api_client()


def _base_objects(tmp: Path) -> list[dict]:
    """k8s/base through kustomize, in the test namespace (an overlay of our own)."""
    overlay = tmp / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "namespace": NS, "resources": [os.path.relpath(paths.ROOT / "k8s" / "base", overlay)]}))
    kubectl = Path(sys.executable).parent / "kubectl"
    out = subprocess.run([str(kubectl), "kustomize", str(overlay)], capture_output=True,
                         text=True, check=True, timeout=60).stdout
    return [d for d in yaml.safe_load_all(out) if d]


@pytest.fixture(scope="module")
def applied(admin, tmp_path_factory):
    """The base manifests created on the API server; returns the ServiceAccount's token."""
    core = client.CoreV1Api(admin)
    core.create_namespace({"metadata": {"name": NS}})
    objects = _base_objects(tmp_path_factory.mktemp("kustomize"))
    for obj in objects:
        utils.create_from_dict(admin, obj, namespace=NS)
    # Another Deployment the adapter must not be able to touch.
    other = next(o for o in objects if o["kind"] == "Deployment")
    other = json.loads(json.dumps(other))
    other["metadata"]["name"] = "other"
    utils.create_from_dict(admin, other, namespace=NS)
    core.create_namespaced_config_map(NS, {"metadata": {"name": "other-config"}, "data": {"a": "b"}})
    # The token controller (kube-controller-manager) makes the ServiceAccount's token Secret.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        sa = core.read_namespaced_service_account(SA, NS)
        if sa.secrets:
            secret = core.read_namespaced_secret(sa.secrets[0].name, NS)
            if secret.data and "token" in secret.data:
                return base64.b64decode(secret.data["token"]).decode()
        time.sleep(0.2)
    raise TimeoutError(f"no token Secret for serviceaccount {SA} after 30 s")


@pytest.fixture(scope="module")
def sa_client(plane, applied):
    return plane.api_client(applied)


# -- manifests and RBAC ------------------------------------------------------------------------

def test_base_manifests_create_a_working_deployment(admin, applied):
    apps = client.AppsV1Api(admin)
    deployment = apps.read_namespaced_deployment(DEPLOYMENT, NS)
    assert [c.name for c in deployment.spec.template.spec.containers] == ["triton", "adapter"]
    # The controller-manager acts on it: a ReplicaSet appears (Pods stay Pending: no kubelet).
    deadline = time.monotonic() + 20
    while not apps.list_namespaced_replica_set(NS, label_selector="app.kubernetes.io/name=text-search").items:
        assert time.monotonic() < deadline, "no ReplicaSet for the Deployment"
        time.sleep(0.2)
    lease = client.CoordinationV1Api(admin).read_namespaced_lease("text-search-leader", NS)
    assert lease.spec is None or lease.spec.holder_identity is None


def test_service_account_can_do_what_the_adapter_needs_and_nothing_else(sa_client, admin):
    scaler = DeploymentScaler(client.AppsV1Api(sa_client), NS, DEPLOYMENT)
    assert scaler.scale_to(2) == f"scaled deployment {NS}/{DEPLOYMENT} from 1 to 2 replicas"
    assert scaler.scale_to(2) is None  # already there: nothing written
    assert scaler.scale_to(1)
    store = PlanStore(client.CoreV1Api(sa_client), NS, "text_search")
    assert store.read() is None  # shipped empty

    with pytest.raises(ServerError, match=r"scale deployment tpa-test/other to 3 failed: 403 Forbidden"):
        DeploymentScaler(client.AppsV1Api(sa_client), NS, "other").scale_to(3)
    apps, core = client.AppsV1Api(sa_client), client.CoreV1Api(sa_client)
    coordination = client.CoordinationV1Api(sa_client)
    forbidden = [
        lambda: apps.read_namespaced_deployment(DEPLOYMENT, NS),  # only its scale
        lambda: apps.patch_namespaced_deployment(DEPLOYMENT, NS, {"spec": {"paused": True}}),
        lambda: core.read_namespaced_config_map("other-config", NS),
        lambda: core.create_namespaced_config_map(NS, {"metadata": {"name": "x"}}),
        lambda: core.list_namespaced_secret(NS),
        lambda: core.list_namespaced_pod(NS),
        lambda: coordination.read_namespaced_lease("someone-elses", "default"),
        lambda: apps.read_namespaced_deployment_scale(DEPLOYMENT, "default"),
    ]
    for i, call in enumerate(forbidden):
        with pytest.raises(ApiException) as info:
            call()
        assert info.value.status == 403, i
    assert client.AppsV1Api(admin).read_namespaced_deployment_scale("other", NS).spec.replicas == 1


# -- conflicts ---------------------------------------------------------------------------------

class _Interfering:
    """Wraps an API object: the first read of `method` returns the object, then another writer
    changes it before the caller writes back, so the caller's write carries a stale
    resourceVersion and gets a real 409 from the server."""

    def __init__(self, api, method: str, interfere):
        self._api, self._method, self._interfere = api, method, interfere
        self.reads = 0

    def __getattr__(self, name):
        attr = getattr(self._api, name)
        if name != self._method:
            return attr

        def read(*args, **kwargs):
            result = attr(*args, **kwargs)
            self.reads += 1
            if self.reads == 1:
                self._interfere()
            return result
        return read


def test_a_stale_resource_version_gets_409_and_is_retried(admin):
    apps = client.AppsV1Api(admin)
    stale = apps.read_namespaced_deployment_scale(DEPLOYMENT, NS)
    apps.patch_namespaced_deployment_scale(DEPLOYMENT, NS, {"spec": {"replicas": 2}})
    body = {"metadata": {"name": DEPLOYMENT, "namespace": NS,
                         "resourceVersion": stale.metadata.resource_version},
            "spec": {"replicas": 3}}
    with pytest.raises(ApiException) as info:
        apps.replace_namespaced_deployment_scale(DEPLOYMENT, NS, body)
    assert info.value.status == 409

    # The scaler: re-reads and writes again.
    bump = lambda: apps.patch_namespaced_deployment_scale(DEPLOYMENT, NS, {"spec": {"replicas": 5}})
    wrapped = _Interfering(apps, "read_namespaced_deployment_scale", bump)
    assert DeploymentScaler(wrapped, NS, DEPLOYMENT).scale_to(4) == \
        f"scaled deployment {NS}/{DEPLOYMENT} from 5 to 4 replicas"
    assert wrapped.reads == 2
    assert apps.read_namespaced_deployment_scale(DEPLOYMENT, NS).spec.replicas == 4
    apps.patch_namespaced_deployment_scale(DEPLOYMENT, NS, {"spec": {"replicas": 1}})

    # The plan store: a concurrent write to the ConfigMap; the publish lands on top of it.
    core = client.CoreV1Api(admin)
    touch = lambda: core.patch_namespaced_config_map("text-search-plan", NS,
                                                     {"metadata": {"annotations": {"touched": "yes"}}})
    wrapped = _Interfering(core, "read_namespaced_config_map", touch)
    store = PlanStore(wrapped, NS, "text_search")
    plan = _plan(LOW_RPS)
    assert store.publish(plan) == 1
    assert wrapped.reads == 2
    assert store.publish(plan) is None  # unchanged: no write, same generation
    published = store.read()
    assert published.generation == 1 and published.plan.to_dict() == plan.to_dict()
    cm = core.read_namespaced_config_map("text-search-plan", NS)
    assert cm.metadata.annotations["touched"] == "yes"
    assert store.publish(_plan(HIGH_RPS)) == 2


# -- leader election on an injected clock ------------------------------------------------------

class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_election_follows_the_lease_rules(admin):
    coordination = client.CoordinationV1Api(admin)
    name = "election-rules"
    ca, cb = FakeClock(), FakeClock()
    a = LeaderElector(coordination, NS, name, "a", lease_duration_s=4, renew_deadline_s=3,
                      retry_period_s=1, clock=ca)
    b = LeaderElector(coordination, NS, name, "b", lease_duration_s=4, renew_deadline_s=3,
                      retry_period_s=1, clock=cb)
    assert a.try_acquire_or_renew() and a.is_leader()  # created the Lease
    assert not b.try_acquire_or_renew() and b.leader == "a"
    cb.now += 3.9  # b has seen the record unchanged for less than the lease
    assert not b.try_acquire_or_renew()
    ca.now += 1
    assert a.try_acquire_or_renew()  # a renews: b sees a new renewTime and restarts its count
    cb.now += 3.9
    assert not b.try_acquire_or_renew()
    # a stops renewing; past its deadline it no longer acts as leader, before b can take over
    ca.now += 3.0
    assert not a.is_leader()
    cb.now += 4.0
    assert b.try_acquire_or_renew() and b.is_leader()
    lease = coordination.read_namespaced_lease(name, NS)
    assert lease.spec.holder_identity == "b" and lease.spec.lease_transitions == 1
    assert lease.spec.lease_duration_seconds == 4
    assert not a.try_acquire_or_renew() and a.leader == "b"  # a re-joins as a candidate
    # A graceful stop releases the lease: a takes it at once, no lease period to wait.
    b.release()
    assert not b.is_leader()
    assert a.try_acquire_or_renew() and a.is_leader()

    # Two candidates writing from the same read: the server lets exactly one win (409).
    lease = coordination.read_namespaced_lease(name, NS)
    results = []
    for who in ("x", "y"):
        body = {"metadata": {"name": name, "namespace": NS,
                             "resourceVersion": lease.metadata.resource_version},
                "spec": {"holderIdentity": who, "leaseDurationSeconds": 4}}
        try:
            coordination.replace_namespaced_lease(name, NS, body)
            results.append(who)
        except ApiException as exc:
            results.append(exc.status)
    assert results == ["x", 409]


def test_api_outage_is_not_fatal(plane):
    """An unreachable API server: every step returns False, nothing raises."""
    dead = client.Configuration()
    dead.host = f"https://127.0.0.1:{free_port()}"
    dead.verify_ssl = False
    dead.retries = 0
    api = client.ApiClient(dead)
    elector = LeaderElector(client.CoordinationV1Api(api), NS, "x", "a", lease_duration_s=4,
                            renew_deadline_s=3, retry_period_s=1)
    assert elector.try_acquire_or_renew() is False and not elector.is_leader()
    with pytest.raises(ServerError, match=r"Kubernetes API: read configmap tpa-test/text-search-plan "
                                          r"failed: connection failed"):
        PlanStore(client.CoreV1Api(api), NS, "text_search", attempts=2).read()


# -- readiness ---------------------------------------------------------------------------------

def test_a_new_sidecar_reports_ready_only_once_its_triton_matches_the_plan(admin, applied, small_triton):
    from adapter.cluster.node import Follower

    server, models = small_triton
    store = PlanStore(client.CoreV1Api(admin), NS, "text_search")
    plan = _plan(300.0)  # a configuration small_triton does not start with
    store.publish(plan)
    published = store.read()
    dead = TritonActuator(ModelRepository(type(server.endpoints)(0, free_port(), 0)), "text_search",
                          [], models)
    unreachable = Follower(store, dead)
    assert not unreachable.step() and not unreachable.ready
    assert unreachable.reason.startswith("not converged: Triton at 127.0.0.1:")
    live = TritonActuator(ModelRepository(server.endpoints), "text_search",
                          ["langid_cld2", "langid_fasttext", "embed_l3_int8", "embed_l3"], models)
    follower = Follower(store, live)
    assert not follower.ready
    assert follower.step() and follower.ready and follower.generation == published.generation
    assert live.reconcile(plan) == []  # converged: nothing left to change
    assert live.observe().ensemble_steps == tuple(s.model for s in plan.stages)


# -- the repository-API key -----------------------------------------------------------------------

def test_the_repository_key_unlocks_a_restricted_triton(tmp_path):
    """Triton started with the flags k8s/base gives it: the adapter's headers open the
    model-repository API; no key, or a wrong one, is refused."""
    flag = "model-repository:tpa-repository-key=s3cret"
    server = LocalTriton(models=["langid_cld2"], log_path=tmp_path / "triton.log",
                         extra_args=[f"--grpc-restricted-protocol={flag}",
                                     f"--http-restricted-api={flag}"])
    with server:
        for headers in (None, repository_headers("tpa-repository-key", "wrong")):
            with pytest.raises(ServerError, match="This protocol is restricted"):
                ModelRepository(server.endpoints, headers=headers).states()
        unlocked = ModelRepository(server.endpoints, headers=repository_headers("tpa-repository-key", "s3cret"))
        assert unlocked.states()["langid_cld2"] == "READY"
    assert repository_headers("tpa-repository-key", None) is None
    assert repository_headers("tpa-repository-key", "") is None


# -- two real adapter processes ----------------------------------------------------------------

TEST_SPEC = small_spec(max_instances_per_stage=1, max_pods=4)
PROFILES = load_profiles(paths.ENSEMBLES / "text_search" / "profiles.json")
# Loads the committed profiles plan into 2 pods and into 4 pods (checked below, so a re-measured
# profile that moves them fails here, not deep inside a two-process test).
LOW_RPS, HIGH_RPS = 200.0, 400.0  # canned rates; the Triton batcher model serves ~3x the old per pod


def _plan(rps: float):
    return plan_pipeline(parse_spec(TEST_SPEC), PROFILES, rps)


class CannedPrometheus:
    """Prometheus' HTTP query API answering the monitor's PromQL with one pipeline rate: the
    rate() query gets `rps`, the raw-samples query a success counter growing at `rps`, scraped
    every second."""

    def __init__(self, rps: float):
        self._changes = [(time.time() - 3600, 0.0, rps)]  # (since, counter then, rps), oldest first
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query).get("query", [""])[0]
                result, kind = [], "vector"
                if "rate(nv_inference_request_success" in query:
                    result = [{"metric": {"model": "text_search"}, "value": [time.time(), str(outer.rps)]}]
                elif query.startswith("nv_inference_request_success") and query.endswith("[30s]"):
                    now = int(time.time())
                    result = [{"metric": {"model": "text_search"},
                               "values": [[t, str(outer.count_at(t))] for t in range(now - 29, now + 1)]}]
                    kind = "matrix"
                body = json.dumps({"status": "success",
                                   "data": {"resultType": kind, "result": result}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):  # noqa: N802
                self.do_GET()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def rps(self) -> float:
        return self._changes[-1][2]

    @rps.setter
    def rps(self, rps: float) -> None:
        now = time.time()
        self._changes.append((now, self.count_at(now), rps))

    def count_at(self, t: float) -> float:
        since, count, rps = next(c for c in reversed(self._changes) if c[0] <= t)
        return count + rps * (t - since)

    def close(self):
        self.server.shutdown()


class AdapterProcess:
    def __init__(self, identity: str, workdir: Path, kubeconfig: Path, spec: Path, triton,
                 prometheus: str):
        self.identity = identity
        self.port = free_port()
        self.log_path = workdir / f"adapter-{identity}.log"
        self._log = self.log_path.open("w")
        e = triton.endpoints
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "adapter", "run", "--cluster", f"--identity={identity}",
             f"--namespace={NS}", f"--deployment={DEPLOYMENT}", "--lease-name=text-search-leader",
             f"--lease-duration={LEASE_S}", f"--kubeconfig={kubeconfig}", f"--spec={spec}",
             f"--prometheus={prometheus}", "--interval=1", f"--triton-host={e.host}",
             f"--grpc-port={e.grpc_port}", f"--triton-metrics-port={e.metrics_port}",
             f"--metrics-port={self.port}", "--metrics-address=127.0.0.1"],
            cwd=paths.ROOT, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return 0, ""

    def status(self) -> dict | None:
        code, body = self.get("/status")
        return json.loads(body) if code == 200 else None

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()

    def log_tail(self) -> str:
        return kcp.tail(self.log_path, 25)


def _wait(what: str, predicate, timeout_s: float, processes=()):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    logs = "\n".join(f"--- {p.identity}:\n{p.log_tail()}" for p in processes)
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}\n{logs}")


def test_two_adapters_elect_one_leader_scale_converge_and_hand_over(
        plane, applied, admin, small_triton, tmp_path):
    server, models = small_triton
    # Clean slate for the processes: empty plan, one replica, free lease.
    core, apps = client.CoreV1Api(admin), client.AppsV1Api(admin)
    core.replace_namespaced_config_map("text-search-plan", NS, {"metadata": {"name": "text-search-plan"}, "data": {}})
    apps.patch_namespaced_deployment_scale(DEPLOYMENT, NS, {"spec": {"replicas": 1}})
    spec_path = tmp_path / "pipeline.yaml"
    spec_path.write_text(yaml.safe_dump(TEST_SPEC))
    kubeconfig = plane.kubeconfig(applied, tmp_path / "sa.kubeconfig", NS)  # the SA's own token
    prometheus = CannedPrometheus(rps=LOW_RPS)
    store = PlanStore(core, NS, "text_search")
    scale = lambda: apps.read_namespaced_deployment_scale(DEPLOYMENT, NS).spec.replicas
    procs = [AdapterProcess(i, tmp_path, kubeconfig, spec_path, server, prometheus.url)
             for i in ("adapter-a", "adapter-b")]
    try:
        # Exactly one leads.
        statuses = _wait("a leader", lambda: (lambda s: s if all(s) and any(x["is_leader"] for x in s) else None)(
            [p.status() for p in procs]), 30, procs)
        assert sum(s["is_leader"] for s in statuses) == 1, statuses
        leader = next(p for p, s in zip(procs, statuses) if s["is_leader"])
        follower = next(p for p in procs if p is not leader)

        # The leader publishes a plan for LOW_RPS and scales the Deployment to its pods.
        published = _wait("a published plan", store.read, 30, procs)
        assert published.plan.pods > 1
        _wait(f"replicas == {published.plan.pods}", lambda: scale() == published.plan.pods, 15, procs)
        # Both sidecars converge their Triton to it and only then report ready.
        for p in procs:
            _wait(f"{p.identity} ready at generation {published.generation}",
                  lambda p=p: p.get("/ready")[0] == 200 and
                  p.status()["generation"] == published.generation, 60, procs)
        steps = TritonActuator(ModelRepository(server.endpoints), "text_search", [], models).observe().ensemble_steps
        assert steps == tuple(s.model for s in published.plan.stages)

        # SIGKILL the leader: the other takes the lease within one lease period (+ one retry
        # period of polling), then plans a higher load into more pods.
        _, retry_s = lease_timing(LEASE_S)
        leases = client.CoordinationV1Api(admin)
        killed_at = time.monotonic()
        leader.kill()
        _wait("the follower to lead", lambda: (follower.status() or {}).get("is_leader"),
              LEASE_S + 2 * retry_s + 3, procs)
        handover_s = time.monotonic() - killed_at
        print(f"\nleader handover after SIGKILL: {handover_s:.1f} s (lease {LEASE_S} s, retry {retry_s:g} s)")
        assert handover_s <= LEASE_S + 2 * retry_s + 1.5
        assert leases.read_namespaced_lease("text-search-leader", NS).spec.holder_identity == follower.identity

        prometheus.rps = HIGH_RPS
        bigger = _wait("a plan with more pods", lambda: (lambda p: p if p and p.plan.pods > published.plan.pods else None)(
            store.read()), 30, procs)
        assert bigger.generation > published.generation
        _wait(f"replicas == {bigger.plan.pods}", lambda: scale() == bigger.plan.pods, 15, procs)
        _wait("the survivor converged", lambda: follower.status()["generation"] == bigger.generation, 60, procs)
        assert plan_from_dict(json.loads(bigger.text)).to_dict() == bigger.plan.to_dict()
        assert follower.alive()
    finally:
        for p in procs:
            p.stop()
        prometheus.close()
    # A graceful stop released the lease.
    lease = client.CoordinationV1Api(admin).read_namespaced_lease("text-search-leader", NS)
    assert not lease.spec.holder_identity


def test_the_test_loads_need_different_pod_counts():
    low, high = _plan(LOW_RPS), _plan(HIGH_RPS)
    assert low.feasible and high.feasible and 1 < low.pods < high.pods <= 4
