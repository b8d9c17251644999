"""The adapter's decision step, pure: multi-tick scenarios on a fake clock, fault holds,
stabilisation, closed-loop correction. No servers."""

from __future__ import annotations

import dataclasses
import re

import pytest

from adapter import paths
from adapter.core import policy
from adapter.core.observation import ModelStats, Observation
from adapter.core.predictor import LastValuePredictor
from adapter.core.planner import plan_pipeline
from adapter.core.profile import Measurement, Profiles, expected_compute_ms, fit, service_stats
from adapter.core.spec import load_spec, parse_spec
from adapter.errors import ConfigError

SPEC = parse_spec({
    "name": "p", "ensemble": "p", "sla_ms": 100, "batch_sizes": [1, 2, 4, 8],
    "objective": {"alpha": 1.0, "beta": 0.05, "gamma": 0.001},
    "limits": {"max_instances_per_stage": 4, "max_pods": 1, "pod": {"cpu": 8}},
    "stages": [{"name": "s", "variants": [
        {"model": "fast", "accuracy": 0.8, "resources": {"cpu": 1}},
        {"model": "slow", "accuracy": 0.9, "resources": {"cpu": 1}}]}],
})


def _profile(model: str, b1_ms: float, b8_ms: float):
    per_item = (b8_ms - b1_ms) / 7
    return fit([Measurement(model=model, batch_size=b, instances=1, p50_ms=0.8 * (b1_ms + per_item * (b - 1)),
                            p99_ms=b1_ms + per_item * (b - 1), throughput_rps=1000 * b / (b1_ms + per_item * (b - 1)),
                            requests=100) for b in (1, 2, 4, 8)])


PROFILES = Profiles(variants={"fast": _profile("fast", 2, 6), "slow": _profile("slow", 20, 60)})


def _obs(t: float, rps: float, model_p99: dict[str, float] | None = None) -> Observation:
    models = {"p": ModelStats(model="p", arrival_rps=rps, success_rps=rps, failure_rps=0,
                              mean_batch=1, queue_ms=0.1, compute_ms=1, pending=0)}
    for model, p99 in (model_p99 or {}).items():
        models[model] = ModelStats(model=model, arrival_rps=rps, success_rps=rps, failure_rps=0,
                                   mean_batch=1, queue_ms=0.1, compute_ms=1, pending=0, p99_ms=p99)
    return Observation(time_s=t, window_s=1, source="test", models=models)


def _inputs(history, obs, **config):
    return policy.PolicyInputs(spec=SPEC, profiles=PROFILES, predictor=LastValuePredictor(window_s=5),
                               history_rps=history, observation=obs,
                               config=policy.PolicyConfig(**config))


def test_first_decision_applies_and_the_same_load_then_holds():
    state = policy.PolicyState()
    decision, state = policy.decide(_inputs([10] * 30, _obs(100, 10)), state, now_s=100)
    assert decision.reason is policy.Reason.APPLY and decision.plan.stages[0].model == "slow"
    state = policy.applied(state, decision.plan)
    decision, state = policy.decide(_inputs([10] * 30, _obs(110, 10)), state, now_s=110)
    assert decision.reason is policy.Reason.UNCHANGED and decision.plan is state.current


@pytest.mark.parametrize("obs, now, message", [
    (None, 100, "no fresh metrics \\(none yet\\)"),
    (_obs(50, 10), 100, "no fresh metrics \\(50 s old\\)"),
])
def test_missing_or_stale_metrics_hold_the_plan(obs, now, message):
    held = object()
    state = policy.PolicyState(current=held)
    decision, after = policy.decide(_inputs([10] * 30, obs), state, now_s=now)
    assert decision.reason is policy.Reason.NO_METRICS and decision.plan is held
    assert after is state
    assert decision.message.startswith("holding the plan")
    assert re.search(message, decision.message)


def test_a_solver_error_keeps_the_current_plan():
    def failing_planner(*args, **kwargs):
        raise ConfigError("profiles do not cover the spec")

    first, state = policy.decide(_inputs([10] * 30, _obs(100, 10)), policy.PolicyState(), now_s=100)
    state = policy.applied(state, first.plan)
    decision, state = policy.decide(_inputs([10] * 30, _obs(110, 10)), state, now_s=110,
                                    planner=failing_planner)
    assert decision.reason is policy.Reason.SOLVER_ERROR
    assert decision.plan is first.plan and "profiles do not cover the spec" in decision.message


def test_scale_up_is_immediate_and_scale_down_waits_for_the_window():
    recent = ()
    steps = [(0, 10, 10), (10, 50, 50), (20, 10, 50), (60, 10, 50), (71, 10, 10)]
    for now, predicted, expected in steps:
        planned, recent = policy.stabilise(recent, predicted, now, window_s=60)
        assert planned == expected, now


