"""The adapter's decision step, pure: `decide(inputs, state, now_s) -> (Decision, state)`.

Named steps, each testable alone, each with a reason in the decision's message:
  correct    each served model's compute time per batch (Triton's compute counters, no queueing)
             against the profile's service time at the observed batch -> per-model service
             scale; it decays back towards the profile while a model carries no traffic
  predict    per-second arrival history -> scenarios of the coming peak (the one margin: the
             planner adds no headroom on top)
  choose     among the plans for several quantiles of those scenarios, the one with the best
             expected objective: a plan sized below a scenario's peak loses (sheds) the excess,
             worth its accuracy per request; one sized above it pays for idle cores. The margin
             is thus set by the objective's own prices (a newsvendor), not by a fixed percentage
  drain      requests already queued are served on top of the forecast within one interval
  release    scale up at once; scale down only to the size the same choice gives for the peak
             over `release_horizon_s`, the time it takes to get released capacity back (a new
             pod's start plus one interval): a pod is kept while the load it would be missed
             for may return before a new one could start, and released at once when nothing
             foretells that (a step down). IPA's baseline holds HPA's fixed window instead
             (`scale_down_window_s`)
  band       scale down only below the current plan's load by more than
             `scale_down_hysteresis` (no flapping around a pod boundary)
  plan       the planner, with switching costs amortised over the plan's expected lifetime
             (one-off costs against a gain that accrues every second), corrected profiles, and
             the pool's limit: a load the pool cannot serve is clamped to what it can serve
             within the SLA (the excess is shed at admission)
  hold       apply only when the plan's configuration differs from the current one
  sit out    a variant that failed to load is left out of planning for a back-off that doubles
             with each failure in a row (`failed_to_load`)
The loop decides every interval, and at once when the arrivals outgrow the plan in force
(`overloaded`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Callable, Container, Mapping, Sequence

import numpy as np

from adapter.core.observation import Observation
from adapter.core.plan import Mode, Plan
from adapter.core.planner import plan_pipeline
from adapter.core.predictor import Predictor
from adapter.core.profile import Profiles, expected_compute_ms
from adapter.core.spec import PipelineSpec
from adapter.errors import AdapterError


class Reason(str, Enum):
    APPLY = "Apply"  # a new plan to apply
    UNCHANGED = "Unchanged"  # the best plan is the one already applied
    NO_METRICS = "NoMetrics"  # no fresh observation: hold the plan
    SOLVER_ERROR = "SolverError"  # planning failed: keep the current plan


@dataclass(frozen=True, kw_only=True)
class PolicyConfig:
    # Scale down only to the highest rps planned within this window (HPA's; IPA's baseline has
    # 60 s). The adapter's own rule is the release horizon below, so 0.
    scale_down_window_s: float = 0.0
    scale_down_hysteresis: float = 0.1  # plan below the current plan's load only when 10 % under it
    stale_after_s: float = 30.0  # an observation older than this is not acted on
    mode: Mode = Mode.SINGLE
    solver: str = "exact"
    # Capacity margin on the forecast; None: the spec's `headroom`. The adapter's quantile
    # forecast already holds its margin, so it plans with 0.
    headroom: float | None = 0.0
    # Switching costs are one-off; a plan's gain accrues per interval for as long as it lasts.
    # The planner compares per-interval figures, so a one-off cost counts interval / lifetime.
    # None: the spec's costs as they are (per decision, IPA-style).
    plan_lifetime_s: float | None = 300.0
    interval_s: float = 10.0  # between decisions (the loop's), for the amortisation above
    drain_s: float | None = 10.0  # serve an observed backlog within this long; None: ignore backlogs
    clamp_to_pool: bool = True  # a load the pool cannot serve: plan for the most it can serve
    latency_model: str = "triton"  # the planner's stage model ("ipa": IPA's formulation, for its baseline)
    # Decide before the interval is up when the last `overload_window_s` seconds' arrivals exceed
    # the load the current plan was made for by this share (None: only on the interval, as IPA).
    overload_trigger: float | None = 0.1
    overload_window_s: int = 3
    # Capacity is released only down to what the load may need within the time it takes to get
    # it back: a new pod's start (30 s) plus one interval. None: released as the forecast falls.
    release_horizon_s: int | None = 40
    # Closed-loop correction: the service scale moves by a share `correction_gain` (geometric)
    # towards the nearest value that explains the observed compute time, inside
    # [1, max_latency_scale]; without traffic it decays towards 1 by `correction_decay`.
    correction_gain: float = 0.5
    correction_decay: float = 0.8
    max_latency_scale: float = 4.0
    min_rps_for_correction: float = 1.0
    tolerance: float = 0.1  # a compute time within 10 % of the profile's band is noise
    # A variant that failed to load sits out of planning for a back-off: one interval, doubled
    # at each failure in a row, at most this long.
    max_failure_backoff_s: float = 600.0


@dataclass(frozen=True, kw_only=True)
class PolicyState:
    current: Plan | None = None
    recent_predictions: tuple[tuple[float, float], ...] = ()  # (time_s, rps)
    latency_scale: Mapping[str, float] = field(default_factory=dict)
    failed: Mapping[str, tuple[float, float]] = field(default_factory=dict)  # model -> (retry at, back-off s)


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
    """Profiles whose service times are multiplied by the per-model correction scale."""
    if not scale:
        return profiles
    variants = {name: dataclasses.replace(vp, service_scale=vp.service_scale * scale[name]) if name in scale else vp
                for name, vp in profiles.variants.items()}
    return dataclasses.replace(profiles, variants=variants)


def correct(plan: Plan | None, observation: Observation | None, profiles: Profiles,
            scale: Mapping[str, float], config: PolicyConfig) -> dict[str, float]:
    """Update the per-model service scale from what the current plan's models really compute.

    Triton's compute time per request is the service time of the batch it ran in; with n
    instances sharing the cores that is between the profile's mean m(b) (one busy) and
    m(b) * n / c_eff (all busy). Every scale in [observed / (m f), observed / m] explains the
    observation; the scale moves towards the nearest one. Queueing (a burst, a reload) is not
    compute time, so it cannot inflate the scale; a model without traffic decays towards 1."""
    updated = {}
    served = set()
    if plan is not None and observation is not None:
        for stage in plan.stages:
            for v in stage.variants:
                stats = observation.models.get(v.model)
                if (stats is None or stats.arrival_rps < config.min_rps_for_correction
                        or stats.compute_ms is None or not stats.mean_batch or v.model not in profiles):
                    continue
                served.add(v.model)
                vp = profiles[v.model]
                mean = expected_compute_ms(vp, stats.mean_batch, v.max_batch_size)
                stretch = v.instances / (1.0 + (v.instances - 1) * vp.instance_efficiency)
                low = stats.compute_ms / (mean * stretch) / (1.0 + config.tolerance)
                high = stats.compute_ms / mean * (1.0 + config.tolerance)
                factor = scale.get(v.model, 1.0)
                target = min(max(factor, low), high)
                factor = min(max(factor * (target / factor) ** config.correction_gain, 1.0),
                             config.max_latency_scale)
                if factor > 1.0 + 1e-3:
                    updated[v.model] = factor
    for model, factor in scale.items():
        if model not in served:
            factor **= config.correction_decay
            if factor > 1.0 + 1e-3:
                updated[model] = factor
    return updated


def stabilise(recent: tuple[tuple[float, float], ...], predicted: float, now_s: float,
              window_s: float) -> tuple[float, tuple[tuple[float, float], ...]]:
    """The rps to plan for: the highest prediction within the window (scale-up is immediate,
    scale-down waits until higher predictions age out)."""
    kept = tuple((t, r) for t, r in recent if now_s - t < window_s) + ((now_s, predicted),)
    return max(r for _, r in kept), kept


def hysteresis(planned_rps: float, current: Plan | None, band: float) -> float:
    """Scale down only past a band: a load within `band` below the current plan's is planned as
    the current plan's load, so a load hovering at a pod or variant boundary does not flap."""
    if current is None or planned_rps >= current.rps:
        return planned_rps
    return current.rps if planned_rps * (1.0 + band) >= current.rps else planned_rps


