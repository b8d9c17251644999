"""Entry point: `plan_pipeline(spec, profiles, rps, ...) -> Plan`. Pure: no I/O, no clock.

Steps: check that the profiles cover the spec -> build the candidate grid (latency.stage_model)
-> solve (exact fast path, or the ILP via CBC/HiGHS) -> if nothing is feasible, name the binding
constraint and solve for a best-effort plan (lowest p99 with enough capacity, else the most
capacity) -> assemble a `Plan` whose objective is recomputed from the plan itself.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from typing import Callable

import numpy as np

from adapter.core import problem as P
from adapter.core import solve_exact, solve_ilp
from adapter.core.latency import ipa_queue_delay_us
from adapter.core.plan import Mode, Plan, Reason, StagePlan, VariantPlan
from adapter.core.profile import Profiles
from adapter.core.spec import PipelineSpec
from adapter.errors import ConfigError

SOLVER_NAMES = ("exact", "cbc", "highs")


def _solver(name: str, time_limit_s: float | None = None) -> Callable[[P.Problem], P.Selection | None]:
    if name == "exact":
        return solve_exact.solve
    if name in solve_ilp.SOLVERS:
        return lambda problem: solve_ilp.solve(problem, name, time_limit_s)
    raise ConfigError(f"solver: expected one of {', '.join(SOLVER_NAMES)}, got {name!r}")


def check_profiles(spec: PipelineSpec, profiles: Profiles) -> None:
    """Every variant needs a profile that covers at least one allowed batch size."""
    problems = []
    for s, stage in enumerate(spec.stages):
        for j, v in enumerate(stage.variants):
            if v.model not in profiles:
                problems.append(f"`stages[{s}].variants[{j}]` ({v.model}): no profile in {profiles.source}")
            elif stage.batch_sizes[0] > profiles[v.model].latency.max_batch_size:
                problems.append(
                    f"`stages[{s}].variants[{j}]` ({v.model}): expected a profile measured up to batch size "
                    f">= {stage.batch_sizes[0]}, got up to {profiles[v.model].latency.max_batch_size}")
    if problems:
        raise ConfigError(f"{spec.source}: profiles do not cover the spec:\n" + "\n".join(f"  - {p}" for p in problems))


def plan_pipeline(spec: PipelineSpec, profiles: Profiles, rps: float, *, mode: Mode | str = Mode.SINGLE,
                  current: Plan | None = None, solver: str = "exact", headroom: float | None = None,
                  ilp_time_limit_s: float | None = None, clamp: bool = False,
                  latency_model: str = "triton") -> Plan:
    """Choose per stage variant(s), batch size, queue delay, instances (and pods) for `rps`.

    `ilp_time_limit_s` bounds the CBC/HiGHS run; hitting it raises solve_ilp.IlpTimeout.
    `clamp`: when no plan serves `rps` within the SLA, return the best plan for the most load
    the pool can serve within it (marked infeasible, Reason.CAPACITY: the excess is to be shed at
    admission) instead of a best-effort plan for all of it.
    `latency_model`: "triton" (the stage model of Triton's batcher) or "ipa" (IPA's formulation,
    for the IPA baseline: batch-fill wait, IPA's batching delay).
    """
    if latency_model not in P.LATENCY_MODELS:
        raise ConfigError(f"latency_model: expected one of {', '.join(P.LATENCY_MODELS)}, got {latency_model!r}")
    plan = _plan(spec, profiles, rps, mode, current, solver, headroom, ilp_time_limit_s, latency_model)
    if plan.feasible or not clamp or rps <= 0:
        return plan
    served = max_servable_rps(spec, profiles, rps, mode=mode, current=current, solver=solver, headroom=headroom,
                              ilp_time_limit_s=ilp_time_limit_s, latency_model=latency_model)
    if served is None:
        return plan
    best = served[1]
    return dataclasses.replace(
        best, feasible=False, reason=plan.reason,
        message=f"{plan.message}; planned for the {best.rps:.1f} rps the pool serves within the SLA "
                f"({1 - best.rps / rps:.0%} of the load to be shed)")


def max_servable_rps(spec: PipelineSpec, profiles: Profiles, rps: float, *, rel_tol: float = 0.01,
                     **options) -> tuple[float, Plan] | None:
    """The most load (below `rps`, to `rel_tol`) some plan serves within the SLA, and that
    plan; None when none serves even a trickle. Feasibility falls with the load, so bisection."""
    mode = Mode(options.pop("mode", Mode.SINGLE))
    args = dict(current=options.get("current"), solver=options.get("solver", "exact"),
                headroom=options.get("headroom"), ilp_time_limit_s=options.get("ilp_time_limit_s"),
                latency_model=options.get("latency_model", "triton"))
    low_rps = min(rps, 1e-3)
    low = _plan(spec, profiles, low_rps, mode, **args, diagnose=False)
    if low is None:
        return None
    lo, hi, best = low_rps, rps, low
    while hi - lo > rel_tol * hi:
        mid = (lo + hi) / 2
        plan = _plan(spec, profiles, mid, mode, **args, diagnose=False)
        if plan is not None:
            lo, best = mid, plan
        else:
            hi = mid
    return lo, best


def _plan(spec, profiles, rps, mode, current, solver, headroom, ilp_time_limit_s, latency_model,
          diagnose: bool = True) -> Plan | None:
    """The optimal plan for `rps`; when none is feasible, the diagnosed best effort (or None
    without `diagnose`)."""
    mode = Mode(mode)
    solve = _solver(solver, ilp_time_limit_s)
    if not (isinstance(rps, (int, float)) and math.isfinite(rps) and rps >= 0):
        raise ConfigError(f"rps: expected a finite number >= 0, got {rps!r}")
    headroom = spec.headroom if headroom is None else headroom
    if not (math.isfinite(headroom) and headroom >= 0):
        raise ConfigError(f"headroom: expected a number >= 0, got {headroom!r}")
    check_profiles(spec, profiles)
    pods_list = P.pod_counts(spec, mode)

    def grids_of(feasible_only: bool, counts: list[int] = pods_list) -> dict:
        return {(pods, s): P.grid(spec, profiles, s, pods, rps, mode=mode, headroom=headroom, current=current,
                                  sla_ms=spec.sla_ms, feasible_only=feasible_only, latency_model=latency_model)
                for pods in counts for s in range(len(spec.stages))}

    # Pod counts are searched in rounds, fewest first (4, then doubling while nothing is
    # feasible); once a plan is found, only the pod counts whose objective bound can still beat
    # it are searched. Exact: a pod count is skipped only when no plan with it can be better.
    # Each round builds only the rows that can be picked (the same rows, in the same order, as
    # filtering the full grid); the full grid is built only to diagnose an infeasible load.
    best = None
    done, upto = 0, min(4, len(pods_list))
    while done < upto:
        counts = pods_list[done:upto]
        problem = P.presolve(P.build(spec, profiles, rps, mode=mode, headroom=headroom, current=current,
                                     grids=grids_of(True, counts), pods_list=counts))
        sel = solve(problem)
        if sel is not None and (best is None or P.objective(problem, sel) > P.objective(*best) + 1e-12):
            best = (problem, sel)
        done = upto
        if best is None:
            upto = min(len(pods_list), 2 * upto)
        else:
            value = P.objective(*best)
            # The bound falls with the pod count: the pod counts that can still beat `value` are a prefix.
            upto = bisect.bisect_left(pods_list, True,
                                      key=lambda pods: P.objective_bound(spec, mode, pods) < value - 1e-9)
    if best is not None:
        return _assemble(spec, profiles, *best, rps, mode, current, solver, True, Reason.OPTIMAL, "", latency_model)
    if not diagnose:
        return None
    grids = grids_of(False)
    reason, message, be_problem, be_sel = _diagnose(spec, grids, pods_list, rps, headroom, solve)
    return _assemble(spec, profiles, be_problem, be_sel, rps, mode, current, solver, False, reason, message,
                     latency_model)


def _diagnose(spec, grids, pods_list, rps, headroom, solve):
    need = rps * (1 + headroom)
    full = {key: g.rows.share == g.rows.share.max() for key, g in grids.items()}
    for s, stage in enumerate(spec.stages):
        if not any(np.any(grids[p, s].cap_ok & full[p, s]) for p in pods_list):
            best = max(float(np.max(grids[p, s].rows.capacity_rps[full[p, s] & grids[p, s].res_ok], initial=0)) * p
                       for p in pods_list)
            return (Reason.CAPACITY,
                    f"stage `{stage.name}` cannot serve {rps:g} rps (+{headroom:.0%} headroom = {need:g} rps): "
                    f"at most {best:.1f} rps with {spec.limits.max_instances_per_stage} instances x "
                    f"{max(pods_list)} pod(s) of its fastest variant",
                    *_max_capacity(spec, grids, max(pods_list)))
        if not any(np.any(grids[p, s].cap_ok & grids[p, s].res_ok & full[p, s]) for p in pods_list):
            return (Reason.RESOURCES,
                    f"stage `{stage.name}` needs more than one pod's resources to serve {need:g} rps",
                    *_max_capacity(spec, grids, max(pods_list)))
    be = P.presolve(P.min_latency_problem(spec, grids, pods_list))
    sel = solve(be)
    if sel is None:
        return (Reason.RESOURCES,
                f"the stages together need more resources than a pod offers to serve {need:g} rps",
                *_max_capacity(spec, grids, max(pods_list)))
    best_lat = -P.objective(be, sel)
    free_lat = min(
        sum(float(np.min(g.rows.latency_ms[g.cap_ok & g.res_ok & full[p, s]], initial=math.inf))
            for s in range(len(spec.stages))
            for g in [grids[p, s]])
        for p in pods_list
    )
    if free_lat <= spec.sla_ms:
        return (Reason.RESOURCES,
                f"meeting the {spec.sla_ms:g} ms SLA at {rps:g} rps needs more resources than the pods offer "
                f"(best p99 within them: {best_lat:.1f} ms)", be, sel)
    return (Reason.LATENCY_SLA,
            f"no configuration meets the {spec.sla_ms:g} ms SLA at {rps:g} rps: the lowest achievable p99 "
            f"is {best_lat:.1f} ms; best-effort plan minimises p99", be, sel)


def _max_capacity(spec, grids, pods):
    """Best effort when a stage cannot keep up: per stage the highest-capacity row that fits a
    pod; if those together overfill the pod, each stage gets an equal share of it instead, so
    the best effort is still something the pod can run."""
    limit = np.array([spec.limits.pod.cpu, spec.limits.pod.gpu, spec.limits.pod.memory_mb], dtype=float)

    def picks_within(fraction):
        out = []
        for s in range(len(spec.stages)):
            g = grids[pods, s]
            r = g.rows
            ok = (r.share == r.share.max()) & g.res_ok & np.all(r.res <= limit * fraction + P.RES_TOL, axis=1)
            key = np.where(ok, r.capacity_rps, -np.inf) - 1e-9 * np.minimum(r.latency_ms, 1e12)
            out.append((int(np.argmax(key)),))
        return out

    picks = picks_within(1.0)
    used = sum(grids[pods, s].rows.res[i] for s, (i,) in enumerate(picks))
    if np.any(used > limit + P.RES_TOL):
        picks = picks_within(1.0 / len(spec.stages))
    stages = []
    for s in range(len(spec.stages)):
        r = grids[pods, s].rows
        stages.append(P.Rows(r.variant, np.ones_like(r.share), r.batch, r.instances, r.latency_ms,
                             r.capacity_rps, r.res, r.lin, r.acc))
    case = P.Case(pods=pods, rps_per_pod=0.0, stages=tuple(stages), const=0.0)
    problem = P.Problem(cases=(case,), sla_ms=math.inf, res_limit=np.full(3, math.inf), max_instances=10**9,
                        steps=1, split=False, product=False, alpha=0.0)
    return problem, P.Selection(case=0, picks=tuple(picks))


def plan_objective(spec: PipelineSpec, stages: tuple[StagePlan, ...], pods: int, mode: Mode,
                   current: Plan | None) -> float:
    """The objective of a plan, from the plan itself: alpha*accuracy - beta*cost - gamma*batch - switching."""
    obj = spec.objective
    beta = P.FIXED_MODE_COST_WEIGHT if mode is Mode.FIXED else obj.beta
    value = obj.alpha * P.combine([s.accuracy_score for s in stages], spec.combine)
    value -= beta * sum(s.cost for s in stages)
    value -= obj.gamma * sum(v.share * v.max_batch_size for s in stages for v in s.variants)
    if current is not None:
        cur = {s.stage: {v.model: v for v in s.variants} for s in current.stages}
        for s in stages:
            if s.stage not in cur:
                continue
            was = cur[s.stage]
            kept = sum(min(v.share, was[v.model].share) for v in s.variants if v.model in was)
            value -= obj.switch_variant * (1.0 - kept)
            value -= obj.switch_config * sum(
                (v.max_batch_size != was[v.model].max_batch_size) + (v.instances != was[v.model].instances)
                for v in s.variants if v.model in was)
        value -= obj.switch_config * (pods != current.pods)
    return value


def _assemble(spec, profiles, problem, sel, rps, mode, current, solver, feasible, reason, message,
              latency_model) -> Plan:
    case = problem.cases[sel.case]
    pods = case.pods
    rps_pod = rps / pods
    stages = []
    for s, (rows, picks) in enumerate(zip(case.stages, sel.picks)):
        stage = spec.stages[s]
        variants = []
        acc = score = cost = 0.0
        for r in picks:
            v = stage.variants[int(rows.variant[r])]
            share = float(rows.share[r]) / problem.steps
            b, n = int(rows.batch[r]), int(rows.instances[r])
            variants.append(VariantPlan(
                model=v.model, share=share, max_batch_size=b, max_queue_delay_us=ipa_queue_delay_us(b, rps_pod * share) if latency_model == "ipa" else 0,
                instances=n, rps=rps_pod * share, predicted_p99_ms=float(rows.latency_ms[r]),
                capacity_rps=float(rows.capacity_rps[r]) * pods,
            ))
            acc += share * v.accuracy
            score += float(rows.acc[r])
            cost += pods * n * v.resources.cost
        stages.append(StagePlan(
            stage=stage.name, variants=tuple(sorted(variants, key=lambda x: -x.share)),
            predicted_p99_ms=max(x.predicted_p99_ms for x in variants),
            capacity_rps=sum(x.capacity_rps for x in variants), accuracy=acc, accuracy_score=score, cost=cost,
        ))
    stages = tuple(stages)
    p99 = sum(s.predicted_p99_ms for s in stages)
    accuracy = P.combine([s.accuracy for s in stages], spec.combine)
    cost = sum(s.cost for s in stages)
    if feasible:
        message = (f"{mode.value} plan for {rps:g} rps: p99 {p99:.1f} ms within the {spec.sla_ms:g} ms SLA, "
                   f"accuracy {accuracy:.3f}, cost {cost:g}")
    return Plan(
        pipeline=spec.name, mode=mode, rps=rps, sla_ms=spec.sla_ms, pods=pods, stages=stages,
        objective=plan_objective(spec, stages, pods, mode, current), predicted_p99_ms=p99, accuracy=accuracy,
        accuracy_score=P.combine([s.accuracy_score for s in stages], spec.combine), cost=cost,
        feasible=feasible, reason=reason, message=message, solver=solver,
    )
