"""Discrete-event model of Triton pods serving one ensemble pipeline.

    arrival -> load balancer (a ready pod, round robin) -> stage 0's model in that pod
            -> dynamic batcher -> an instance -> hand-off -> stage 1's model ... -> done

What it models, and how Triton does it:
- **Dynamic batcher** (per model, per pod): a batch is formed only when an instance is free.
  It is sent at once when the queue holds the preferred batch size (the planner's b), or when
  the oldest request has waited `max_queue_delay`; it holds at most the preferred size (Triton
  stops forming at the largest preferred size). Delay 0 sends whatever is queued.
- **Instances**: `instances` batches run at once; they share the pod's cores (service.py).
- **Ensemble hand-off**: each finished batch's requests go on to the next step's model in the
  same pod, as separate requests, after `handoff_ms`.
- **Admission** (Triton's queue policy, `core.admission`): a request arriving at a model whose
  queue holds `max_queue_size` requests is rejected at once; a queued request that has waited
  longer than the timeout is rejected when the batcher reaches it (forming a batch), never
  computed. Rejected requests are *shed*: `Engine.shed` holds when. Counters as Triton 2.51
  keeps them (measured): a timeout counts one failure on the model, a full queue none; the
  ensemble counts two failures per shed request. (Triton also sweeps expired requests out of
  a queue every 500 ms while no instance is free; here they leave when the batcher reaches
  them, so they are shed at most one service time later.)
- **Reconfiguration**: a new configuration of a stage (another variant, or the same model
  reloaded with other instances or batching) serves the requests that reach the stage after it
  is ready; requests already queued finish on the old one, as Triton's reload drains them.
  Of two configurations of a stage in flight, the one issued later stays, whichever is ready
  last (a pod reconfigured while it starts comes up with the newer one).
  New pods join the load balancer when ready; removed pods stop receiving and drain.

Time is in seconds. Requests are integers; their timestamps live in flat lists.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
from collections import deque
from dataclasses import dataclass

import numpy as np

from adapter.core.admission import DEFAULT, UNBOUNDED, Admission, QueuePolicy, queue_policies
from adapter.core.plan import Plan
from adapter.errors import ServerError
from adapter.monitor.metrics import ModelCounters, Sample
from adapter.sim.service import ServiceTimes

_DONE, _TIMER, _HANDOFF, _ACTIVATE = 0, 1, 2, 3
P99_WINDOW_S = 60.0  # Triton's summary quantiles cover about the last minute


@dataclass(frozen=True)
class StageConfig:
    """What one stage's model has loaded: Triton config.pbtxt fields the batcher reads."""

    model: str
    batch: int  # preferred batch size (the planner's b); batches never exceed it
    queue_delay_us: int
    instances: int
    queue: QueuePolicy = UNBOUNDED  # dynamic_batching.default_queue_policy


def stage_configs(plan: Plan, admission: Admission | str = DEFAULT) -> list[StageConfig]:
    """The plan as each stage's loaded configuration, with the admission rule's queue policy as
    the live actuator writes it."""
    configs = []
    for stage in plan.stages:
        if len(stage.variants) != 1:
            raise ServerError(f"stage {stage.stage}: the simulator applies single-variant plans, "
                              f"like the Triton actuator")
    policies = queue_policies(plan, admission)
    for stage in plan.stages:
        v = stage.variants[0]
        configs.append(StageConfig(v.model, v.max_batch_size, v.max_queue_delay_us, v.instances,
                                   policies.get(v.model, UNBOUNDED)))
    return configs


class ModelServer:
    """One model (one configuration) in one pod: its queue, its instances, its counters."""

    __slots__ = ("config", "stage", "pod", "queue", "busy", "timer_at", "stats", "delay_s", "max_queue",
                 "timeout_s")

    def __init__(self, config: StageConfig, stage: int, pod: "Pod", stats: "ModelStatsLog"):
        self.config, self.stage, self.pod, self.stats = config, stage, pod, stats
        self.queue: deque[tuple[float, int]] = deque()  # (enqueue time, request)
        self.busy = 0
        self.timer_at = -1.0
        self.delay_s = config.queue_delay_us / 1e6
        self.max_queue = config.queue.max_queue_size  # 0: unbounded
        rejects = config.queue.timeout_action == "REJECT"
        self.timeout_s = config.queue.timeout_us / 1e6 if rejects else 0.0  # 0: no timeout


class Pod:
    __slots__ = ("name", "servers", "ready", "issued")

    def __init__(self, name: str, servers: list[ModelServer | None]):
        self.name, self.servers, self.ready = name, servers, False
        # Per stage: when the configuration in force was issued. A slow load that finishes after
        # a newer one is in force (a starting pod reconfigured before it is ready) is dropped.
        self.issued: list[int] = [-1] * len(servers)