def _served(t: float, rps: float, model: str, compute_ms: float, queue_ms: float = 0.1,
            p99_ms: float | None = None, pending: float = 0) -> Observation:
    """An observation of the pipeline and one served model with the given per-request compute time."""
    models = {"p": ModelStats(model="p", arrival_rps=rps, success_rps=rps, failure_rps=0, mean_batch=1,
                              queue_ms=queue_ms, compute_ms=compute_ms, pending=pending, p99_ms=p99_ms),
              model: ModelStats(model=model, arrival_rps=rps, success_rps=rps, failure_rps=0, mean_batch=1,
                                queue_ms=queue_ms, compute_ms=compute_ms, pending=0, p99_ms=p99_ms)}
    return Observation(time_s=t, window_s=1, source="test", models=models)


def _profile_mean_ms(model: str, batch: int = 1) -> float:
    from adapter.core.profile import service_stats

    return float(service_stats(PROFILES[model], batch).mean_ms[batch])


def test_a_profile_that_is_too_optimistic_is_corrected_until_the_plan_changes():
    """The 'slow' variant really computes 3x its profile: the loop must stop trusting the profile."""
    state = policy.PolicyState()
    decision, state = policy.decide(_inputs([30] * 30, _obs(0, 30)), state, now_s=0)
    state = policy.applied(state, decision.plan)
    assert decision.plan.stages[0].model == "slow"
    first = decision.plan
    for tick in range(1, 8):
        obs = _served(10 * tick, 30, "slow", compute_ms=3 * _profile_mean_ms("slow"))
        decision, state = policy.decide(_inputs([30] * 30, obs), state, now_s=10 * tick)
        if decision.reason is policy.Reason.APPLY:
            state = policy.applied(state, decision.plan)
    assert state.latency_scale["slow"] > 1.5
    assert state.current != first  # re-planned on the corrected profile: more instances or the other variant
    assert "service scale slow" in decision.message


def test_queueing_is_not_read_as_a_slow_model():
    """A burst or a reload queues requests (p99 and queue time up), but compute stays as profiled:
    no correction (it used to inflate the profile for 800-1,800 s)."""
    plan = policy.decide(_inputs([30] * 30, _obs(0, 30)), policy.PolicyState(), now_s=0)[0].plan
    model = plan.stages[0].model
    obs = _served(10, 30, model, compute_ms=_profile_mean_ms(model), queue_ms=900, p99_ms=2000)
    assert policy.correct(plan, obs, PROFILES, {}, policy.PolicyConfig()) == {}


def test_the_correction_decays_when_its_evidence_goes_away():
    plan = policy.decide(_inputs([30] * 30, _obs(0, 30)), policy.PolicyState(), now_s=0)[0].plan
    scale = {"fast": 3.0}  # learnt earlier; "fast" no longer serves
    for _ in range(30):  # 30 decisions: 3 ** (0.8 ** 30) = 1.001
        scale = policy.correct(plan, _obs(10, 30), PROFILES, scale, policy.PolicyConfig())
    assert scale.get("fast", 1.0) < 1.01


def test_observed_compute_close_to_the_profile_changes_nothing():
    first, state = policy.decide(_inputs([10] * 30, _obs(0, 10)), policy.PolicyState(), now_s=0)
    plan = first.plan
    model = plan.stages[0].model
    scale = policy.correct(plan, _served(10, 10, model, compute_ms=_profile_mean_ms(model) * 1.05), PROFILES, {},
                           policy.PolicyConfig())
    assert scale == {}


def test_scale_down_waits_for_the_hysteresis_band():
    plan = policy.decide(_inputs([30] * 30, _obs(0, 30)), policy.PolicyState(), now_s=0)[0].plan
    assert policy.hysteresis(plan.rps * 0.95, plan, band=0.1) == plan.rps  # within the band: hold
    assert policy.hysteresis(plan.rps * 0.8, plan, band=0.1) == plan.rps * 0.8  # past it: scale down
    assert policy.hysteresis(plan.rps * 1.2, plan, band=0.1) == plan.rps * 1.2  # up: at once


def test_a_backlog_is_planned_to_drain_within_the_interval():
    obs = _served(0, 30, "slow", compute_ms=1, pending=200)
    assert policy.backlog_rps(obs, SPEC, drain_s=10) == 20
    assert policy.backlog_rps(obs, SPEC, drain_s=None) == 0


def test_switching_costs_are_amortised_over_the_plans_lifetime():
    """A one-off switch cost against a per-interval gain: with it amortised, the loop goes back to
    the accurate variant after a spike (it used to stay on the cheap one for the rest of the run)."""
    spec = policy.amortised(SPEC, policy.PolicyConfig(interval_s=10, plan_lifetime_s=300))
    assert spec.objective.switch_variant == pytest.approx(SPEC.objective.switch_variant / 30)
    assert policy.amortised(SPEC, policy.PolicyConfig(plan_lifetime_s=None)) is SPEC