def overloaded(history_rps: Sequence[float], current: Plan | None, config: PolicyConfig) -> bool:
    """Whether the load has outgrown the plan in force: a step or flash crowd is acted on within
    seconds instead of at the next interval, while its queue is still short."""
    if (config.overload_trigger is None or current is None or not current.feasible
            or len(history_rps) < config.overload_window_s):
        return False  # an infeasible plan already serves all the pool can: nothing to gain
    recent = sum(list(history_rps)[-config.overload_window_s:]) / config.overload_window_s
    return recent > current.rps * (1.0 + config.overload_trigger)


SCENARIO_QUANTILES = (0.5, 0.75, 0.9, 0.95, 0.99)  # the candidate sizes; the objective picks among them


def expected_objective(plan: Plan, peaks: np.ndarray, alpha: float) -> float:
    """The plan's objective over the load scenarios: what it earns at full service, less the
    accuracy of the requests above what it serves within the SLA (shed at admission)."""
    if peaks.size == 0:
        return plan.objective
    lost = np.clip(1.0 - plan.rps / np.maximum(peaks, 1e-9), 0.0, None)
    return plan.objective - alpha * plan.accuracy_score * float(lost.mean())


def newsvendor(peaks: np.ndarray, plan_for: Callable[[float], Plan], alpha: float) -> tuple[float, float]:
    """Among the plans for several quantiles of the peak scenarios, the load of the one with the
    best expected objective, and its quantile."""
    options = {round(float(np.quantile(peaks, q)), 3): q for q in SCENARIO_QUANTILES}
    best = max(options, key=lambda rps: (expected_objective(plan_for(rps), peaks, alpha), -rps))
    return best, options[best]


