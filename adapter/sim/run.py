"""One simulated run: a workload, a policy, simulated Triton pods; the live results format.

    arrivals (trace-exact or Poisson) -> Engine (pods, batchers, instances, hand-offs)
          ^                                   | Triton-style counters every second
          |                                   v
    SimActuator <- Sidecar (the live adapter's loop code and pure policy) <- SimSource

The policy side is the live code itself: the `Sidecar` with its policy, predictor and history,
driven on a virtual clock; only the metrics source and the actuator are simulated. The
actuator takes as long as the live one: models load one after another (each variant's
measured `load_s`), the loop is blocked meanwhile and the old configuration keeps serving;
new pods join after `pod_start_s`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from adapter import paths
from adapter.core import policy as core_policy
from adapter.core.admission import DEFAULT, UNBOUNDED, Admission, same_rule
from adapter.core.plan import Plan
from adapter.core.planner import plan_pipeline
from adapter.core.policy import Decision, PolicyConfig, Reason
from adapter.core.predictor import make_predictor
from adapter.core.profile import Profiles, reconfiguration_s
from adapter.core.spec import PipelineSpec
from adapter.errors import ConfigError
from adapter.experiment import (POLICIES, accuracy_range, held_decision, per_second_rows, policy_setup,
                                summarise_run, write_results)
from adapter.monitor.metrics import observation_from_samples
from adapter.serving.actuator import settings_of
from adapter.serving.repository import read_config_pbtxt
from adapter.sidecar import LoopSettings, Sidecar, Tick
from adapter.sim.engine import Engine, StageConfig, stage_configs
from adapter.sim.oracle import optimal_schedule
from adapter.sim.service import ServiceTimes

SIM_POLICIES = POLICIES + ("oracle",)


@dataclass(frozen=True, kw_only=True)
class SimSettings:
    interval_s: float = 10.0  # between decisions, as `tpa run --interval`
    poisson: bool = False  # Poisson arrivals instead of the trace-exact schedule Locust sends
    seed: int = 0
    handoff_ms: float = 0.1  # ensemble: one step's output to the next step's queue
    pod_start_s: float = 30.0  # a new Triton pod: scheduled, started, models loaded, ready
    default_load_s: float = 2.0  # a variant whose profile has no measured load time
    repoint_s: float = 0.003  # reloading the ensemble with other steps (measured: 2-11 ms)
    drain_s: float = 10.0  # after the trace: requests unfinished by then count as failed
    warm_start: bool = False  # start on the policy's plan for the first second's load
    max_pods: int | None = None  # override the spec's limits.max_pods (the pool)
    lead_s: float = 0.0  # the adapter's loop starts this long before the trace's first request
    admission: Admission = DEFAULT  # each model's queue policy, as the live actuator's (core.admission)
    # Ablations: PolicyConfig fields replaced in the policy's own config, and another predictor.
    policy_overrides: tuple[tuple[str, object], ...] = ()
    predictor: str | None = None


class SimSource:
    """Triton's /metrics as the simulated pods would expose them, through the monitor's own
    window arithmetic (`observation_from_samples`)."""

    source = "simulator"

    def __init__(self, engine: Engine):
        self.engine = engine
        self.want_p99 = False  # the p99 summary is only computed for observations a decision reads
        self._previous = None

    def observe(self):
        current = self.engine.sample(with_p99=self.want_p99)
        previous, self._previous = self._previous, current
        if previous is None:
            return None
        return observation_from_samples(previous, current, source=self.source)


class SimActuator:
    """Applies a plan to the simulated pods with the live actuator's timing."""

    def __init__(self, engine: Engine, profiles: Profiles, settings: SimSettings):
        self.engine, self.profiles, self.settings = engine, profiles, settings
        self.configs: list[StageConfig] = []
        self.busy_s = 0.0  # how long the last reconcile blocked the loop

    def start(self, configs: list[StageConfig], pods: int = 1) -> None:
        self.configs = list(configs)
        for _ in range(pods):
            self.engine.add_pod(self.configs, ready_at=self.engine.now)

    def reconcile(self, plan: Plan) -> list[str]:
        """As the Triton actuator orders it: stage by stage, the quickest change first, each stage
        serving its new configuration once its own load is done (its step re-pointed then); a
        change of instances alone is an in-place update that starts only the added instances."""
        now = self.engine.now
        self.busy_s = 0.0
        desired, changes = stage_changes(self.configs, stage_configs(plan, admission=self.settings.admission),
                                         self.profiles, self.settings)
        actions: list[str] = []
        t = now
        for seconds, stage, old, new, update in changes:
            t += seconds
            kind = "update" if update else "reconfigure" if old.model == new.model else "new"
            queue = ("" if new.queue == UNBOUNDED else
                     f", queue <= {new.queue.max_queue_size or 'any'}, timeout {new.queue.timeout_us / 1000:g} ms")
            actions.append(f"{kind} {new.model}: {new.instances} instance(s), batch {new.batch}, "
                           f"queue delay {new.queue_delay_us} us{queue} ({(t - now) * 1000:.0f} ms)")
            for pod in self.engine.pods:
                self.engine.reconfigure(pod, stage, new, t)
            if old.model != new.model:
                actions.append(f"ensemble step {stage} -> {new.model}")
        self.configs = desired
        pods = len(self.engine.pods)
        if plan.pods > pods:  # the Deployment scales up; new pods start with the new configs
            for _ in range(plan.pods - pods):
                self.engine.add_pod(desired, ready_at=now + self.settings.pod_start_s)
            actions.append(f"scale {pods} -> {plan.pods} pods")
        elif plan.pods < pods:
            for pod in self.engine.pods[plan.pods:]:
                self.engine.remove_pod(pod)
            actions.append(f"scale {pods} -> {plan.pods} pods")
        self.busy_s = t - now
        return actions