class ModelStatsLog:
    """Cumulative Triton-style counters of one model over all pods, plus recent latencies for
    the p99 summary."""

    __slots__ = ("success", "failure", "executions", "queue_s", "compute_s", "pending", "done_t", "latency_s")

    def __init__(self):
        self.success = self.failure = self.executions = 0
        self.queue_s = self.compute_s = 0.0
        self.pending = 0
        self.done_t: list[float] = []
        self.latency_s: list[float] = []

    def p99_us(self, now: float) -> float | None:
        start = bisect.bisect_left(self.done_t, now - P99_WINDOW_S)
        if start >= len(self.done_t):
            return None
        recent = np.asarray(self.latency_s[start:])
        return float(np.percentile(recent, 99)) * 1e6


class Engine:
    def __init__(self, ensemble: str, stages: int, arrivals: np.ndarray, service: ServiceTimes,
                 handoff_ms: float = 0.0):
        self.ensemble, self.n_stages = ensemble, stages
        self.arrivals = arrivals
        self.service = service
        self.handoff_s = handoff_ms / 1000.0
        self.now = 0.0
        n = len(arrivals)
        # Per request: when it entered each stage and left it, and when it finished (-1: not yet).
        self.stage_in = [[-1.0] * n for _ in range(stages)]
        self.stage_out = [[-1.0] * n for _ in range(stages)]
        self.finished = [-1.0] * n
        self.shed = [-1.0] * n  # when a request was rejected at admission (-1: it was not)
        self.rejected_full = self.rejected_timeout = 0
        self.pods: list[Pod] = []
        self.stats: dict[str, ModelStatsLog] = {ensemble: ModelStatsLog()}
        self._next_arrival = 0
        self._events: list[tuple] = []
        self._seq = itertools.count()
        self._ready: list[Pod] = []  # the load balancer's endpoints
        self._waiting: list[int] = []  # arrivals while no pod was ready
        self._rr = 0
        self._in_flight = 0

    # -- configuration ---------------------------------------------------------------------------

    def add_pod(self, configs: list[StageConfig], ready_at: float) -> Pod:
        pod = Pod(f"pod-{len(self.pods)}", [None] * self.n_stages)
        self.pods.append(pod)
        for stage, config in enumerate(configs):
            self.reconfigure(pod, stage, config, ready_at)
        self._push(ready_at, _ACTIVATE, (pod, -1, None), None)  # after its stages: join the LB
        return pod

    def remove_pod(self, pod: Pod) -> None:
        """Out of the load balancer now; what it holds drains."""
        pod.ready = False
        self.pods.remove(pod)
        self._ready = [p for p in self.pods if p.ready]

    def reconfigure(self, pod: Pod, stage: int, config: StageConfig, ready_at: float) -> None:
        self._push(ready_at, _ACTIVATE, (pod, stage, config), next(self._seq))

    def ready_pods(self) -> list[Pod]:
        return list(self._ready)

    # -- running ---------------------------------------------------------------------------------

    def _push(self, t: float, kind: int, a, b) -> None:
        heapq.heappush(self._events, (t, next(self._seq), kind, a, b))

    def run_until(self, t_end: float) -> None:
        """Process every arrival and event up to t_end (inclusive)."""
        events, arrivals = self._events, self.arrivals
        n = len(arrivals)
        while True:
            next_event = events[0][0] if events else float("inf")
            i = self._next_arrival
            next_arrival = arrivals[i] if i < n else float("inf")
            if min(next_event, next_arrival) > t_end:
                break
            if next_arrival <= next_event:
                self.now = float(next_arrival)
                self._next_arrival = i + 1
                self._arrive(i)
                continue
            t, _, kind, a, b = heapq.heappop(events)
            self.now = t
            if kind == _DONE:
                self._done(a, b)
            elif kind == _TIMER:
                a.timer_at = -1.0
                self._dispatch(a)
            elif kind == _HANDOFF:
                self._enter(a, b)
            else:
                self._activate(*a, issued=b)
        self.now = t_end

    def _arrive(self, request: int) -> None:
        ready = self._ready
        ens = self.stats[self.ensemble]
        self._in_flight += 1
        ens.pending = self._in_flight
        if not ready:  # no pod can take it yet: it waits at the load balancer for the first one
            self._waiting.append(request)
            return
        self._rr = (self._rr + 1) % len(ready)
        self._enter(ready[self._rr].servers[0], [request])

    def _enter(self, server: ModelServer, requests: list[int]) -> None:
        # The pod's current server for the stage, whoever finished the batch before it.
        current = server.pod.servers[server.stage]
        if current is not None:
            server = current
        now = self.now
        stage_in = self.stage_in[server.stage]
        queue, bound = server.queue, server.max_queue
        for r in requests:
            stage_in[r] = now
            if bound and len(queue) >= bound:  # Triton: "Exceeds maximum queue size", at once
                self.rejected_full += 1
                self._reject(r)
                continue
            queue.append((now, r))
            server.stats.pending += 1
        self._dispatch(server)

    def _reject(self, request: int) -> None:
        self.shed[request] = self.now
        ens = self.stats[self.ensemble]
        ens.failure += 2  # Triton 2.51 counts each failed ensemble request twice
        self._in_flight -= 1
        ens.pending = self._in_flight

    def _time_out(self, server: ModelServer, request: int) -> None:
        """Triton: "Request timeout expired", when the batcher reaches the request."""
        self.rejected_timeout += 1
        server.stats.pending -= 1
        server.stats.failure += 1  # counted on the model (reason REJECTED)
        self._reject(request)

    def _dispatch(self, server: ModelServer) -> None:
        config = server.config
        queue = server.queue
        now = self.now
        timeout = server.timeout_s
        while queue and server.busy < config.instances:
            if timeout > 0:  # the batcher rejects the expired requests it reaches
                while queue and now - queue[0][0] > timeout + 1e-12:
                    self._time_out(server, queue.popleft()[1])
                if not queue:
                    return
            if len(queue) < config.batch and now < queue[0][0] + server.delay_s - 1e-12:
                due = queue[0][0] + server.delay_s
                if server.timer_at < 0 or server.timer_at > due:
                    server.timer_at = due
                    self._push(due, _TIMER, server, None)
                return
            if timeout > 0:
                batch = []
                while queue and len(batch) < config.batch:
                    entered, r = queue.popleft()
                    if now - entered > timeout + 1e-12:
                        self._time_out(server, r)
                    else:
                        batch.append((entered, r))
                if not batch:
                    continue
            else:
                batch = [queue.popleft() for _ in range(min(len(queue), config.batch))]
            size = len(batch)
            server.busy += 1
            server.stats.pending -= size
            service_s = self.service.draw_s(config.model, size, server.busy)
            self._push(now + service_s, _DONE, server, (batch, now))

    def _done(self, server: ModelServer, payload) -> None:
        batch, started = payload
        now = self.now
        server.busy -= 1
        stats = server.stats
        stats.success += len(batch)
        stats.executions += 1
        stats.compute_s += (now - started) * len(batch)
        stage = server.stage
        stage_out = self.stage_out[stage]
        requests = []
        for entered, r in batch:
            stats.queue_s += started - entered
            stats.done_t.append(now)
            stats.latency_s.append(now - entered)
            stage_out[r] = now
            requests.append(r)
        if stage + 1 < self.n_stages:
            nxt = server.pod.servers[stage + 1]
            if self.handoff_s > 0:
                self._push(now + self.handoff_s, _HANDOFF, nxt, requests)
            else:
                self._enter(nxt, requests)
        else:
            ens = self.stats[self.ensemble]
            arrivals = self.arrivals
            for r in requests:
                self.finished[r] = now
                ens.done_t.append(now)
                ens.latency_s.append(now - arrivals[r])
            ens.success += len(requests)
            ens.executions += len(requests)
            self._in_flight -= len(requests)
            ens.pending = self._in_flight
        self._dispatch(server)

    def _activate(self, pod: Pod, stage: int, config: StageConfig | None, issued: int | None) -> None:
        if stage < 0:  # every stage of a new pod is ready: it joins the load balancer
            if pod in self.pods:
                pod.ready = True
                self._ready = [p for p in self.pods if p.ready]
                waiting, self._waiting = self._waiting, []
                for r in waiting:
                    self._enter(pod.servers[0], [r])
            return
        if issued < pod.issued[stage]:  # superseded while it loaded
            return
        pod.issued[stage] = issued
        stats = self.stats.setdefault(config.model, ModelStatsLog())
        pod.servers[stage] = ModelServer(config, stage, pod, stats)

    # -- what Triton's /metrics would say ----------------------------------------------------------

    def sample(self, with_p99: bool = True) -> Sample:
        now = self.now
        models = {}
        for model, s in self.stats.items():
            models[model] = ModelCounters(
                success=float(s.success), failure=float(s.failure), inferences=float(s.success),
                executions=float(s.executions),
                queue_us=s.queue_s * 1e6, compute_us=s.compute_s * 1e6, pending=float(s.pending),
                p99_us=s.p99_us(now) if with_p99 else None)
        return Sample(time_s=now, models=models)
