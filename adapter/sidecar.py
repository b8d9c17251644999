"""The control loop: observe every second, decide every interval, reconcile Triton.

    observe (MetricsSource) -> history -> decide (pure policy) -> reconcile (TritonActuator)

The history is the pipeline's arrival rate, one value per real second whichever source feeds it
(`ArrivalHistory`: a Prometheus source's per-second series merged by timestamp, or a Triton
source's window means spread over the seconds each window covers), so the predictor's lookback
is real time, not a count of observations.

It keeps running through faults: metrics missing or stale and Triton unreachable hold the plan
(retried with exponential backoff), a solver error keeps the current plan, a failed actuation is
rolled back by the actuator and reported. Each distinct message is logged once, not per tick.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from adapter.core import policy
from adapter.core.observation import ArrivalHistory, Observation
from adapter.core.plan import Plan
from adapter.core.predictor import Predictor
from adapter.core.profile import Profiles
from adapter.core.spec import PipelineSpec
from adapter.errors import ServerError
from adapter.monitor import MetricsSource
from adapter.serving.actuator import ActuationError, TritonActuator

log = logging.getLogger(__name__)


class AdapterMetrics:
    """The adapter's own metrics, on its /metrics endpoint."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.plan_instances = Gauge("tpa_plan_instances", "Triton instances per stage in the plan in force",
                                    ["stage", "model"], registry=r)
        self.plan_batch = Gauge("tpa_plan_batch_size", "Batch size per stage in the plan in force",
                                ["stage", "model"], registry=r)
        self.predicted_rps = Gauge("tpa_predicted_rps", "Load the predictor expects", registry=r)
        self.planned_rps = Gauge("tpa_planned_rps", "Load the plan is sized for", registry=r)
        self.observed_rps = Gauge("tpa_observed_rps", "Observed pipeline arrival rate (NaN: no metrics)",
                                  registry=r)
        self.predicted_p99 = Gauge("tpa_predicted_p99_ms", "The plan in force's predicted end-to-end p99",
                                   registry=r)
        self.observed_p99 = Gauge("tpa_observed_p99_ms", "Observed pipeline p99 (Triton summary)", registry=r)
        self.sla_miss = Gauge("tpa_sla_miss_estimate",
                              "Share of the last 30 observations whose pipeline p99 exceeded the SLA",
                              registry=r)
        self.latency_scale = Gauge("tpa_latency_scale", "Closed-loop correction of a model's profile",
                                   ["model"], registry=r)
        self.solve_seconds = Histogram("tpa_solve_seconds", "Planner solve time", registry=r,
                                       buckets=(.001, .005, .01, .05, .1, .5, 1, 5))
        self.actuation_seconds = Histogram("tpa_actuation_seconds", "Time to reconcile Triton",
                                           registry=r, buckets=(.01, .1, .5, 1, 2, 5, 10, 30))
        self.actuation_failures = Counter("tpa_actuation_failures", "Failed (rolled back) actuations",
                                          registry=r)
        self.decisions = Counter("tpa_decisions", "Decisions by reason", ["reason"], registry=r)
        self.metrics_failures = Counter("tpa_metrics_failures", "Failed metric reads", registry=r)
        self.triton_unreachable = Counter("tpa_triton_unreachable", "Failed Triton control calls",
                                          registry=r)
        self.plan_applied = Gauge("tpa_plan_applied",
                                  "1 when the plan in force is the one the last decision wanted, else 0",
                                  registry=r)
        self.observation_age = Gauge("tpa_observation_age_seconds",
                                     "Age of the metrics the last decision read (NaN: none yet)", registry=r)

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        start_http_server(port, addr=host, registry=self.registry)


@dataclass(frozen=True)
class LoopSettings:
    interval_s: float = 10.0
    observe_every_s: float = 1.0
    history_s: int = 600
    max_backoff_s: float = 60.0


@dataclass(frozen=True)
class Tick:
    """What one decision did, for the caller (demo, experiments) to record."""

    time_s: float
    decision: policy.Decision
    actions: tuple[str, ...]
    error: str | None


