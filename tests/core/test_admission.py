"""The admission rule: from a plan to each model's Triton queue policy (pure, no servers)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapter.core.admission import (QUEUE_FULL, QUEUE_TIMEOUT, UNBOUNDED, Admission, QueuePolicy, admission,
                                    is_shed, queue_policies, same_rule, stage_budgets_ms)
from adapter.core.plan import Mode, Plan, Reason, StagePlan, VariantPlan


def plan_of(*stages, sla_ms=150.0, pods=1) -> Plan:
    """stages: (name, model, batch, instances, capacity_rps over all pods, predicted p99 ms[, delay us])."""
    stage_plans = []
    for name, model, batch, instances, capacity, p99, *delay in stages:
        v = VariantPlan(model=model, share=1.0, max_batch_size=batch, max_queue_delay_us=delay[0] if delay else 0,
                        instances=instances, rps=1.0, predicted_p99_ms=p99, capacity_rps=capacity)
        stage_plans.append(StagePlan(stage=name, variants=(v,), predicted_p99_ms=p99, capacity_rps=capacity,
                                     accuracy=0.9, accuracy_score=1.0, cost=1.0))
    return Plan(pipeline="p", mode=Mode.SINGLE, rps=1.0, sla_ms=sla_ms, pods=pods, stages=tuple(stage_plans),
                objective=0.0, predicted_p99_ms=sum(s.predicted_p99_ms for s in stage_plans), accuracy=0.8,
                accuracy_score=1.0, cost=1.0, feasible=True, reason=Reason.OPTIMAL, message="", solver="test")


def test_one_stage_queues_what_its_instance_serves_within_the_sla():
    # 1 instance, batch 1, 5 req/s: S = 200 ms. Budget 1100 ms -> wait 900 ms -> 4 whole rounds.
    plan = plan_of(("only", "m", 1, 1, 5.0, 300.0), sla_ms=1100)
    a = admission(plan, Admission.BOUNDED)["m"]
    assert a.service_ms == pytest.approx(200.0)
    assert a.wait_ms == pytest.approx(900.0)
    assert a.bound == 4
    assert a.policy == QueuePolicy(max_queue_size=4, timeout_us=900_000, timeout_action="REJECT",
                                   allow_timeout_override=True)


def test_the_modes_apply_the_timeout_the_bound_or_nothing():
    plan = plan_of(("only", "m", 1, 1, 5.0, 300.0), sla_ms=1100)
    assert queue_policies(plan)["m"] == QueuePolicy(0, 900_000, "REJECT", True)  # default: the timeout only
    assert queue_policies(plan, "bounded")["m"].max_queue_size == 4
    assert queue_policies(plan, Admission.OFF)["m"] == UNBOUNDED
    with pytest.raises(ValueError, match="admission: expected one of off, timeout, bounded, got 'queue'"):
        queue_policies(plan, "queue")


def test_each_stage_gets_its_batch_time_and_an_equal_share_of_the_slack():
    plan = plan_of(("a", "fast", 8, 1, 8000.0, 10.0), ("b", "slow", 4, 2, 160.0, 40.0), sla_ms=150)
    # Batch times: fast S = 8 / 8000 req/s = 1 ms; slow S = 2 * 4 / 160 req/s = 50 ms. The SLA
    # leaves 99 ms over them: 49.5 ms each.
    assert stage_budgets_ms(plan) == pytest.approx((50.5, 99.5))
    slow = admission(plan, Admission.BOUNDED)["slow"]  # waits up to 50 ms: one round of 8
    assert slow.service_ms == pytest.approx(50.0)
    assert slow.policy.max_queue_size == 8 and slow.policy.timeout_us == 50_000
    fast = admission(plan, Admission.BOUNDED)["fast"]  # waits up to 49.5 ms: 49 rounds of 8
    assert fast.policy.max_queue_size == 49 * 8 and fast.policy.timeout_us == 49_500


def test_the_policies_do_not_move_with_the_load_nor_cascade_between_stages():
    calm = plan_of(("a", "fast", 8, 1, 8000.0, 10.0), ("b", "slow", 4, 2, 160.0, 40.0), sla_ms=150)
    busy = plan_of(("a", "fast", 8, 1, 8000.0, 90.0), ("b", "slow", 4, 2, 160.0, 120.0), sla_ms=150)
    assert queue_policies(calm) == queue_policies(busy)  # predicted p99 plays no part
    # The second stage swaps to a variant twice as fast: the first stage's share of the slack
    # grows by half the 25 ms saved (49.5 -> 62 ms), within the tolerance that keeps it.
    other = plan_of(("a", "fast", 8, 1, 8000.0, 10.0), ("b", "quick", 4, 2, 320.0, 20.0), sla_ms=150)
    before, after = queue_policies(calm)["fast"], queue_policies(other)["fast"]
    assert before != after and same_rule(before, after)


def test_the_queue_is_per_pod():
    one = admission(plan_of(("s", "m", 2, 1, 100.0, 20.0), sla_ms=200, pods=1))["m"]
    two = admission(plan_of(("s", "m", 2, 1, 200.0, 20.0), sla_ms=200, pods=2))["m"]
    assert one == two  # 200 req/s over two pods is 100 per pod: the same queue in each


def test_a_budget_below_one_service_time_still_admits_one_batch():
    # The plan's p99 exceeds the SLA: S = 100 ms, budget 50 ms. The stage keeps serving (one
    # batch queued, waiting at most for the batch in service plus the batch delay).
    a = admission(plan_of(("s", "m", 4, 1, 40.0, 400.0, 5000), sla_ms=50), "bounded")["m"]
    assert a.wait_ms == pytest.approx(105.0)
    assert a.policy.max_queue_size == 4 and a.policy.timeout_us == 105_000


def test_a_variant_without_capacity_is_named():
    with pytest.raises(ValueError, match="variant m: capacity_rps 0.0"):
        queue_policies(plan_of(("s", "m", 1, 1, 0.0, 10.0)))


def test_triton_rejections_are_shed_and_other_errors_are_not():
    assert is_shed(f"[request id: <id_unknown>] {QUEUE_FULL}")
    assert is_shed(f"in ensemble 'text_search', {QUEUE_TIMEOUT}")
    assert not is_shed("in ensemble 'text_search', Failed to process the request(s) for model 'embed_l3'")
    assert not is_shed("unfinished when the run ended")
    assert not UNBOUNDED.bounded and QueuePolicy(max_queue_size=1).bounded


@given(sla=st.floats(10, 5000), p99s=st.lists(st.floats(0.1, 2000), min_size=1, max_size=4),
       batch=st.integers(1, 32), instances=st.integers(1, 8), capacity=st.floats(1, 50_000),
       pods=st.integers(1, 50))
def test_admitted_requests_start_within_the_wait_and_the_budgets_add_up_to_the_sla(sla, p99s, batch, instances,
                                                                                capacity, pods):
    stages = [(f"s{i}", f"m{i}", batch, instances, capacity, p99) for i, p99 in enumerate(p99s)]
    plan = plan_of(*stages, sla_ms=sla, pods=pods)
    times = [a.service_ms for a in admission(plan, Admission.BOUNDED).values()]  # no delay here
    budgets = stage_budgets_ms(plan)
    assert sum(budgets) == pytest.approx(sla)
    assert budgets == pytest.approx([t + (sla - sum(times)) / len(times) for t in times])
    for a in admission(plan, Admission.BOUNDED).values():
        per_round = instances * batch
        q = a.policy.max_queue_size
        assert q >= per_round and q % per_round == 0  # whole batches, at least one
        # The last admitted request (q - 1 ahead of it ... position q - 1) starts within the wait,
        # even when every instance had just started a batch; the timeout is that wait.
        assert (q // per_round) * a.service_ms <= a.wait_ms * (1 + 1e-9)
        assert (q // per_round + 1) * a.service_ms > a.wait_ms  # one more round would not
        assert a.policy.timeout_us == max(1, round(a.wait_ms * 1000))
        assert a.wait_ms >= a.service_ms
