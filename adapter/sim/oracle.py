"""The offline oracle: the best plan schedule over a whole trace, knowing all of it.

    candidate plans: the planner's optimum at every load from 1 req/s to the trace's peak, in
                     5 % steps (and the most it can serve, where the pool is short): every plan
                     an online policy using this planner could reach
    ground truth:    what each candidate serves within the SLA at each rate, measured on the
                     simulated pods (capacity.py), not the planner's model of it
    dynamic program: value(e, q) = reward(q, e) + max_p value(e - 1, p) - switch(p, q)

Reward of plan q in epoch e, in the benchmark's own objective (bench/policies.py): alpha x
accuracy(q) x the requests of the epoch's seconds that q serves within the SLA (each second at
the trace's rate), over all the trace's requests, minus beta x cores(q) x the epoch's share of
the trace. Switching p -> q pays what a change costs in that objective: the added cores from
the moment the change is issued, early enough (`lead_s`) to be ready at its epoch. The schedule
is then run in the simulator like any policy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from adapter.core.admission import DEFAULT, Admission
from adapter.core.plan import Plan
from adapter.core.planner import max_servable_rps, plan_pipeline
from adapter.core.profile import Profiles
from adapter.core.spec import PipelineSpec
from adapter.sim.capacity import served_curve

LEVEL_STEP = 1.05  # the candidates' loads: 1 req/s upwards in 5 % steps
SLA_SHARE = 0.99  # p99 within the SLA: an epoch's plan serves 99 % of its requests in time...
MOST_SLACK = 0.005  # ...or, where no plan can, within half a percent of the most any plan serves


@dataclass(frozen=True)
class Schedule:
    """The oracle's plans: `plans[e]` in force during epoch e (seconds e*interval onwards)."""

    interval_s: float
    plans: tuple[Plan, ...]
    value: float  # the dynamic program's objective, per second, averaged over the trace


def candidates(spec: PipelineSpec, profiles: Profiles, peak_rps: float, **plan_options) -> list[Plan]:
    """The planner's optimum at every load up to the peak in 5 % steps, clamped to what the pool
    serves within the SLA."""
    plans: dict[tuple, Plan] = {}
    levels = LEVEL_STEP ** np.arange(math.ceil(math.log(max(peak_rps, 1.0)) / math.log(LEVEL_STEP)) + 1)
    for level in levels:
        plan = plan_pipeline(spec, profiles, float(level), **plan_options)
        if not plan.feasible:
            served = max_servable_rps(spec, profiles, float(level), **plan_options)
            best = served[1] if served is not None else plan  # best effort: nothing fits
            plans.setdefault(_key(best), best)
            break  # every higher load gets the same most-it-can-serve plan
        plans.setdefault(_key(plan), plan)
    return list(plans.values())


def _key(plan: Plan) -> tuple:
    return (plan.pods,) + tuple((v.model, v.max_batch_size, v.instances, round(v.share, 6))
                                for s in plan.stages for v in s.variants)


def optimal_schedule(spec: PipelineSpec, profiles: Profiles, series: np.ndarray, interval_s: float,
                     lead_s: Callable[[Plan, Plan], float], initial: Plan | None = None,
                     admission: Admission | str = DEFAULT, **plan_options) -> Schedule:
    """`lead_s(p, q)`: how long before its epoch the change p -> q is issued to be ready then."""
    rates = np.asarray(series, dtype=float)
    if rates.size == 0:
        raise ValueError("the oracle needs a trace of at least one second")
    seconds, peak = len(rates), float(rates.max(initial=1.0))
    plans = candidates(spec, profiles, peak, **plan_options)
    obj = spec.objective
    acc = np.array([p.accuracy for p in plans])
    cores = np.array([p.cost for p in plans])
    served = np.stack([rates * served_curve(spec, profiles, p, peak, admission).share(rates)
                       for p in plans], axis=1)  # (seconds, K): requests served within the SLA
    step = int(round(interval_s))
    starts = np.arange(0, seconds, step)
    served_epoch = np.add.reduceat(served, starts, axis=0)
    sent_epoch = np.add.reduceat(rates, starts)[:, None]
    length = np.minimum(step, seconds - starts)  # the last epoch may be short
    requests = max(float(rates.sum()), 1e-9)
    # In objective-seconds, so that value / seconds is the benchmark's objective.
    reward = obj.alpha * acc[None, :] * served_epoch * seconds / requests - obj.beta * cores[None, :] * length[:, None]
    # The SLA is a constraint, not a price: a plan may only shed load no plan can serve.
    share = np.where(sent_epoch > 0, served_epoch / np.maximum(sent_epoch, 1e-9), 1.0)
    keeps_sla = (share >= SLA_SHARE) | (share >= share.max(axis=1, keepdims=True) - MOST_SLACK)
    reward = np.where(keeps_sla, reward, -np.inf)

    def switch(p: Plan | None, q: Plan) -> float:
        if p is None or p is q:
            return 0.0
        return obj.beta * max(0.0, q.cost - p.cost) * lead_s(p, q)

    switches = np.array([[switch(p, q) for q in plans] for p in plans])  # (K, K)
    chosen, total = best_path(reward, switches, np.array([switch(initial, q) for q in plans]))
    return Schedule(interval_s=interval_s, plans=tuple(plans[k] for k in chosen),
                    value=total / max(seconds, 1))


def best_path(reward: np.ndarray, switches: np.ndarray, first: np.ndarray) -> tuple[list[int], float]:
    """The plan index per epoch that maximises the sum of rewards (E, K) less the switching
    costs (K, K: from row to column) and the cost of the first plan (K), and that sum."""
    value = reward[0] - first
    back = np.zeros(reward.shape, dtype=int)
    for e in range(1, len(reward)):
        total = value[:, None] - switches
        back[e] = np.argmax(total, axis=0)
        value = total[back[e], np.arange(reward.shape[1])] + reward[e]
    chosen = [int(np.argmax(value))]
    for e in range(len(reward) - 1, 0, -1):
        chosen.append(int(back[e][chosen[-1]]))
    return chosen[::-1], float(value.max())
