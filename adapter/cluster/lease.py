"""Leader election on a coordination.k8s.io/v1 Lease, the way client-go's leaderelection does it.

Why not `kubernetes.leaderelection` (the python client's helper, with a LeaseLock since 37.0)?
It reads `time.time()` itself (no injected clock), calls `sys.exit` on bad settings, builds its
lock on the global default client (so a ServiceAccount's own client cannot be passed in), and its
`run()` returns for good once leadership is lost (no stop event, no re-joining as a candidate).
This module keeps its semantics and fixes those four points.

Rules (client-go's):
1. The Lease names its holder (`holderIdentity`), how long a renewal counts
   (`leaseDurationSeconds`), and when it was acquired and last renewed (`acquireTime`,
   `renewTime`). Every write is a full replace carrying the `resourceVersion` that was read, so
   two candidates writing at once cannot both win: the loser gets 409 Conflict and re-reads.
2. A candidate judges expiry on its *own* clock: a record it has seen unchanged for
   `leaseDurationSeconds` is expired. Clocks of different nodes never get compared.
3. The leader renews every `retry_period_s`; if it has not renewed for `renew_deadline_s`
   (< lease duration), it stops acting as leader before anyone else may take over.
4. An empty holder (a released lease) may be taken at once.
Consequence: a leader that dies is replaced within one lease duration of its last renewal
(as seen by the others) plus at most one retry period; a graceful stop releases the lease and
hands over within one retry period.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

from kubernetes import client
from kubernetes.client.rest import ApiException

from adapter.cluster.kube import REQUEST_TIMEOUT_S, describe, is_transient, status_of
from adapter.errors import ConfigError

log = logging.getLogger(__name__)


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def micro_time(t: datetime) -> str:
    """Kubernetes MicroTime (RFC 3339 with exactly 6 fractional digits, UTC)."""
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class LeaseRecord:
    holder: str | None
    duration_s: int | None
    renew_time: str | None  # as the server returned it; only compared for change
    transitions: int
    resource_version: str

    @classmethod
    def of(cls, lease: client.V1Lease) -> "LeaseRecord":
        spec = lease.spec or client.V1LeaseSpec()
        return cls(holder=spec.holder_identity or None, duration_s=spec.lease_duration_seconds,
                   renew_time=str(spec.renew_time) if spec.renew_time else None,
                   transitions=spec.lease_transitions or 0,
                   resource_version=lease.metadata.resource_version)


class LeaderElector:
    """One candidate. `try_acquire_or_renew()` is one step (read, judge, write); `run()` loops
    it every retry period until `stop` is set. `is_leader()` is what the caller checks before
    acting as leader (it turns False by itself once renewals have failed for the deadline)."""

    def __init__(self, api: client.CoordinationV1Api, namespace: str, name: str, identity: str, *,
                 lease_duration_s: float = 15.0, renew_deadline_s: float = 10.0,
                 retry_period_s: float = 2.0, clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], datetime] = utc_now):
        if not identity:
            raise ConfigError("leader election: `identity` must not be empty (set POD_NAME or "
                              "--identity)")
        if not lease_duration_s > renew_deadline_s > retry_period_s > 0:
            raise ConfigError(
                f"leader election: expected lease_duration_s ({lease_duration_s:g}) > "
                f"renew_deadline_s ({renew_deadline_s:g}) > retry_period_s ({retry_period_s:g}) > 0")
        if lease_duration_s != int(lease_duration_s) or lease_duration_s < 1:
            raise ConfigError(f"leader election: lease_duration_s must be a whole number of "
                              f"seconds >= 1 (leaseDurationSeconds), got {lease_duration_s:g}")
        self.api, self.namespace, self.name, self.identity = api, namespace, name, identity
        self.lease_duration_s = int(lease_duration_s)
        self.renew_deadline_s = renew_deadline_s
        self.retry_period_s = retry_period_s
        self.clock, self.wall_clock = clock, wall_clock
        self.observed: LeaseRecord | None = None
        self._observed_at = 0.0  # our clock when `observed` last changed
        self._renewed_at: float | None = None  # our clock at our last successful write as holder
        self._last_error = ""

    # -- state -----------------------------------------------------------------------------

    def is_leader(self) -> bool:
        return (self._renewed_at is not None
                and self.clock() - self._renewed_at < self.renew_deadline_s)

    @property
    def leader(self) -> str | None:
        """The holder as last seen (ourselves included)."""
        return self.observed.holder if self.observed else None

    # -- one step --------------------------------------------------------------------------

    def try_acquire_or_renew(self) -> bool:
        """Read the Lease and take or renew it when allowed. True when we hold it now. API
        failures are logged and count as a failed attempt; they never raise."""
        now = self.clock()
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace,
                                                   _request_timeout=REQUEST_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - classified below; the loop must go on
            if status_of(exc) == 404:
                return self._create(now)
            return self._failed("read", exc)
        record = LeaseRecord.of(lease)
        if self.observed is None or (record.holder, record.renew_time) != (
                self.observed.holder, self.observed.renew_time):
            if self.observed and record.holder != self.observed.holder:
                log.info("lease %s/%s: leader is now %s", self.namespace, self.name,
                         record.holder or "(nobody)")
            self._observed_at = now
        self.observed = record
        if record.holder and record.holder != self.identity:
            self._renewed_at = None  # someone else holds it: whatever we thought, we lead no more
            duration = record.duration_s or self.lease_duration_s
            if now - self._observed_at < duration:
                return False
            log.info("lease %s/%s: %s has not renewed for %d s; taking over", self.namespace,
                     self.name, record.holder, duration)
        return self._write(lease, record, now)

    def _spec(self, acquire: bool, previous: LeaseRecord | None) -> dict[str, Any]:
        stamp = micro_time(self.wall_clock())
        spec = {"holderIdentity": self.identity, "leaseDurationSeconds": self.lease_duration_s,
                "renewTime": stamp}
        if acquire:
            spec["acquireTime"] = stamp
            spec["leaseTransitions"] = (previous.transitions + 1
                                        if previous and previous.holder else
                                        previous.transitions if previous else 0)
        return spec

    def _create(self, now: float) -> bool:
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": self._spec(acquire=True, previous=None)}
        try:
            lease = self.api.create_namespaced_lease(self.namespace, body,
                                                     _request_timeout=REQUEST_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - 409: another candidate created it first
            return self._failed("create", exc)
        return self._won(lease, now)

    def _write(self, lease: client.V1Lease, record: LeaseRecord, now: float) -> bool:
        acquire = record.holder != self.identity
        spec = {**self._current_spec(lease), **self._spec(acquire, record)}
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace,
                             "resourceVersion": record.resource_version},
                "spec": spec}
        try:
            written = self.api.replace_namespaced_lease(self.name, self.namespace, body,
                                                        _request_timeout=REQUEST_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - 409: someone wrote since our read
            return self._failed("acquire" if acquire else "renew", exc)
        if acquire:
            log.info("lease %s/%s: %s is the leader", self.namespace, self.name, self.identity)
        return self._won(written, now)

    @staticmethod
    def _current_spec(lease: client.V1Lease) -> dict[str, Any]:
        spec = lease.spec
        if spec is None:
            return {}
        out: dict[str, Any] = {}
        if spec.acquire_time:
            out["acquireTime"] = micro_time(spec.acquire_time)
        if spec.lease_transitions is not None:
            out["leaseTransitions"] = spec.lease_transitions
        return out

    def _won(self, lease: client.V1Lease, now: float) -> bool:
        self.observed = LeaseRecord.of(lease)
        self._observed_at = now
        self._renewed_at = now
        self._last_error = ""
        return True

    def _failed(self, what: str, exc: BaseException) -> bool:
        message = f"lease {self.namespace}/{self.name}: {what} failed: {describe(exc)}"
        if status_of(exc) == 409:
            log.debug("%s (another candidate wrote first)", message)
        elif message != self._last_error:
            log.log(logging.WARNING if is_transient(exc) else logging.ERROR, message)
            self._last_error = message
        return False

    # -- release and loop ------------------------------------------------------------------

    def release(self) -> None:
        """On a graceful stop: give the lease up so another candidate takes it at once."""
        if self._renewed_at is None:
            return
        self._renewed_at = None
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace,
                                                   _request_timeout=REQUEST_TIMEOUT_S)
            if (lease.spec and lease.spec.holder_identity) != self.identity:
                return
            body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace,
                                 "resourceVersion": lease.metadata.resource_version},
                    "spec": {**self._current_spec(lease), "holderIdentity": None,
                             "leaseDurationSeconds": 1, "renewTime": micro_time(self.wall_clock())}}
            self.api.replace_namespaced_lease(self.name, self.namespace, body,
                                              _request_timeout=REQUEST_TIMEOUT_S)
            log.info("lease %s/%s: released by %s", self.namespace, self.name, self.identity)
        except Exception as exc:  # noqa: BLE001 - the lease then expires on its own
            log.warning("lease %s/%s: release failed (%s); it expires in %d s", self.namespace,
                        self.name, describe(exc), self.lease_duration_s)

    def run(self, stop: threading.Event,
            on_change: Callable[[bool], None] | None = None) -> None:
        """Try every retry period until `stop`; `on_change(is_leader)` on every transition.
        Releases the lease on the way out."""
        leading = False
        while not stop.is_set():
            self.try_acquire_or_renew()
            now_leading = self.is_leader()
            if now_leading != leading:
                leading = now_leading
                if not leading:
                    log.warning("lease %s/%s: %s is no longer the leader", self.namespace,
                                self.name, self.identity)
                if on_change:
                    on_change(leading)
            stop.wait(self.retry_period_s)
        self.release()
        if leading and on_change:
            on_change(False)