def _with_delay(plan, delay_us, batch=None):
    stage = plan.stages[0]
    variant = dataclasses.replace(stage.variants[0], max_queue_delay_us=delay_us,
                                  max_batch_size=batch or stage.variants[0].max_batch_size)
    return dataclasses.replace(plan, stages=(dataclasses.replace(stage, variants=(variant,)),))


@pytest.mark.parametrize("delay_b, batch_b, same", [
    (11_000, None, True),  # 10 % more delay: load jitter, not worth a reload
    (20_000, None, False),  # twice the delay: a real change
    (10_000, 8, False),  # another batch size
])
def test_queue_delay_jitter_is_not_a_new_configuration(delay_b, batch_b, same):
    plan = policy.decide(_inputs([40] * 30, _obs(0, 40)), policy.PolicyState(), now_s=0)[0].plan
    a = _with_delay(plan, 10_000, batch=4)
    assert policy.same_configuration(a, _with_delay(a, delay_b, batch_b)) is same
    assert not policy.same_configuration(a, None)


def test_an_overload_is_acted_on_before_the_interval_is_up():
    plan = policy.decide(_inputs([30] * 30, _obs(0, 30)), policy.PolicyState(), now_s=0)[0].plan
    config = policy.PolicyConfig()
    assert not policy.overloaded([30] * 30, plan, config)
    assert policy.overloaded([30] * 27 + [plan.rps * 1.5] * 3, plan, config)
    assert not policy.overloaded([30] * 27 + [plan.rps * 1.5] * 3, plan, policy.PolicyConfig(overload_trigger=None))


def test_a_load_the_pool_cannot_serve_is_planned_at_what_it_serves_within_the_sla():
    from adapter.core.planner import max_servable_rps, plan_pipeline

    plain = plan_pipeline(SPEC, PROFILES, 100_000.0)
    clamped = plan_pipeline(SPEC, PROFILES, 100_000.0, clamp=True)
    assert not plain.feasible and not clamped.feasible
    served, best = max_servable_rps(SPEC, PROFILES, 100_000.0)
    assert clamped.rps == pytest.approx(served) and served < 100_000
    assert clamped.predicted_p99_ms <= SPEC.sla_ms  # what it admits, it serves within the SLA
    assert plan_pipeline(SPEC, PROFILES, served).feasible
    assert not plan_pipeline(SPEC, PROFILES, served * 1.05).feasible  # the most, to within bisection
    assert "to be shed" in clamped.message


def test_expected_objective_charges_a_plan_for_the_load_it_would_shed():
    import numpy as np

    small = policy.decide(_inputs([10] * 30, _obs(0, 10)), policy.PolicyState(), now_s=0)[0].plan
    peaks = np.array([small.rps * 0.5, small.rps * 2.0])  # half the time it is enough, half it serves half
    value = policy.expected_objective(small, peaks, alpha=1.0)
    assert value == pytest.approx(small.objective - small.accuracy_score * 0.25)
    assert policy.expected_objective(small, np.array([small.rps]), alpha=1.0) == pytest.approx(small.objective)


def test_the_policy_pays_for_capacity_only_where_the_objective_says_it_is_worth_it():
    """The same noisy history: with cores cheap the plan covers the high scenarios, with cores
    dear it covers fewer of them (the margin follows the objective's prices)."""
    import numpy as np

    rng = np.random.default_rng(3)
    history = list(rng.poisson(130, 400).astype(float))  # near where one more instance is needed
    obs = _obs(0, 130)
    from adapter.core.predictor import QuantilePredictor

    def sized(beta):
        spec = dataclasses.replace(SPEC, objective=dataclasses.replace(SPEC.objective, beta=beta))
        inputs = policy.PolicyInputs(spec=spec, profiles=PROFILES, predictor=QuantilePredictor(),
                                     history_rps=history, observation=obs, config=policy.PolicyConfig())
        return policy.decide(inputs, policy.PolicyState(), now_s=0)[0].planned_rps

    assert sized(0.0) > sized(1.0)  # measured: the p99 scenario (157 rps) vs the p50 one (146 rps)


