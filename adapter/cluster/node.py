"""One sidecar in cluster mode: three loops and an HTTP endpoint.

    election  (thread)  LeaderElector.run: take or renew the Lease every retry period
    leader    (main)    while this pod leads: observe Prometheus (summed across pods), decide,
                        ClusterActuator.reconcile(plan) = publish the plan + scale the Deployment
    follower  (thread)  every pod, the leader too: read the published plan and reconcile the
                        local Triton to it (TritonActuator), level-triggered
    HTTP                /metrics, /ready (200 once the local Triton matches the published plan),
                        /healthz, /status (JSON)

Readiness: a pod reports ready once its Triton has converged to the published plan (or, while
nothing is published yet, once it could read that nothing is). It stays ready through later
plan changes: those are zero-downtime swaps on a serving Triton, and pulling every pod out of
the Service at once on each new plan would be the outage the swap avoids.
"""

from __future__ import annotations

import http.server
import json
import logging
import threading
import time
from typing import Callable

from prometheus_client import CONTENT_TYPE_LATEST, Gauge, generate_latest

from adapter.cluster.lease import LeaderElector
from adapter.cluster.plan_store import PlanStore
from adapter.cluster.scaler import DeploymentScaler
from adapter.core import policy
from adapter.core.plan import Plan
from adapter.errors import ServerError
from adapter.serving.actuator import ActuationError, TritonActuator
from adapter.sidecar import Sidecar

log = logging.getLogger(__name__)


class ClusterActuator:
    """The leader's actuator: `reconcile(plan)` publishes the plan and sets the Deployment's
    replicas to `plan.pods`. Refuses to write unless this pod holds the lease right now."""

    def __init__(self, store: PlanStore, scaler: DeploymentScaler, is_leader: Callable[[], bool]):
        self.store, self.scaler, self.is_leader = store, scaler, is_leader

    def reconcile(self, plan: Plan) -> list[str]:
        if not self.is_leader():
            raise ActuationError("not the leader any more (lease not renewed): nothing published")
        actions = []
        try:
            generation = self.store.publish(plan)
            if generation is not None:
                actions.append(f"published plan generation {generation} to {self.store.where}")
            scaled = self.scaler.scale_to(plan.pods)
            if scaled:
                actions.append(scaled)
        except ServerError as exc:  # retried with backoff inside; the next decision tries again
            raise ActuationError(str(exc)) from None
        return actions


class Follower:
    """Applies the published plan to the local Triton; knows whether it has converged."""

    def __init__(self, store: PlanStore, actuator: TritonActuator, poll_s: float = 2.0,
                 max_backoff_s: float = 30.0):
        self.store, self.actuator = store, actuator
        self.poll_s, self.max_backoff_s = poll_s, max_backoff_s
        self.ready = False
        self.generation: int | None = None  # the generation the local Triton last matched
        self.reason = "not converged yet: the published plan has not been read"
        self._backoff_s = 0.0
        self._last_logged = ""

    def step(self) -> bool:
        """Read the published plan and reconcile to it; True when the local Triton matches."""
        try:
            published = self.store.read()
            if published is None:
                self.ready, self.reason = True, "no plan published yet: Triton serves its repository's configs"
                return True
            actions = self.actuator.reconcile(published.plan)
        except ServerError as exc:  # API or Triton unreachable, or a change rolled back
            self._log_once(logging.WARNING, f"follower: {exc}")
            if not self.ready:
                self.reason = f"not converged: {exc}"
            return False
        if actions or self.generation != published.generation:
            log.info("follower: local Triton matches plan generation %d%s", published.generation,
                     f" ({len(actions)} change(s))" if actions else "")
        self.generation = published.generation
        self.ready, self.reason = True, f"converged to plan generation {published.generation}"
        self._last_logged = ""
        return True

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            if self.step():
                self._backoff_s = 0.0
            else:
                self._backoff_s = min(max(2 * self._backoff_s, self.poll_s), self.max_backoff_s)
            stop.wait(self._backoff_s or self.poll_s)

    def _log_once(self, level: int, message: str) -> None:
        if message != self._last_logged:
            log.log(level, message)
            self._last_logged = message