def backlog_rps(observation: Observation, spec: PipelineSpec, drain_s: float | None) -> float:
    """Extra rate that serves the requests already waiting in the pipeline within `drain_s`."""
    if not drain_s:
        return 0.0
    stats = observation.models.get(spec.ensemble)
    return max(0.0, stats.pending) / drain_s if stats is not None else 0.0


def amortised(spec: PipelineSpec, config: PolicyConfig) -> PipelineSpec:
    """The spec whose switching costs are per interval: one-off costs over the plan's lifetime."""
    if config.plan_lifetime_s is None:
        return spec
    share = min(1.0, config.interval_s / config.plan_lifetime_s)
    obj = spec.objective
    return dataclasses.replace(spec, objective=dataclasses.replace(
        obj, switch_variant=obj.switch_variant * share, switch_config=obj.switch_config * share))


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
    backlog = backlog_rps(obs, inputs.spec, config.drain_s)
    scenarios = getattr(inputs.predictor, "scenarios", None)
    peaks = np.asarray(scenarios(inputs.history_rps), dtype=float) + backlog if scenarios else np.zeros(0)
    predicted = inputs.predictor.predict(inputs.history_rps)
    spec = amortised(inputs.spec, config)
    out = sitting_out(state, now_s)
    if out:
        spec = without_models(spec, out)
    profiles = scaled_profiles(inputs.profiles, scale)

    @functools.cache
    def plan_for(rps: float) -> Plan:
        return planner(spec, profiles, rps, mode=config.mode, current=state.current, solver=config.solver,
                       headroom=config.headroom, clamp=config.clamp_to_pool, latency_model=config.latency_model)

    why = [f"forecast {predicted:.1f} rps"]
    why += [f"without {m} (failed to load; tried again in {at - now_s:.0f} s)" for m, at in sorted(out.items())]
    try:
        alpha = spec.objective.alpha
        if peaks.size:
            chosen, quantile = newsvendor(peaks, plan_for, alpha)
            why.append(f"sized at the p{100 * quantile:.0f} scenario {chosen:.1f} rps by expected objective")
        else:
            chosen = predicted + backlog
        if backlog > 0.05:
            why.append(f"+{backlog:.1f} rps to drain {backlog * config.drain_s:.0f} queued")
        current = state.current
        if peaks.size and config.release_horizon_s and current is not None and chosen < current.rps:
            later = np.asarray(scenarios(inputs.history_rps, horizon_s=config.release_horizon_s), dtype=float)
            keep = min(newsvendor(later + backlog, plan_for, alpha)[0], current.rps)
            if keep > chosen:
                why.append(f"kept at {keep:.1f} rps: the load may need it within {config.release_horizon_s} s, "
                           "before released capacity could be back")
                chosen = keep
        stable, recent = stabilise(state.recent_predictions, chosen, now_s, config.scale_down_window_s)
        planned_rps = hysteresis(stable, state.current, config.scale_down_hysteresis)
        state = dataclasses.replace(state, recent_predictions=recent, latency_scale=scale)
        if stable > chosen + 1e-9:
            why.append(f"held at {stable:.1f} rps for {config.scale_down_window_s:g} s")
        if planned_rps > stable + 1e-9:
            why.append(f"kept at the current {planned_rps:.1f} rps (within the {config.scale_down_hysteresis:.0%} band)")
        if any(f > 1.0 for f in scale.values()):
            why.append("service scale " + ", ".join(f"{m} x{f:.2f}" for m, f in sorted(scale.items())))
        plan = plan_for(planned_rps)
    except AdapterError as exc:
        state = dataclasses.replace(state, latency_scale=scale)
        return (Decision(reason=Reason.SOLVER_ERROR, plan=state.current, predicted_rps=predicted,
                         message=f"keeping the current plan: planning failed: {exc}"), state)
    if not plan.feasible:
        why.append(plan.message)
    reasons = "; ".join(why)
    if same_configuration(plan, state.current):
        return (Decision(reason=Reason.UNCHANGED, plan=state.current, predicted_rps=predicted,
                         planned_rps=planned_rps,
                         message=f"plan unchanged for {planned_rps:.1f} rps ({reasons})"), state)
    return (Decision(reason=Reason.APPLY, plan=plan, predicted_rps=predicted,
                     planned_rps=planned_rps,
                     message=f"new plan for {planned_rps:.1f} rps ({reasons}): " + ", ".join(
                         f"{s.stage}={s.model}x{s.instances} b{s.max_batch_size}" for s in plan.stages)
                     + f", {plan.pods} pod(s)"),
            state)


