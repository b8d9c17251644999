"""The planning problem both solvers see: candidate rows per stage, constraints, objective.

A *row* is one variant of a stage serving a share k/K of the stage's traffic with batch size b
and n instances per pod. Its latency and capacity come from `latency.stage_model` (the one
model), and every objective term that is linear in the choice of rows is folded into `lin`:

    lin = -beta * pods * n * cost_v  - gamma * (k/K) * b  - switching terms
          (+ alpha * acc          for combine=sum)
          (+ alpha * acc / S      for combine=mean)
    acc = (k/K) * normalised accuracy of v

A plan picks, for one pod count (a `Case`), rows per stage whose shares sum to K (one row per
variant at most). Pipeline objective:

    const_case + sum(lin)  [+ alpha * prod_s(sum of acc in stage s)   for combine=product]

Constraints: sum over stages of the slowest picked row's latency <= SLA; per-pod resources
(cpu, gpu, memory) of all picked rows <= the pod's; in split mode at most
`max_instances_per_stage` instances per stage per pod (single mode enforces it per row).
Rows that fail capacity (capacity < rate * (1 + headroom)), exceed the SLA alone or exceed a
pod alone are dropped when the problem is built.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from adapter.core.latency import LATENCY_TOL_MS, ipa_stage_model, stage_model
from adapter.core.plan import Mode, Plan
from adapter.core.profile import Profiles, service_stats
from adapter.core.spec import Combine, Normalize, PipelineSpec, StageSpec

FIXED_MODE_COST_WEIGHT = 0.0  # fixed capacity: the cores are paid for; plans differ only in accuracy, batch, switching
RES_TOL = 1e-9


@dataclass(frozen=True, eq=False)
class Rows:
    """Struct of arrays: one entry per candidate row of one stage."""

    variant: np.ndarray  # index into the stage's variants
    share: np.ndarray  # k in 1..K
    batch: np.ndarray
    instances: np.ndarray  # per pod
    latency_ms: np.ndarray
    capacity_rps: np.ndarray  # per pod
    res: np.ndarray  # (m, 3) per pod: cpu, gpu, memory_mb
    lin: np.ndarray
    acc: np.ndarray

    def __len__(self) -> int:
        return len(self.lin)

    def take(self, idx: np.ndarray) -> "Rows":
        return Rows(*(getattr(self, f)[idx] for f in Rows.__dataclass_fields__))


@dataclass(frozen=True, eq=False)
class Case:
    pods: int
    rps_per_pod: float
    stages: tuple[Rows, ...]
    const: float


@dataclass(frozen=True, eq=False)
class Problem:
    cases: tuple[Case, ...]
    sla_ms: float  # inf: no latency constraint (best-effort searches)
    res_limit: np.ndarray  # (3,) per pod
    max_instances: int
    steps: int  # K
    split: bool
    product: bool
    alpha: float

    @property
    def n_stages(self) -> int:
        return len(self.cases[0].stages)


@dataclass(frozen=True)
class Selection:
    case: int
    picks: tuple[tuple[int, ...], ...]  # per stage: row indices


def objective(problem: Problem, sel: Selection) -> float:
    case = problem.cases[sel.case]
    value = case.const
    prod = 1.0
    for rows, picks in zip(case.stages, sel.picks):
        idx = list(picks)
        value += float(rows.lin[idx].sum())
        prod *= float(rows.acc[idx].sum())
    return value + (problem.alpha * prod if problem.product else 0.0)


def violations(problem: Problem, sel: Selection) -> list[str]:
    """Which constraints `sel` breaks (empty: feasible). Used by tests and as a guard."""
    case = problem.cases[sel.case]
    out = []
    lat = sum(float(r.latency_ms[list(p)].max()) for r, p in zip(case.stages, sel.picks))
    if lat > problem.sla_ms + LATENCY_TOL_MS:
        out.append(f"latency {lat:.3f} ms > SLA {problem.sla_ms:g} ms")
    res = sum(r.res[list(p)].sum(axis=0) for r, p in zip(case.stages, sel.picks))
    if np.any(res > problem.res_limit + RES_TOL):
        out.append("resources")
    for r, p in zip(case.stages, sel.picks):
        idx = list(p)
        if int(r.share[idx].sum()) != problem.steps or len(set(r.variant[idx].tolist())) != len(idx):
            out.append("shares")
        if int(r.instances[idx].sum()) > problem.max_instances:
            out.append("instances")
    return out


def normalized_accuracies(stage: StageSpec, how: Normalize) -> list[float]:
    accs = [v.accuracy for v in stage.variants]
    if how is Normalize.NONE:
        return accs
    lo, hi = min(accs), max(accs)
    if hi - lo <= 0:
        return [1.0] * len(accs)
    if how is Normalize.MINMAX:
        return [(a - lo) / (hi - lo) for a in accs]
    levels = sorted(set(accs))  # RANK (IPA): equal accuracies share a rank
    return [levels.index(a) / (len(levels) - 1) for a in accs]


def combine(values: list[float], how: Combine) -> float:
    if how is Combine.PRODUCT:
        return math.prod(values)
    total = math.fsum(values)
    return total / len(values) if how is Combine.MEAN else total


@dataclass(frozen=True, eq=False)
class Grid:
    """All candidate rows of one stage for one pod count, before filtering, with masks."""

    rows: Rows
    cap_ok: np.ndarray
    res_ok: np.ndarray
    lat_ok: np.ndarray


def _current_map(current: Plan | None) -> tuple[dict[str, dict[str, tuple[float, int, int]]], int | None]:
    if current is None:
        return {}, None
    stages = {
        s.stage: {v.model: (v.share, v.max_batch_size, v.instances) for v in s.variants} for s in current.stages
    }
    return stages, current.pods


LATENCY_MODELS = ("triton", "ipa")


def grid(spec: PipelineSpec, profiles: Profiles, s: int, pods: int, rps: float, *, mode: Mode,
         headroom: float, current: Plan | None, sla_ms: float, feasible_only: bool = False,
         latency_model: str = "triton") -> Grid:
    """All candidate rows with their masks, or with `feasible_only` only the rows that pass every
    mask (the same rows, values and order as filtering the full grid; masks all true). Capacity
    and pod size are then checked on broadcast (variant, share, batch, instances) arrays before
    any row is materialised, and the latency model runs only on the rows that pass them."""
    stage = spec.stages[s]
    obj = spec.objective
    beta = FIXED_MODE_COST_WEIGHT if mode is Mode.FIXED else obj.beta
    K = spec.split_steps if mode is Mode.SPLIT else 1
    N = spec.limits.max_instances_per_stage
    S = len(spec.stages)
    cur_stages, _ = _current_map(current)
    cur = cur_stages.get(stage.name)
    norm = normalized_accuracies(stage, spec.normalize)
    pod = spec.limits.pod
    limit = np.array([pod.cpu, pod.gpu, pod.memory_mb])
    rps_pod = rps / pods
    V = len(stage.variants)
    profs = [profiles[v.model] for v in stage.variants]
    per = np.array([[x.resources.cpu, x.resources.gpu, x.resources.memory_mb] for x in stage.variants])
    max_b = max(stage.batch_sizes)
    stats = [service_stats(p, max_b) for p in profs]
    mean_vb = np.array([st.mean_ms for st in stats])  # (V, max_b + 1)
    if latency_model == "ipa":  # IPA's capacity: b / l(b), l the p99 fit
        mean_vb = np.array([[np.inf] + [p.latency.p99_ms(bb) * p.service_scale for bb in range(1, max_b + 1)]
                            for p in profs])
    p99_vb = np.array([st.p99_ms for st in stats])
    cs2_vb = np.array([st.cs2 for st in stats])
    effv = np.array([p.instance_efficiency for p in profs])
    if feasible_only:
        # Axes (variant, share, batch, instances), broadcast instead of materialised; capacity and
        # pod size are checked on the broadcast arrays with the same arithmetic as stage_model and
        # the masks below (bit-identical), and np.nonzero returns the survivors in meshgrid order.
        batches = np.array(stage.batch_sizes)
        vb = np.arange(V)[:, None]
        bf = batches[None, :]
        measured = np.array([p.latency.max_batch_size for p in profs])[vb] >= bf  # (V, B)
        nn = np.arange(1, N + 1)
        c_eff = 1.0 + (nn.astype(float)[None, :] - 1.0) * effv[:, None]  # (V, N)
        cap0 = c_eff[:, None, :] * bf[:, :, None].astype(float) * 1000.0 / mean_vb[:, batches][:, :, None]  # (V, B, N)
        need = rps_pod * np.arange(1, K + 1) / K * (1.0 + headroom) - 1e-12  # (K,)
        res_ok = np.all(nn[None, :, None] * per[:, None, :] <= limit + RES_TOL, axis=2)  # (V, N)
        ok_vbn = measured[:, :, None] & res_ok[:, None, :]
        mask = ok_vbn[:, None, :, :] & (cap0[:, None, :, :] >= need[None, :, None, None])
        vi, ki, bi, ni = np.nonzero(mask)
        v, k, b, n = vi, ki + 1, batches[bi], ni + 1
    else:
        v, k, b, n = (a.ravel() for a in np.meshgrid(
            np.arange(V), np.arange(1, K + 1), np.array(stage.batch_sizes), np.arange(1, N + 1), indexing="ij"))
        measured = np.array([p.latency.max_batch_size for p in profs])[v] >= b  # no extrapolation
        v, k, b, n = v[measured], k[measured], b[measured], n[measured]
    share = k / K
    if latency_model == "ipa":
        lat, cap = ipa_stage_model(mean_vb[v, b], b, n, rps_pod * share, effv[v])
    else:
        lat, cap = stage_model(mean_vb[v], p99_vb[v], cs2_vb[v], b, n, rps_pod * share, effv[v])
    if feasible_only:
        keep = lat <= sla_ms + LATENCY_TOL_MS
        v, k, b, n, share, lat, cap = v[keep], k[keep], b[keep], n[keep], share[keep], lat[keep], cap[keep]
    res = n[:, None] * per[v]
    acc = share * np.array(norm)[v]
    lin = -beta * pods * n * np.array([x.resources.cost for x in stage.variants])[v] - obj.gamma * share * b
    if spec.combine is Combine.SUM:
        lin = lin + obj.alpha * acc
    elif spec.combine is Combine.MEAN:
        lin = lin + obj.alpha * acc / S
    if cur is not None:
        was = [cur.get(x.model) for x in stage.variants]
        cur_share = np.array([w[0] if w else 0.0 for w in was])[v]
        lin = lin + obj.switch_variant * np.minimum(share, cur_share)
        known = np.array([w is not None for w in was])[v]
        cb = np.array([w[1] if w else 0 for w in was])[v]
        cn = np.array([w[2] if w else 0 for w in was])[v]
        lin = lin - obj.switch_config * known * ((b != cb).astype(float) + (n != cn).astype(float))
    rows = Rows(v, k, b, n, lat, cap, res, lin, acc)
    if feasible_only:
        ones = np.ones(len(lin), dtype=bool)
        return Grid(rows=rows, cap_ok=ones, res_ok=ones, lat_ok=ones)
    return Grid(
        rows=rows,
        cap_ok=rows.capacity_rps >= rps_pod * rows.share / K * (1.0 + headroom) - 1e-12,
        res_ok=np.all(rows.res <= limit + RES_TOL, axis=1),
        lat_ok=rows.latency_ms <= sla_ms + LATENCY_TOL_MS,
    )


def pod_counts(spec: PipelineSpec, mode: Mode) -> list[int]:
    return [spec.limits.max_pods] if mode is Mode.FIXED else list(range(1, spec.limits.max_pods + 1))


def objective_bound(spec: PipelineSpec, mode: Mode, pods: int) -> float:
    """An upper bound on the objective of any plan with `pods` pods: the best accuracy, every
    stage on one instance of its cheapest variant in every pod, the smallest batches, no
    switching. It falls with the pod count, so pod counts past the first whose bound is below a
    plan already found need not be searched."""
    obj = spec.objective
    beta = FIXED_MODE_COST_WEIGHT if mode is Mode.FIXED else obj.beta
    best = combine([max(normalized_accuracies(st, spec.normalize)) for st in spec.stages], spec.combine)
    cheapest = sum(min(v.resources.cost for v in st.variants) for st in spec.stages)
    return obj.alpha * best - beta * pods * cheapest - obj.gamma * sum(min(st.batch_sizes) for st in spec.stages)


def build(spec: PipelineSpec, profiles: Profiles, rps: float, *, mode: Mode, headroom: float,
          current: Plan | None, grids: Mapping[tuple[int, int], Grid] | None = None,
          pods_list: list[int] | None = None, latency_model: str = "triton") -> Problem:
    """The planning problem proper (rows filtered by capacity, SLA and pod size), over the
    given pod counts (default: all the spec allows)."""
    cases = []
    cur_stages, cur_pods = _current_map(current)
    obj = spec.objective
    for pods in pods_list or pod_counts(spec, mode):
        stages = []
        for s in range(len(spec.stages)):
            g = grids[(pods, s)] if grids else grid(spec, profiles, s, pods, rps, mode=mode, headroom=headroom,
                                                    current=current, sla_ms=spec.sla_ms, latency_model=latency_model)
            ok = g.cap_ok & g.res_ok & g.lat_ok
            stages.append(g.rows if ok.all() else g.rows.take(np.flatnonzero(ok)))  # feasible-only grids: as is
        const = 0.0
        if current is not None:
            const -= obj.switch_variant * sum(1 for st in spec.stages if st.name in cur_stages)
            const -= obj.switch_config * float(cur_pods is not None and pods != cur_pods)
        cases.append(Case(pods=pods, rps_per_pod=rps / pods, stages=tuple(stages), const=const))
    pod = spec.limits.pod
    return Problem(
        cases=tuple(cases), sla_ms=spec.sla_ms, res_limit=np.array([pod.cpu, pod.gpu, pod.memory_mb]),
        max_instances=spec.limits.max_instances_per_stage, steps=spec.split_steps if mode is Mode.SPLIT else 1,
        split=mode is Mode.SPLIT, product=spec.combine is Combine.PRODUCT, alpha=spec.objective.alpha,
    )


def min_latency_problem(spec: PipelineSpec, grids: Mapping[tuple[int, int], Grid], pods_list: list[int]) -> Problem:
    """Best effort when the SLA cannot be met: the lowest end-to-end p99 that still has the
    capacity and fits the pods (single variant per stage, objective = -latency)."""
    cases = []
    for pods in pods_list:
        stages = []
        for s in range(len(spec.stages)):
            g = grids[(pods, s)]
            full = g.rows.share == g.rows.share.max()
            r = g.rows.take(np.flatnonzero(g.cap_ok & g.res_ok & full))
            stages.append(Rows(r.variant, np.ones_like(r.share), r.batch, r.instances, r.latency_ms,
                               r.capacity_rps, r.res, -r.latency_ms, r.acc))
        cases.append(Case(pods=pods, rps_per_pod=0.0, stages=tuple(stages), const=0.0))
    pod = spec.limits.pod
    return Problem(
        cases=tuple(cases), sla_ms=math.inf, res_limit=np.array([pod.cpu, pod.gpu, pod.memory_mb]),
        max_instances=spec.limits.max_instances_per_stage, steps=1, split=False, product=False, alpha=0.0,
    )


def _undominated(rows: Rows, keys: np.ndarray) -> np.ndarray:
    """Indices of rows not dominated within their key group (lower latency, higher lin)."""
    if len(rows) == 0:
        return np.arange(0)
    varying = [col for col in keys.T[::-1] if len(col) and np.any(col != col[0])]  # a constant key sorts nothing
    order = np.lexsort((-rows.lin, rows.latency_ms, *varying))
    k = keys[order]
    new_group = np.concatenate(([True], np.any(k[1:] != k[:-1], axis=1)))
    g = np.cumsum(new_group)
    lin = rows.lin[order]
    span = float(lin.max() - lin.min()) + 1.0
    shifted = lin + g * span * 2.0  # groups ascending: a segmented running max in one pass
    prev = np.concatenate(([-np.inf], np.maximum.accumulate(shifted)[:-1]))
    return np.sort(order[new_group | (shifted > prev)])


def presolve(problem: Problem) -> Problem:
    """Drop dominated rows (exact; both solvers see the result).

    Rows are grouped by everything a constraint or the non-linear part of the objective can see
    apart from latency: the per-pod resources that have a finite limit, the accuracy when
    combine=product, and in split mode the variant, share and instance count. Within a group a
    row is dropped if another has lower-or-equal latency and higher-or-equal `lin` (ties keep
    one): swapping it in keeps every constraint and does not lower the objective.
    """
    finite = np.isfinite(problem.res_limit)
    cases = []
    for case in problem.cases:
        stages = []
        for rows in case.stages:
            cols = [rows.res[:, finite]]
            if problem.product:
                cols.append(rows.acc[:, None])
            if problem.split:
                cols.append(np.column_stack([rows.variant, rows.share, rows.instances]).astype(float))
            keys = np.column_stack(cols) if any(c.shape[1] for c in cols) else np.zeros((len(rows), 1))
            stages.append(rows.take(_undominated(rows, keys)))
        cases.append(Case(pods=case.pods, rps_per_pod=case.rps_per_pod, stages=tuple(stages), const=case.const))
    return Problem(cases=tuple(cases), sla_ms=problem.sla_ms, res_limit=problem.res_limit,
                   max_instances=problem.max_instances, steps=problem.steps, split=problem.split,
                   product=problem.product, alpha=problem.alpha)
