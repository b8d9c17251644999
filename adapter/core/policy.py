"""The adapter's decision step, pure: `decide(inputs, state, now_s) -> (Decision, state)`.

Named stages, each testable alone:
  correct   observed stage latency vs. what the profile predicts at the observed load ->
            per-model latency scale (closed loop: a wrong profile cannot keep the SLA broken)
  predict   per-second arrival history -> rps to provision (pluggable predictor)
  stabilise scale up at once; scale down only to the highest prediction of the last
            `scale_down_window_s` (HPA's stabilisation window, on injected timestamps)
  plan      the planner, with the current plan's switching cost and corrected profiles
  hold      apply only when the plan's configuration differs from the current one
Every hold carries a `Reason` and a message, for the log and the adapter's metrics.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import Enum
from typing import Callable, Mapping, Sequence

from adapter.core.latency import stage_model
from adapter.core.observation import Observation
from adapter.core.plan import Mode, Plan
from adapter.core.planner import plan_pipeline
from adapter.core.predictor import Predictor
from adapter.core.profile import Profiles
from adapter.core.spec import PipelineSpec
from adapter.errors import AdapterError


class Reason(str, Enum):
    APPLY = "Apply"  # a new plan to apply
    UNCHANGED = "Unchanged"  # the best plan is the one already applied
    NO_METRICS = "NoMetrics"  # no fresh observation: hold the plan
    SOLVER_ERROR = "SolverError"  # planning failed: keep the current plan


@dataclass(frozen=True, kw_only=True)
class PolicyConfig:
    scale_down_window_s: float = 60.0
    stale_after_s: float = 30.0  # an observation older than this is not acted on
    mode: Mode = Mode.SINGLE
    solver: str = "exact"
    # Closed-loop correction: the latency scale moves by (observed / predicted) ** gain per
    # decision, inside [1, max_latency_scale]; it only starts on models that carry traffic.
    correction_gain: float = 0.5
    max_latency_scale: float = 4.0
    min_rps_for_correction: float = 1.0
    tolerance: float = 0.1  # |ratio - 1| below this is noise, not a wrong profile


@dataclass(frozen=True, kw_only=True)
class PolicyState:
    current: Plan | None = None
    recent_predictions: tuple[tuple[float, float], ...] = ()  # (time_s, rps)
    latency_scale: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Decision:
    reason: Reason
    message: str
    plan: Plan | None  # the plan to apply (Reason.APPLY) or the one held
    predicted_rps: float | None = None
    planned_rps: float | None = None


@dataclass(frozen=True, kw_only=True)
class PolicyInputs:
    spec: PipelineSpec
    profiles: Profiles
    predictor: Predictor
    history_rps: Sequence[float]  # per-second arrival rate of the pipeline, newest last
    observation: Observation | None  # the latest, for the closed-loop correction
    config: PolicyConfig = PolicyConfig()


def scaled_profiles(profiles: Profiles, scale: Mapping[str, float]) -> Profiles:
    """Profiles whose latency models are multiplied by the per-model correction scale."""
    if not scale:
        return profiles
    variants = {}
    for name, vp in profiles.variants.items():
        factor = scale.get(name, 1.0)
        fit = dataclasses.replace(vp.latency, coefficients=tuple(c * factor for c in vp.latency.coefficients))
        variants[name] = dataclasses.replace(vp, latency=fit)
    return dataclasses.replace(profiles, variants=variants)


def correct(plan: Plan | None, observation: Observation | None, profiles: Profiles,
            scale: Mapping[str, float], config: PolicyConfig) -> dict[str, float]:
    """Update the per-model latency scale from what the current plan's models really do."""
    updated = dict(scale)
    if plan is None or observation is None:
        return updated
    for stage in plan.stages:
        for v in stage.variants:
            stats = observation.models.get(v.model)
            if stats is None or stats.arrival_rps < config.min_rps_for_correction:
                continue
            observed = stats.p99_ms
            if observed is None and stats.queue_ms is not None and stats.compute_ms is not None:
                observed = stats.queue_ms + stats.compute_ms
            if observed is None:
                continue
            factor = updated.get(v.model, 1.0)
            service = profiles[v.model].latency.p99_ms(v.max_batch_size) * factor
            predicted, _ = stage_model(service, v.max_batch_size, v.instances,
                                       stats.arrival_rps / max(plan.pods, 1),
                                       profiles[v.model].instance_efficiency)
            if not predicted or predicted == float("inf"):
                continue
            ratio = observed / predicted
            if abs(ratio - 1.0) < config.tolerance:
                continue
            factor *= ratio ** config.correction_gain
            updated[v.model] = min(max(factor, 1.0), config.max_latency_scale)
    return updated