def test_a_mix_of_batch_sizes_computing_as_profiled_is_not_a_slow_model():
    """Triton counts each request's whole batch time: at a mean batch of 1.4 (60 % of executions
    of 1, 40 % of 2) a request computes (0.6 m(1) + 0.4 * 2 m(2)) / 1.4, more than m(1). Read
    against m(1) (the rounded batch) that looked 1.4x slow and flipped plans at steady load."""
    from adapter.core.profile import load_profiles

    profiles = load_profiles(paths.ENSEMBLES / "text_search" / "profiles.json")
    vp = profiles["embed_l3_int8"]
    m1, m2 = (float(service_stats(vp, b).mean_ms[b]) for b in (1, 2))
    expected = (0.6 * m1 + 0.4 * 2 * m2) / 1.4
    assert expected_compute_ms(vp, 1.4, 2) == pytest.approx(expected)
    assert expected > 1.2 * m1
    assert expected_compute_ms(vp, 1.0, 4) == pytest.approx(m1)
    assert expected_compute_ms(vp, 3.0, 2) == pytest.approx(m2)  # no more than the plan's batch
    plan = plan_pipeline(load_spec(paths.ENSEMBLES / "text_search" / "pipeline.yaml"), profiles, 280.0)
    embed = plan.stages[1].variants[0]
    stats = ModelStats(model=embed.model, arrival_rps=280, success_rps=280, failure_rps=0, mean_batch=1.4,
                       queue_ms=0.1, compute_ms=expected_compute_ms(profiles[embed.model], 1.4,
                                                                           embed.max_batch_size),
                       pending=0, p99_ms=None)
    obs = Observation(time_s=10, window_s=1, source="test", models={embed.model: stats})
    assert embed.model not in policy.correct(plan, obs, profiles, {}, policy.PolicyConfig())


def test_a_variant_that_failed_to_load_sits_out_for_a_doubling_backoff():
    config = policy.PolicyConfig(interval_s=10.0, max_failure_backoff_s=35.0)
    state = policy.PolicyState()
    decision, state = policy.decide(_inputs([10] * 30, _obs(100, 10)), state, now_s=100)
    assert decision.plan.stages[0].model == "slow"
    state = policy.failed_to_load(state, "slow", 100, config)
    assert policy.sitting_out(state, 105) == {"slow": 110.0} and policy.sitting_out(state, 110) == {}
    decision, state = policy.decide(_inputs([10] * 30, _obs(105, 10)), state, now_s=105)
    assert decision.plan.stages[0].model == "fast"
    assert "without slow (failed to load; tried again in 5 s)" in decision.message
    retried = policy.decide(_inputs([10] * 30, _obs(110, 10)), state, now_s=110)[0].plan
    assert retried.stages[0].model == "slow"
    backoffs = []
    for t in (110, 130, 170):
        state = policy.failed_to_load(state, "slow", t, config)
        backoffs.append(state.failed["slow"][1])
    assert backoffs == [20.0, 35.0, 35.0]  # doubled, then capped
    # The last variant of a stage is never left out; a successful load forgets the failures.
    assert [v.model for v in policy.without_models(SPEC, {"slow", "fast"}).stages[0].variants] == ["fast", "slow"]
    assert policy.applied(state, decision.plan).failed == state.failed  # "slow" not loaded
    assert policy.applied(state, retried).failed == {}


class _Horizons:
    """A predictor whose peak scenarios are given per horizon: {horizon_s: rps}."""

    def __init__(self, peaks: dict[int, float]):
        self.peaks = peaks

    def predict(self, history_rps) -> float:
        return self.peaks[20]

    def scenarios(self, history_rps, horizon_s: int | None = None):
        return [self.peaks[horizon_s or 20]] * 10


@pytest.mark.parametrize("later_rps, kept", [(300.0, True), (10.0, False)])
def test_capacity_is_released_only_when_the_load_cannot_need_it_before_it_could_be_back(later_rps, kept):
    """After a fall, the next 20 s need 10 rps. Capacity comes back no sooner than the release
    horizon (40 s): when the load may need 300 rps within it (it has come back like this before),
    the plan for 300 rps is kept; when nothing foretells a return (a step down), it is released."""
    config = dict(release_horizon_s=40)
    high = policy.decide(dataclasses.replace(_inputs([300] * 30, _obs(0, 300), **config),
                                             predictor=_Horizons({20: 300.0, 40: 300.0})),
                         policy.PolicyState(), now_s=0)[0].plan
    state = policy.applied(policy.PolicyState(), high)
    inputs = dataclasses.replace(_inputs([10] * 30, _obs(10, 10), **config),
                                 predictor=_Horizons({20: 10.0, 40: later_rps}))
    decision, _ = policy.decide(inputs, state, now_s=10)
    if kept:
        assert decision.reason is policy.Reason.UNCHANGED and decision.plan is high
        assert "may need it within 40 s" in decision.message
    else:
        assert decision.reason is policy.Reason.APPLY and decision.planned_rps == pytest.approx(10.0)
        assert decision.plan.cost < high.cost
    without = dataclasses.replace(inputs, config=policy.PolicyConfig(release_horizon_s=None))
    assert policy.decide(without, state, now_s=10)[0].planned_rps == pytest.approx(10.0)