class Sidecar:
    def __init__(self, spec: PipelineSpec, profiles: Profiles, source: MetricsSource,
                 actuator: TritonActuator, predictor: Predictor,
                 config: policy.PolicyConfig = policy.PolicyConfig(),
                 settings: LoopSettings = LoopSettings(), metrics: AdapterMetrics | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 on_tick: Callable[[Tick], None] | None = None):
        self.spec, self.profiles, self.source = spec, profiles, source
        self.actuator, self.predictor, self.config = actuator, predictor, config
        self.settings = settings
        self.metrics = metrics or AdapterMetrics()
        self.clock = clock
        self.on_tick = on_tick
        self.state = policy.PolicyState()
        self.history = ArrivalHistory(spec.ensemble, settings.history_s)
        self.latest: Observation | None = None
        self._sla_misses: deque[bool] = deque(maxlen=30)
        self._last_logged = ""
        self._retry_at = 0.0
        self._backoff_s = 0.0

    # -- observe -------------------------------------------------------------------------------

    def observe(self) -> None:
        try:
            obs = self.source.observe()
        except ServerError as exc:
            self.metrics.metrics_failures.inc()
            self.metrics.observed_rps.set(math.nan)  # unknown, not the last value seen
            self._log_once(logging.WARNING, f"metrics unavailable: {exc}")
            return
        if obs is None:
            return
        self.latest = obs
        rps = obs.rps(self.spec.ensemble)
        self.history.add(obs)
        self.metrics.observed_rps.set(rps)
        stats = obs.models.get(self.spec.ensemble)
        if stats is not None and stats.p99_ms is not None:
            self.metrics.observed_p99.set(stats.p99_ms)
            self._sla_misses.append(stats.p99_ms > self.spec.sla_ms)
            self.metrics.sla_miss.set(sum(self._sla_misses) / len(self._sla_misses))

    # -- decide and apply ----------------------------------------------------------------------

    def decide_and_apply(self) -> Tick:
        now = self.clock()
        inputs = policy.PolicyInputs(spec=self.spec, profiles=self.profiles,
                                     predictor=self.predictor, history_rps=self.history.rates(),
                                     observation=self.latest,
                                     config=dataclasses.replace(self.config, interval_s=self.settings.interval_s))
        start = time.perf_counter()
        decision, self.state = policy.decide(inputs, self.state, now)
        self.metrics.solve_seconds.observe(time.perf_counter() - start)
        self.metrics.decisions.labels(decision.reason.value).inc()
        self._export_decision(decision)
        if decision.reason is not policy.Reason.APPLY:
            self._log_once(logging.INFO, decision.message)
        else:
            log.info(decision.message)
        actions: tuple[str, ...] = ()
        error = None
        # Level-triggered: the plan in force is reconciled every interval, so a restarted
        # Triton (configs back to their defaults) converges without a special case.
        target = decision.plan
        if target is not None and now >= self._retry_at:
            start = time.perf_counter()
            try:
                actions = tuple(self.actuator.reconcile(target))
                self._backoff_s = 0.0
                if decision.reason is policy.Reason.APPLY:
                    self.state = policy.applied(self.state, target)
            except ActuationError as exc:
                self.metrics.actuation_failures.inc()
                error = str(exc)
                log.error("actuation failed: %s", exc)
                if exc.model is not None:
                    self.state = policy.failed_to_load(self.state, exc.model, now, inputs.config)
                    log.warning("%s sits out of planning for %.0f s", exc.model, self.state.failed[exc.model][1])
            except ServerError as exc:
                self.metrics.triton_unreachable.inc()
                self._backoff_s = min(max(2 * self._backoff_s, self.settings.interval_s),
                                      self.settings.max_backoff_s)
                self._retry_at = now + self._backoff_s
                error = str(exc)
                self._log_once(logging.WARNING, f"Triton unreachable, holding the plan and "
                                                f"retrying in {self._backoff_s:.0f} s: {exc}")
            if actions:
                self.metrics.actuation_seconds.observe(time.perf_counter() - start)
        self._export_plan(self.state.current)  # what is in force, not what failed to apply
        self.metrics.plan_applied.set(float(policy.same_configuration(target, self.state.current)))
        self.metrics.observation_age.set(now - self.latest.time_s if self.latest is not None else math.nan)
        tick = Tick(now, decision, actions, error)
        if self.on_tick:
            self.on_tick(tick)
        return tick

    def _export_decision(self, decision: policy.Decision) -> None:
        if decision.predicted_rps is not None:
            self.metrics.predicted_rps.set(decision.predicted_rps)
        if decision.planned_rps is not None:  # None when planning failed
            self.metrics.planned_rps.set(decision.planned_rps)
        for model, scale in self.state.latency_scale.items():
            self.metrics.latency_scale.labels(model).set(scale)

    def _export_plan(self, plan: Plan | None) -> None:
        if plan is None:
            return
        self.metrics.predicted_p99.set(plan.predicted_p99_ms)
        self.metrics.plan_instances.clear()
        self.metrics.plan_batch.clear()
        for stage in plan.stages:
            for v in stage.variants:
                self.metrics.plan_instances.labels(stage.stage, v.model).set(v.instances)
                self.metrics.plan_batch.labels(stage.stage, v.model).set(v.max_batch_size)

    def _log_once(self, level: int, message: str) -> None:
        if message != self._last_logged:
            log.log(level, message)
            self._last_logged = message

    # -- loop ----------------------------------------------------------------------------------

    def decision_due(self, next_decision: float) -> bool:
        """The interval is up, or the arrivals have outgrown the plan in force."""
        return self.clock() >= next_decision or policy.overloaded(self.history.rates(), self.state.current, self.config)

    def run(self, stop: threading.Event, duration_s: float | None = None) -> None:
        start = self.clock()
        next_decision = start + self.settings.interval_s
        while not stop.is_set():
            now = self.clock()
            if duration_s is not None and now - start >= duration_s:
                return
            self.observe()
            if self.decision_due(next_decision):
                self.decide_and_apply()
                # A slow actuation (a model reload) skips the ticks it overran, no catch-up burst;
                # after an early (overload) decision the next one is an interval later.
                next_decision = max(min(next_decision, now) + self.settings.interval_s,
                                    self.clock() + self.settings.interval_s / 2)
            stop.wait(self.settings.observe_every_s)
