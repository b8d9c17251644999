"""Exact fast path: dominance pruning + depth-first branch and bound with a DP bound.

1. The planner has already dropped dominated rows (`problem.presolve`).
2. Split mode: a stage's *options* are combinations of rows of distinct variants whose shares
   sum to K, built variant by variant with Pareto pruning on (shares used, latency = max,
   resources, instances, lin, accuracy). Single mode: options are the rows.
3. Across stages, depth-first search picks one option per stage, best bound first. A node is
   cut when the latency or resources left cannot fit the cheapest completion, or when an upper
   bound on the best completion is not better than the incumbent. The bound on the remaining
   stages' `lin` is a dynamic programme over a grid of the latency budget in which each
   option's latency is rounded *down* to the grid (a relaxation, so the bound is admissible:
   floor(a) + floor(b) <= floor(a + b)); for combine=product the accuracy part is bounded on
   a grid of the running accuracy product p (the best completion is convex in p; see
   _bound_tables). Last stage: an exact lookup (`_Tail`) when no resource limit is finite.
   Leaves are exact, so the answer is the exact optimum of `problem.objective`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from adapter.core.latency import LATENCY_TOL_MS
from adapter.core.problem import RES_TOL, Problem, Rows, Selection

CELLS_PER_STAGE = 64  # latency-budget grid: rounding costs at most one cell per stage, SLA/64 in all
PRODUCT_POINTS = 5  # grid of the running accuracy product for the combine=product bound


@dataclass(frozen=True, eq=False)
class _Options:
    lat: np.ndarray
    res: np.ndarray  # (m, 3)
    lin: np.ndarray
    acc: np.ndarray
    members: list  # per option: tuple of row indices (or None: option i is row keep[i])
    keep: np.ndarray  # row index for single-row options


def _pareto(lat, res, lin, acc, extra) -> np.ndarray:
    """Mask of labels not dominated (O(m^2), used for the small split-mode label sets)."""
    m = len(lat)
    keep = np.ones(m, dtype=bool)
    cols_le = np.column_stack([lat, res, extra])  # smaller is better
    cols_ge = np.column_stack([lin, acc])  # larger is better
    for i in range(m):
        if not keep[i]:
            continue
        dom = np.all(cols_le <= cols_le[i], axis=1) & np.all(cols_ge >= cols_ge[i], axis=1)
        strict = np.any(cols_le < cols_le[i], axis=1) | np.any(cols_ge > cols_ge[i], axis=1)
        dom &= strict | (np.arange(m) < i)  # identical labels: keep the first
        dom[i] = False
        if np.any(dom & keep):
            keep[i] = False
    return keep


def _single_options(problem: Problem, rows: Rows) -> _Options:
    keep = np.arange(len(rows))
    return _Options(rows.latency_ms, rows.res, rows.lin, rows.acc, None, keep)


def _split_options(problem: Problem, rows: Rows) -> _Options:
    K, N = problem.steps, problem.max_instances
    keep = np.arange(len(rows))
    # labels: used shares, latency, res(3), instances, lin, acc, members
    k = np.zeros(1, dtype=int)
    lat, res, inst = np.zeros(1), np.zeros((1, 3)), np.zeros(1)
    lin, acc = np.zeros(1), np.zeros(1)
    members: list[tuple[int, ...]] = [()]
    for v in np.unique(rows.variant[keep]):
        rv = keep[rows.variant[keep] == v]
        # every old label, plus every old label extended by one row of variant v
        a, b = np.meshgrid(np.arange(len(lin)), rv, indexing="ij")
        a, b = a.ravel(), b.ravel()
        ok = (k[a] + rows.share[b] <= K) & (inst[a] + rows.instances[b] <= N)
        a, b = a[ok], b[ok]
        k = np.concatenate([k, k[a] + rows.share[b]])
        lat = np.concatenate([lat, np.maximum(lat[a], rows.latency_ms[b])])
        res = np.concatenate([res, res[a] + rows.res[b]])
        inst = np.concatenate([inst, inst[a] + rows.instances[b]])
        lin = np.concatenate([lin, lin[a] + rows.lin[b]])
        acc = np.concatenate([acc, acc[a] + rows.acc[b]])
        members = members + [members[i] + (int(j),) for i, j in zip(a, b)]
        mask = np.ones(len(k), dtype=bool)
        for kk in np.unique(k):
            sel = np.flatnonzero(k == kk)
            mask[sel] = _pareto(lat[sel], res[sel], lin[sel], acc[sel], inst[sel])
        idx = np.flatnonzero(mask)
        k, lat, res, inst, lin, acc = k[idx], lat[idx], res[idx], inst[idx], lin[idx], acc[idx]
        members = [members[i] for i in idx]
    full = np.flatnonzero(k == K)
    return _Options(lat[full], res[full], lin[full], acc[full], [members[i] for i in full], np.arange(0))


def _interp(table: np.ndarray, p: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Piecewise-linear interpolation of table[:, at] (rows: a grid of p in [0, 1]) at p."""
    J = table.shape[0]
    if J == 1:
        return table[0][at]
    x = np.clip(p, 0.0, 1.0) * (J - 1)
    i = np.minimum(np.floor(x).astype(int), J - 2)
    f = x - i
    lo, hi = table[i, at], table[i + 1, at]
    ok = np.isfinite(lo)  # feasibility of a budget does not depend on p: lo, hi finite together
    return np.where(ok, (1 - f) * np.where(ok, lo, 0.0) + f * np.where(ok, hi, 0.0), -np.inf)