def stage_changes(configs: list[StageConfig], desired: list[StageConfig], profiles: Profiles,
                  settings: SimSettings) -> tuple[list[StageConfig], list[tuple]]:
    """The stages a reconcile changes, in the order the actuator applies them (quickest first):
    (seconds it takes, stage, old config, new config, in-place update?); and the desired configs,
    keeping a queue policy that differs too little to be worth a reload."""
    desired, changes = list(desired), []
    for stage, (old, new) in enumerate(zip(configs, desired)):
        if old.model == new.model and same_rule(old.queue, new.queue):
            new = desired[stage] = replace(new, queue=old.queue)
        if old == new:
            continue
        update = replace(old, instances=new.instances) == new
        seconds = reconfiguration_s(profiles, new.model, new.instances, old.instances if update else None,
                                    settings.default_load_s)
        changes.append((seconds + (settings.repoint_s if old.model != new.model else 0.0), stage, old, new, update))
    return desired, sorted(changes, key=lambda c: c[:2])


def change_lead_s(before: Plan, after: Plan, profiles: Profiles, settings: SimSettings) -> float:
    """How long before it must be ready a change is issued: the actuator's reloads one after
    another, or a new pod's start."""
    if before is after:
        return 0.0
    _, changes = stage_changes(stage_configs(before, settings.admission), stage_configs(after, settings.admission),
                               profiles, settings)
    return max(sum(c[0] for c in changes), settings.pod_start_s if after.pods > before.pods else 0.0)


def repository_configs(spec: PipelineSpec, ensembles: Path = paths.ENSEMBLES,
                       models: Path = paths.MODEL_REPOSITORY) -> list[StageConfig]:
    """What a freshly started Triton serves: the ensemble's steps with their config.pbtxt."""
    ensemble = read_config_pbtxt(ensembles / spec.ensemble / "config.pbtxt")
    steps = [step["model_name"] for step in ensemble["ensemble_scheduling"]["step"]]
    configs = []
    for model in steps:
        s = settings_of(read_config_pbtxt(models / model / "config.pbtxt"))
        configs.append(StageConfig(model, s.preferred_batch_size, s.max_queue_delay_us, s.instances, s.queue))
    return configs