class ClusterNode:
    def __init__(self, sidecar: Sidecar, elector: LeaderElector, store: PlanStore,
                 follower: Follower, clock: Callable[[], float] = time.monotonic):
        self.sidecar, self.elector, self.store, self.follower = sidecar, elector, store, follower
        self.clock = clock
        self.leading = False
        self._heartbeat = clock()
        r = sidecar.metrics.registry
        self._leader_gauge = Gauge("tpa_leader", "1 while this sidecar holds the lease", registry=r)
        self._generation_gauge = Gauge("tpa_plan_generation",
                                       "Published plan generation the local Triton matches", registry=r)
        self._ready_gauge = Gauge("tpa_ready", "1 once the local Triton matches the published plan",
                                  registry=r)

    # -- status --------------------------------------------------------------------------

    def status(self) -> dict:
        return {"identity": self.elector.identity, "leader": self.elector.leader,
                "is_leader": self.elector.is_leader(), "ready": self.follower.ready,
                "reason": self.follower.reason, "generation": self.follower.generation}

    def alive(self) -> bool:
        return self.clock() - self._heartbeat < max(30.0, 3 * self.sidecar.settings.interval_s)

    # -- the leader loop -----------------------------------------------------------------

    def _start_leading(self) -> None:
        """Take over the plan in force, so switching costs and `Unchanged` holds carry on."""
        state = policy.PolicyState()
        try:
            published = self.store.read()
            if published is not None:
                state = policy.applied(state, published.plan)
        except ServerError as exc:
            log.warning("new leader could not read the published plan (%s); planning from scratch", exc)
        self.sidecar.state = state
        self.sidecar.history.clear()
        self.sidecar.latest = None
        log.info("%s leads: planning from Prometheus, publishing to %s", self.elector.identity,
                 self.store.where)

    def run(self, stop: threading.Event, duration_s: float | None = None) -> None:
        threads = [threading.Thread(target=self.elector.run, args=(stop,), name="election", daemon=True),
                   threading.Thread(target=self.follower.run, args=(stop,), name="follower", daemon=True)]
        for t in threads:
            t.start()
        start = self.clock()
        settings = self.sidecar.settings
        next_decision = 0.0
        try:
            while not stop.is_set():
                now = self.clock()
                self._heartbeat = now
                if duration_s is not None and now - start >= duration_s:
                    break
                leading = self.elector.is_leader()
                if leading and not self.leading:
                    self._start_leading()
                    next_decision = self.clock() + min(settings.interval_s, 2 * settings.observe_every_s)
                self.leading = leading
                if leading:
                    self.sidecar.observe()
                    if self.clock() >= next_decision:
                        self.sidecar.decide_and_apply()
                        next_decision = max(next_decision + settings.interval_s,
                                            self.clock() + settings.interval_s / 2)
                self._export()
                stop.wait(settings.observe_every_s)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=10)

    def _export(self) -> None:
        self._leader_gauge.set(1 if self.leading else 0)
        self._ready_gauge.set(1 if self.follower.ready else 0)
        if self.follower.generation is not None:
            self._generation_gauge.set(self.follower.generation)


# -- HTTP --------------------------------------------------------------------------------------

def serve_http(node: ClusterNode, port: int, host: str = "127.0.0.1") -> http.server.ThreadingHTTPServer:
    """/metrics, /ready, /healthz and /status on one port, in a daemon thread."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's naming
            path = self.path.split("?")[0]
            if path == "/metrics":
                self._send(200, generate_latest(node.sidecar.metrics.registry), CONTENT_TYPE_LATEST)
            elif path == "/ready":
                ok = node.follower.ready
                self._send(200 if ok else 503, (node.follower.reason + "\n").encode())
            elif path == "/healthz":
                ok = node.alive()
                self._send(200 if ok else 500, b"ok\n" if ok else b"control loop stalled\n")
            elif path == "/status":
                self._send(200, json.dumps(node.status()).encode(), "application/json")
            else:
                self._send(404, b"not found: try /metrics /ready /healthz /status\n")

        def _send(self, code: int, body: bytes, content_type: str = "text/plain; charset=utf-8"):
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):  # probes every few seconds: keep the log quiet
            pass

    server = http.server.ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    return server