def stabilise(recent: tuple[tuple[float, float], ...], predicted: float, now_s: float,
              window_s: float) -> tuple[float, tuple[tuple[float, float], ...]]:
    """The rps to plan for: the highest prediction within the window (scale-up is immediate,
    scale-down waits until higher predictions age out)."""
    kept = tuple((t, r) for t, r in recent if now_s - t < window_s) + ((now_s, predicted),)
    return max(r for _, r in kept), kept


def same_configuration(a: Plan | None, b: Plan | None, delay_tolerance: float = 0.25) -> bool:
    """Whether applying b over a would change nothing that matters. The queue delay follows the
    load ((b-1)/rps), so a delay within `delay_tolerance` of the applied one is not worth a
    model reload."""
    if a is None or b is None:
        return a is b
    key = lambda p: (p.pods, tuple((v.model, round(v.share, 6), v.max_batch_size, v.instances)
                                   for s in p.stages for v in s.variants))
    if key(a) != key(b):
        return False
    delays = lambda p: [v.max_queue_delay_us for s in p.stages for v in s.variants]
    return all(abs(x - y) <= delay_tolerance * max(x, y) for x, y in zip(delays(a), delays(b)))


def decide(inputs: PolicyInputs, state: PolicyState, now_s: float,
           planner: Callable[..., Plan] = plan_pipeline) -> tuple[Decision, PolicyState]:
    config = inputs.config
    obs = inputs.observation
    if obs is None or now_s - obs.time_s > config.stale_after_s:
        age = "none yet" if obs is None else f"{now_s - obs.time_s:.0f} s old"
        return (Decision(reason=Reason.NO_METRICS, plan=state.current,
                         message=f"holding the plan: no fresh metrics ({age})"), state)

    scale = correct(state.current, obs, inputs.profiles, state.latency_scale, config)
    predicted = inputs.predictor.predict(inputs.history_rps)
    planned_rps, recent = stabilise(state.recent_predictions, predicted, now_s,
                                    config.scale_down_window_s)
    state = dataclasses.replace(state, recent_predictions=recent, latency_scale=scale)
    try:
        plan = planner(inputs.spec, scaled_profiles(inputs.profiles, scale), planned_rps,
                       mode=config.mode, current=state.current, solver=config.solver)
    except AdapterError as exc:
        return (Decision(reason=Reason.SOLVER_ERROR, plan=state.current, predicted_rps=predicted,
                         planned_rps=planned_rps,
                         message=f"keeping the current plan: planning failed: {exc}"), state)
    if same_configuration(plan, state.current):
        return (Decision(reason=Reason.UNCHANGED, plan=state.current, predicted_rps=predicted,
                         planned_rps=planned_rps,
                         message=f"plan unchanged for {planned_rps:.1f} rps"), state)
    return (Decision(reason=Reason.APPLY, plan=plan, predicted_rps=predicted,
                     planned_rps=planned_rps,
                     message=f"new plan for {planned_rps:.1f} rps: " + ", ".join(
                         f"{s.stage}={s.model}x{s.instances} b{s.max_batch_size}" for s in plan.stages)),
            state)


def applied(state: PolicyState, plan: Plan) -> PolicyState:
    """The state after the caller applied `plan` successfully."""
    return dataclasses.replace(state, current=plan)