def _interp_rows(table: np.ndarray, p: np.ndarray) -> np.ndarray:
    """_interp(table, p_m, c) for every budget c and each p_m: shape (len(p), cells + 1). The same
    arithmetic as _interp with p constant along a row, so the same values."""
    J = table.shape[0]
    if J == 1:
        return np.repeat(table[:1], len(p), axis=0)
    x = np.clip(p, 0.0, 1.0) * (J - 1)
    i = np.minimum(np.floor(x).astype(int), J - 2)
    f = (x - i)[:, None]
    lo, hi = table[i], table[i + 1]
    ok = np.isfinite(lo)
    return np.where(ok, (1 - f) * np.where(ok, lo, 0.0) + f * np.where(ok, hi, 0.0), -np.inf)


def _bound_tables(problem: Problem, opts: list[_Options]) -> tuple[list[np.ndarray], float, int]:
    """Upper-bound tables T[s][j, c] over a grid of the latency budget (cells, latencies rounded down).

    T[s][j, c] bounds F_s(c, p_j), the best sum(lin) + alpha * p_j * prod(acc) over stages s..
    within c cells, for p_j on a grid of [0, 1] (one point, p = 0, without combine=product).
    F_s(c, .) is a maximum of lines in p, hence convex, so between grid points it lies below the
    chord: interpolating T is an upper bound for any p. Choosing option o at stage s multiplies p
    by its accuracy, which is how T[s] is built from T[s + 1].
    """
    S = len(opts)
    cells = 0 if math.isinf(problem.sla_ms) else CELLS_PER_STAGE * max(S, 4)
    cell = math.inf if cells == 0 else problem.sla_ms / cells
    alpha = problem.alpha if problem.product else 0.0
    pgrid = np.linspace(0.0, 1.0, PRODUCT_POINTS) if alpha else np.zeros(1)
    T = [None] * S + [np.repeat(alpha * pgrid[:, None], cells + 1, axis=1)]
    c = np.arange(cells + 1)
    P = len(pgrid)  # noqa: N806
    # T[0] is never read by the search (stage 0 looks up T[1]), so it is not built.
    for s in range(S - 1, 0, -1):
        o = opts[s]
        d = np.zeros(len(o.lin), dtype=int) if cells == 0 else np.clip(
            np.floor(o.lat / cell - 1e-9).astype(int), 0, cells)
        levels, lev = np.unique(o.acc if alpha else np.zeros(len(o.lin)), return_inverse=True)
        env = np.full((len(levels), cells + 1), -np.inf)  # best lin per (accuracy level, cell)
        np.maximum.at(env, (lev.ravel(), d), o.lin)
        L, C1 = len(levels), cells + 1  # noqa: N806
        # F_{s+1}(c', pj * a) for every level a and pj at once (elementwise: the same values as one at a time)
        nxt = _interp_rows(T[s + 1], (levels[:, None] * pgrid[None, :]).ravel()).reshape(L, P, C1)
        best = np.full((P, C1), -np.inf)
        if s == S - 1:
            # T[S] does not depend on the budget: max_d (env[d] + x) = (running max of env) + x,
            # exactly (rounding is monotone), without the cells x cells table
            best = (np.maximum.accumulate(env, axis=1)[:, None, :] + nxt[:, :, :1]).max(axis=0)
        else:
            finite = np.flatnonzero(np.isfinite(nxt[0, 0]))  # the same budgets are feasible for every p
            la, D = np.nonzero(np.isfinite(env))  # (level, cell) pairs with an option
            lo = D.min() + finite[0] if len(finite) else C1  # below it every term is -inf
            if lo <= cells:
                # nxt padded on the left with -inf: a negative shift reads -inf (the same as masking
                # it). For each (level, cell) pair the budgets lo.. read one contiguous window of it;
                # the windows are stacked and the max over pairs is taken at once
                pad = np.concatenate([np.full((L, P, C1), -np.inf), nxt], axis=2)
                win = np.lib.stride_tricks.sliding_window_view(pad, C1 - lo, axis=2)
                val = win[la, :, C1 + lo - D]  # a copy: (pairs, P, budgets)
                val += env[la, D][:, None, None]
                best[:, lo:] = val.max(axis=0)
        T[s] = best
    return T, cell, cells