def applied(state: PolicyState, plan: Plan) -> PolicyState:
    """The state after the caller applied `plan` successfully: its variants load again."""
    loaded = {v.model for s in plan.stages for v in s.variants}
    return dataclasses.replace(state, current=plan,
                               failed={m: f for m, f in state.failed.items() if m not in loaded})


def failed_to_load(state: PolicyState, model: str, now_s: float, config: PolicyConfig) -> PolicyState:
    """The state after `model` failed to load: it sits out of planning for a back-off that
    doubles with each failure in a row, so a broken variant is neither retried every interval
    nor blocks every other plan."""
    backoff = min(max(2 * state.failed.get(model, (0.0, 0.0))[1], config.interval_s), config.max_failure_backoff_s)
    return dataclasses.replace(state, failed={**state.failed, model: (now_s + backoff, backoff)})


def sitting_out(state: PolicyState, now_s: float) -> dict[str, float]:
    """The variants out of planning now, with when they are tried again."""
    return {m: at for m, (at, _) in state.failed.items() if now_s < at}


def without_models(spec: PipelineSpec, models: Container[str]) -> PipelineSpec:
    """The spec without these variants; a stage keeps at least one."""
    stages = tuple(dataclasses.replace(st, variants=tuple(v for v in st.variants if v.model not in models)
                                       or st.variants) for st in spec.stages)
    return dataclasses.replace(spec, stages=stages)
