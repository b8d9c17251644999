"""The offline oracle: the best plan schedule over a whole trace, knowing all of it.

    trace -> epochs of `interval_s` -> the true load each epoch must serve
    candidate plans: the planner's optimum at every distinct epoch load (and the most it can
                     serve, where the pool is short), so every plan an online policy could reach
                     for those loads is a candidate
    dynamic program: value(e, q) = reward(q, e) + max_p value(e - 1, p) - switch(p, q)

Reward of plan q in epoch e (per second, the benchmark's objective): alpha * accuracy(q) *
(share of the epoch's requests q serves: 1 if its capacity covers the epoch's peak, else
capacity / peak, the rest shed) - beta * cores(q). Switching p -> q pays the spec's one-off
switching costs, and the cores of the pods q adds for as long as they take to start (the oracle
starts them that early: it knows the load is coming). Pure: no simulation inside; the schedule
it returns is then run in the simulator like any policy, with every change issued early enough
to be ready at its epoch (the longest model load, or the pod start time).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from adapter.core.plan import Plan
from adapter.core.planner import max_servable_rps, plan_pipeline
from adapter.core.profile import Profiles
from adapter.core.spec import PipelineSpec


@dataclass(frozen=True)
class Schedule:
    """The oracle's plans: `plans[e]` in force during epoch e (seconds e*interval onwards)."""

    interval_s: float
    plans: tuple[Plan, ...]
    value: float  # the dynamic program's objective, per second, averaged over the trace


def epoch_loads(series: np.ndarray, interval_s: float, smooth_s: int = 5) -> np.ndarray:
    """Each epoch's load to serve: the peak `smooth_s`-second average within it (a queue rides
    out shorter bursts; the same definition as the quantile forecast's)."""
    series = np.asarray(series, dtype=float)
    if series.size == 0:
        return np.zeros(0)
    w = min(smooth_s, series.size)
    smooth = np.convolve(series, np.ones(w) / w, mode="full")[: series.size]  # trailing average
    step = int(round(interval_s))
    return np.array([smooth[i:i + step].max() for i in range(0, series.size, step)])


def _switch_cost(spec: PipelineSpec, p: Plan, q: Plan, pod_start_s: float, interval_s: float) -> float:
    """One-off cost of going from p to q, in objective-seconds (per-second objective x seconds)."""
    if p is q:
        return 0.0
    obj = spec.objective
    cost = 0.0
    was = {s.stage: {v.model: v for v in s.variants} for s in p.stages}
    for s in q.stages:
        old = was.get(s.stage, {})
        kept = sum(min(v.share, old[v.model].share) for v in s.variants if v.model in old)
        cost += obj.switch_variant * (1.0 - kept)
        cost += obj.switch_config * sum((v.max_batch_size != old[v.model].max_batch_size)
                                        + (v.instances != old[v.model].instances)
                                        for v in s.variants if v.model in old)
    cost += obj.switch_config * (p.pods != q.pods)
    cost *= interval_s  # the spec's switching costs weigh against one interval's objective
    if q.pods > p.pods and p.pods > 0:  # pods started pod_start_s early, paid meanwhile
        cost += obj.beta * q.cost * (q.pods - p.pods) / q.pods * pod_start_s
    return cost


def candidates(spec: PipelineSpec, profiles: Profiles, loads: np.ndarray, **plan_options) -> list[Plan]:
    """The planner's optimum for every distinct epoch load (rounded up to 1 %), clamped to what
    the pool serves within the SLA."""
    plans: dict[tuple, Plan] = {}
    levels = sorted({_round_up(x) for x in loads})
    ceiling = None
    for level in levels:
        if ceiling is not None and level >= ceiling:
            continue
        plan = plan_pipeline(spec, profiles, level, **plan_options)
        if not plan.feasible:
            served = max_servable_rps(spec, profiles, level, **plan_options)
            if served is None:
                plans.setdefault(("best-effort",), plan)
                continue
            ceiling, plan = served
        plans.setdefault(_key(plan), plan)
    return list(plans.values())


def _round_up(x: float) -> float:
    """Loads rounded up to 2 significant steps per 10 % band, so near-equal loads share a plan."""
    if x <= 1.0:
        return 1.0
    step = 10 ** math.floor(math.log10(x)) / 20
    return math.ceil(x / step) * step


def _key(plan: Plan) -> tuple:
    return (plan.pods,) + tuple((v.model, v.max_batch_size, v.instances, round(v.share, 6))
                                for s in plan.stages for v in s.variants)


def served_share(plan: Plan, load: float) -> float:
    """The share of a load a plan serves within the SLA: all of it up to the load it was made for."""
    return 1.0 if load <= plan.rps else plan.rps / load


def optimal_schedule(spec: PipelineSpec, profiles: Profiles, series: np.ndarray, interval_s: float,
                     pod_start_s: float, initial: Plan | None = None, **plan_options) -> Schedule:
    loads = epoch_loads(series, interval_s)
    plans = candidates(spec, profiles, loads, **plan_options)
    obj = spec.objective
    acc = np.array([p.accuracy for p in plans])
    cores = np.array([p.cost for p in plans])
    share = np.array([[served_share(p, x) for p in plans] for x in loads])  # (E, K)
    step = np.minimum(interval_s, len(series) - np.arange(len(loads)) * interval_s)  # the last epoch may be short
    reward = (obj.alpha * acc[None, :] * share - obj.beta * cores[None, :]) * step[:, None]
    switch = np.array([[_switch_cost(spec, p, q, pod_start_s, interval_s) for q in plans] for p in plans])  # (K, K)
    value = reward[0] - (np.array([_switch_cost(spec, initial, q, pod_start_s, interval_s) for q in plans])
                         if initial is not None else 0.0)
    back = np.zeros((len(loads), len(plans)), dtype=int)
    for e in range(1, len(loads)):
        total = value[:, None] - switch  # from p (rows) to q (columns)
        back[e] = np.argmax(total, axis=0)
        value = total[back[e], np.arange(len(plans))] + reward[e]
    last = int(np.argmax(value))
    chosen = [last]
    for e in range(len(loads) - 1, 0, -1):
        chosen.append(int(back[e][chosen[-1]]))
    chosen.reverse()
    return Schedule(interval_s=interval_s, plans=tuple(plans[k] for k in chosen),
                    value=float(value[last]) / max(len(series), 1))


def lead_s(previous: Plan | None, nxt: Plan, profiles: Profiles, pod_start_s: float, default_load_s: float) -> float:
    """How long before its epoch a change must be issued to be ready in time."""
    if previous is None or _key(previous) == _key(nxt):
        return 0.0
    loads = sum((profiles[v.model].load_s_max or default_load_s) if v.model in profiles.variants else default_load_s
                for s in nxt.stages for v in s.variants)
    return max(loads, pod_start_s if nxt.pods > previous.pods else 0.0)