class _Tail:
    """Exact best last-stage choice for any latency budget (no finite resource limit): per
    accuracy level (one level unless combine=product), options sorted by latency with a running
    maximum of `lin`. Used at the second-to-last stage instead of one more level of search."""

    def __init__(self, o: _Options, product: bool) -> None:
        keys = o.acc if product else np.zeros(len(o.lin))
        self.levels, self.lat, self.best, self.arg = [], [], [], []
        for a in np.unique(keys):
            idx = np.flatnonzero(keys == a)
            idx = idx[np.argsort(o.lat[idx], kind="stable")]
            lin = o.lin[idx]
            run = np.maximum.accumulate(lin)
            pos = np.maximum.accumulate(np.where(lin >= run, np.arange(len(idx)), 0))
            self.levels.append(float(a))
            self.lat.append(o.lat[idx])
            self.best.append(run)
            self.arg.append(idx[pos])

    def complete(self, budget: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each budget: max over last-stage options within it of lin + weight * acc, and which."""
        value = np.full(len(budget), -np.inf)
        which = np.zeros(len(budget), dtype=int)
        for a, lat, best, arg in zip(self.levels, self.lat, self.best, self.arg):
            j = np.searchsorted(lat, budget + LATENCY_TOL_MS, side="right") - 1
            v = np.where(j >= 0, best[np.maximum(j, 0)] + weight * a, -np.inf)
            better = v > value
            value = np.where(better, v, value)
            which = np.where(better, arg[np.maximum(j, 0)], which)
        return value, which


def _search(problem: Problem, opts: list[_Options], incumbent: float) -> tuple[float, list[int] | None]:
    S = len(opts)
    sla = problem.sla_ms
    limit = problem.res_limit
    check_res = bool(np.any(np.isfinite(limit)))
    suf_lat = np.zeros(S + 1)
    suf_res = np.zeros((S + 1, 3))
    for s in range(S - 1, -1, -1):
        suf_lat[s] = suf_lat[s + 1] + opts[s].lat.min()
        suf_res[s] = suf_res[s + 1] + opts[s].res.min(axis=0)
    if suf_lat[0] > sla + LATENCY_TOL_MS or np.any(suf_res[0] > limit + RES_TOL):
        return -math.inf, None
    T, cell, cells = _bound_tables(problem, opts)  # noqa: N806
    alpha = problem.alpha if problem.product else 0.0
    best = [incumbent, None]
    picks = [0] * S
    tail = _Tail(opts[-1], problem.product) if S >= 2 and not check_res else None

    def visit(s: int, lat: float, res: np.ndarray, lin: float, prod: float) -> None:
        o = opts[s]
        rem = sla - lat - o.lat
        ok = rem - suf_lat[s + 1] >= -LATENCY_TOL_MS
        if check_res:
            ok &= np.all(res + o.res + suf_res[s + 1] <= limit + RES_TOL, axis=1)
        if s == S - 1:
            val = np.where(ok, lin + o.lin + alpha * prod * o.acc, -np.inf)
            i = int(np.argmax(val))
            if val[i] > best[0]:
                picks[s] = i
                best[0], best[1] = float(val[i]), list(picks)
            return
        if cells == 0:
            at = np.zeros(len(rem), dtype=int)
        else:
            at = np.floor((np.maximum(rem, 0.0) + LATENCY_TOL_MS) / cell + 1e-9)
            at = np.clip(at.astype(int), 0, cells)
        ub = lin + o.lin + _interp(T[s + 1], prod * o.acc, at)
        cand = np.flatnonzero(ok & (ub > best[0]))
        if s == S - 2 and tail is not None:
            if len(cand):
                done, last = tail.complete(rem[cand], alpha * prod * o.acc[cand])
                val = lin + o.lin[cand] + done
                i = int(np.argmax(val))
                if val[i] > best[0]:
                    picks[s], picks[s + 1] = int(cand[i]), int(last[i])
                    best[0], best[1] = float(val[i]), list(picks)
            return
        for i in cand[np.argsort(-ub[cand], kind="stable")]:
            if ub[i] <= best[0]:
                break
            picks[s] = int(i)
            visit(s + 1, lat + o.lat[i], res + o.res[i], lin + o.lin[i], prod * o.acc[i])

    visit(0, 0.0, np.zeros(3), 0.0, 1.0)
    return best[0], best[1]


def solve(problem: Problem) -> Selection | None:
    """The exact optimum of `problem` (None if no selection satisfies the constraints)."""
    best_val, best_sel = -math.inf, None
    for ci, case in enumerate(problem.cases):
        if any(len(r) == 0 for r in case.stages):
            continue
        make = _split_options if problem.split else _single_options
        opts = [make(problem, rows) for rows in case.stages]
        if any(len(o.lin) == 0 for o in opts):
            continue
        val, picks = _search(problem, opts, best_val - case.const)
        if picks is None:
            continue
        val += case.const
        if val > best_val:
            chosen = tuple(
                o.members[i] if o.members is not None else (int(o.keep[i]),) for o, i in zip(opts, picks)
            )
            best_val, best_sel = val, Selection(case=ci, picks=chosen)
    return best_sel