def sim_policy_setup(policy: str, spec: PipelineSpec, profiles: Profiles, target: list[float]):
    """The experiment harness's policies, and the oracle (the adapter's spec and planner; its
    plans come from `oracle.optimal_schedule`, not from a loop)."""
    if policy == "oracle":
        return policy_setup("adapter", spec, profiles, peak_rps=max(target, default=0.0))
    if policy in POLICIES:
        return policy_setup(policy, spec, profiles, peak_rps=max(target, default=0.0))
    raise ConfigError(f"policy: expected one of {', '.join(SIM_POLICIES)}, got {policy!r}")


@dataclass
class SimResult:
    summary: dict
    rows: list[dict]
    decisions: list[dict]
    stage_latency_ms: dict[str, np.ndarray]  # per stage: every request's time in that stage
    latency_ms: np.ndarray
    sent_s: np.ndarray


def simulate(spec: PipelineSpec, profiles: Profiles, series: np.ndarray, policy: str,
             settings: SimSettings = SimSettings(), workload: str = "trace",
             progress=None) -> SimResult:
    """Run one policy over a per-second rate series on simulated pods."""
    from adapter.workloads import arrival_times

    if settings.max_pods is not None:
        spec = dataclasses.replace(spec, limits=dataclasses.replace(spec.limits, max_pods=settings.max_pods))
    target = [float(v) for v in series]
    arrivals = arrival_times(series, poisson=settings.poisson, seed=settings.seed)
    service = ServiceTimes(profiles, max_batch=max(64, *(max(s.batch_sizes) for s in spec.stages)), seed=settings.seed)
    engine = Engine(spec.ensemble, len(spec.stages), arrivals, service, settings.handoff_ms)
    engine.now = -settings.lead_s
    actuator = SimActuator(engine, profiles, settings)
    source = SimSource(engine)
    clock = lambda: engine.now  # noqa: E731 - the loop's clock is the simulation's

    setup = sim_policy_setup(policy, spec, profiles, target)
    if settings.policy_overrides or settings.predictor:
        setup = replace(setup, config=replace(setup.config, **dict(settings.policy_overrides)),
                        predictor=make_predictor(settings.predictor) if settings.predictor else setup.predictor)

    ticks: list[tuple[float, Plan | None]] = []
    decisions: list[dict] = []

    def record(tick: Tick) -> None:
        when = engine.now + actuator.busy_s  # the live loop records a tick once it has applied it
        ticks.append((when, tick.decision.plan))
        decisions.append({"t": round(when, 3), "reason": tick.decision.reason.value,
                          "message": tick.decision.message, "actions": list(tick.actions),
                          "error": tick.error})

    sidecar = Sidecar(setup.spec, profiles, source, actuator, setup.predictor, config=setup.config,
                      settings=LoopSettings(interval_s=settings.interval_s), clock=clock, on_tick=record)
    static = None
    scheduled: list[tuple[float, Plan]] = []  # the oracle's changes: (issue time, plan)
    if policy == "oracle":
        lead = lambda before, after: change_lead_s(before, after, profiles, settings)  # noqa: E731
        schedule = optimal_schedule(setup.spec, profiles, series, settings.interval_s, lead,
                                    admission=settings.admission, headroom=setup.config.headroom)
        actuator.start(stage_configs(schedule.plans[0], settings.admission), schedule.plans[0].pods)
        record(Tick(0.0, held_decision(schedule.plans[0]), (), None))
        for e in range(1, len(schedule.plans)):
            before, plan = schedule.plans[e - 1], schedule.plans[e]
            if before is not plan:
                scheduled.append((e * settings.interval_s - lead(before, plan), plan))
    elif setup.static_rps is not None:
        static = plan_pipeline(setup.spec, profiles, setup.static_rps)
        actuator.start(stage_configs(static, settings.admission), static.pods)
        record(Tick(0.0, held_decision(static), (), None))
    elif settings.warm_start:
        first = plan_pipeline(setup.spec, profiles, target[0] if target else 0.0)
        actuator.start(stage_configs(first, settings.admission), first.pods)
        sidecar.state = core_policy.applied(sidecar.state, first)
        record(Tick(0.0, held_decision(first), (), None))
    else:
        actuator.start(repository_configs(spec))

    end = len(target)
    t = -settings.lead_s
    next_decision = t + settings.interval_s
    while t < end:
        engine.run_until(t)
        source.want_p99 = t + 1.0 >= next_decision
        sidecar.observe()
        while scheduled and scheduled[0][0] <= t:  # the oracle: no loop, its changes on time
            plan = scheduled.pop(0)[1]
            change = Decision(reason=Reason.APPLY, message="oracle schedule", plan=plan,
                              predicted_rps=plan.rps, planned_rps=plan.rps)
            record(Tick(t, change, tuple(actuator.reconcile(plan)), None))
            actuator.busy_s = 0.0
        due = t >= next_decision if static is not None else sidecar.decision_due(next_decision)
        if due and policy != "oracle":
            if static is not None:  # level-triggered: the static plan is only reconciled
                actions = tuple(actuator.reconcile(static))
                record(Tick(t, held_decision(static), actions, None))
            else:
                sidecar.decide_and_apply()
            # As Sidecar.run: a slow actuation skips the ticks it overran, no catch-up burst.
            next_decision = max(min(next_decision, t) + settings.interval_s,
                                t + actuator.busy_s + settings.interval_s / 2)
            t += actuator.busy_s
            actuator.busy_s = 0.0
        t += 1.0
        if progress is not None:
            progress(min(t, end))
    engine.run_until(end + settings.drain_s)

    finished = np.asarray(engine.finished)
    shed_at = np.asarray(engine.shed)
    shed = shed_at >= 0  # rejected at admission
    failed = (finished < 0) & ~shed  # still queued when the run ended
    sent = np.asarray(arrivals)
    latency_ms = np.where(shed, shed_at - sent,
                          np.where(failed, end + settings.drain_s - sent, finished - sent)) * 1000.0
    stage_ms = {}
    for s, stage in enumerate(spec.stages):
        entered, left = np.asarray(engine.stage_in[s]), np.asarray(engine.stage_out[s])
        done = left >= 0
        stage_ms[stage.name] = (left[done] - entered[done]) * 1000.0
    rows = per_second_rows(sent, latency_ms, failed, ticks, target, spec.sla_ms, accuracy_range(spec), shed=shed)
    summary = summarise_run(rows, latency_ms, failed, shed=shed, meta={
        "policy": policy, "workload": workload, "simulated": True,
        "arrivals": "poisson" if settings.poisson else "trace-exact", "interval_s": settings.interval_s,
        "sla_ms": spec.sla_ms, "seconds": end, "max_pods": spec.limits.max_pods,
        "decisions": sum(1 for d in decisions if d["reason"] == "Apply")})
    summary["stage_p99_ms"] = {name: round(float(np.percentile(ms, 99)), 2) if len(ms) else None
                               for name, ms in stage_ms.items()}
    summary["max_pods_used"] = max((p.pods for _, p in ticks if p is not None), default=1)
    return SimResult(summary, rows, decisions, stage_ms, latency_ms, sent)


def write_sim_results(out: Path, result: SimResult, spec: PipelineSpec) -> Path:
    """The live experiment's results folder: per_second.csv, summary.json, decisions.json, plot.png."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "decisions.json").write_text(json.dumps(result.decisions, indent=1) + "\n")
    result.summary["plot"] = str(write_results(out, result.rows, result.summary, [s.name for s in spec.stages]))
    return out
