"""The same problem as a PuLP mixed-integer program (CBC by default, HiGHS selectable).

Variables: x[c,s,r] in {0,1} picks row r of stage s in pod-count case c; z[c] in {0,1} picks the
case. Constraints:

    sum_c z[c] = 1
    sum_r share_r * x[c,s,r] = K * z[c]                 every stage gets all its traffic
    sum_{r of variant v} x[c,s,r] <= z[c]               (split) one configuration per variant
    sum_r n_r * x[c,s,r] <= N * z[c]                    (split) instances per stage per pod
    single: sum lat_r x <= SLA;  split: L_s >= sum_{r of v} lat_r x for each v, sum_s L_s <= SLA
    sum res_r x <= pod limit  (each finite resource)

Objective: sum const_c z[c] + sum lin_r x[c,s,r] (+ alpha * Q for combine=product).

combine=product is not linear, and IPA's Gurobi model gives up on it. The log transform is not an
option either: max alpha*prod(A) - beta*cost is not max alpha*sum(log A) - beta*cost. We keep the
exact objective with a standard linearisation of a product of a bounded continuous variable and
a binary. Let y[s,v,k] = sum of x over rows of variant v at share k (binary), so the stage accuracy
is A_s = sum a_{v,k} y[s,v,k]. Chain Q_0 = A_0 and Q_s = Q_{s-1} * A_s = sum a_{v,k} w[s,v,k] with
w = Q_{s-1} * y made exact for binary y by the McCormick inequalities
    0 <= w <= U_{s-1} y,   w <= Q_{s-1},   w >= Q_{s-1} - U_{s-1} (1 - y)
where U_{s-1} = product of the best accuracies up to s-1 (an upper bound on Q_{s-1}). For binary y
these force w = Q_{s-1} y exactly, so Q_{S-1} = prod_s A_s: the integer program optimises the
same objective as the exact solver, not a surrogate.
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict

import pulp

from adapter.core.latency import LATENCY_TOL_MS
from adapter.core.problem import Problem, Selection, violations
from adapter.errors import AdapterError

SOLVERS = ("cbc", "highs")


class IlpTimeout(AdapterError):
    """The integer program hit its time limit before proving optimality."""


def _backend(name: str, time_limit_s: float | None):
    if name == "cbc":
        # CBC only looks for solutions better by its cutoff increment (1e-4 by default), which
        # skips small improvements; ask for every one.
        # The CBC binary bundled with the pinned PuLP 3.3.2; PuLP 4.0 moves it to an extra
        # (`pulp[cbc]`) and warns on every solve until then.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="PULP_CBC_CMD is deprecated", category=DeprecationWarning)
            return pulp.PULP_CBC_CMD(msg=False, gapRel=1e-9, gapAbs=1e-9, options=["increment 1e-10"],
                                     timeLimit=time_limit_s)
    if name == "highs":
        return pulp.HiGHS(msg=False, gapRel=1e-9, gapAbs=1e-9, timeLimit=time_limit_s)
    raise ValueError(f"unknown ILP backend {name!r}; expected one of {SOLVERS}")


def solve(problem: Problem, backend: str = "cbc", time_limit_s: float | None = None) -> Selection | None:
    """Optimal selection, or None if infeasible; raises IlpTimeout if the time limit cut it short."""
    m = pulp.LpProblem("pipeline_plan", pulp.LpMaximize)
    S, K = problem.n_stages, problem.steps
    cases = [c for c in range(len(problem.cases)) if all(len(r) for r in problem.cases[c].stages)]
    if not cases:
        return None
    z = {c: m.add_variable(f"z_{c}", cat="Binary") for c in cases}
    m += pulp.lpSum(z.values()) == 1
    x: dict[tuple[int, int, int], pulp.LpVariable] = {}
    for c in cases:
        for s, rows in enumerate(problem.cases[c].stages):
            for r in range(len(rows)):
                x[c, s, r] = m.add_variable(f"x_{c}_{s}_{r}", cat="Binary")

    def rows_of(c, s):
        return problem.cases[c].stages[s]

    lat_terms, res_terms = [], [[] for _ in range(3)]
    for c in cases:
        for s in range(S):
            rows = rows_of(c, s)
            m += pulp.lpSum(int(rows.share[r]) * x[c, s, r] for r in range(len(rows))) == K * z[c]
            if problem.split:
                by_variant = defaultdict(list)
                for r in range(len(rows)):
                    by_variant[int(rows.variant[r])].append(r)
                for rs in by_variant.values():
                    m += pulp.lpSum(x[c, s, r] for r in rs) <= z[c]
                m += pulp.lpSum(int(rows.instances[r]) * x[c, s, r] for r in range(len(rows))) <= (
                    problem.max_instances * z[c])
            for r in range(len(rows)):
                lat_terms.append((float(rows.latency_ms[r]), x[c, s, r], s, int(rows.variant[r])))
                for d in range(3):
                    if math.isfinite(problem.res_limit[d]) and rows.res[r, d]:
                        res_terms[d].append(float(rows.res[r, d]) * x[c, s, r])
    if math.isfinite(problem.sla_ms):
        bound = problem.sla_ms + LATENCY_TOL_MS
        if problem.split:
            L = [m.add_variable(f"L_{s}", lowBound=0) for s in range(S)]
            per = defaultdict(list)
            for lat, var, s, v in lat_terms:
                per[s, v].append(lat * var)
            for (s, v), terms in per.items():
                m += L[s] >= pulp.lpSum(terms)
            m += pulp.lpSum(L) <= bound
        else:
            m += pulp.lpSum(lat * var for lat, var, _, _ in lat_terms) <= bound
    for d in range(3):
        if res_terms[d]:
            m += pulp.lpSum(res_terms[d]) <= float(problem.res_limit[d])

    objective = [problem.cases[c].const * z[c] for c in cases]
    objective += [float(rows_of(c, s).lin[r]) * var for (c, s, r), var in x.items()]
    if problem.product:
        objective.append(problem.alpha * _product_chain(m, problem, cases, x))
    m += pulp.lpSum(objective)
    status = m.solve(_backend(backend, time_limit_s))
    if time_limit_s is not None and m.sol_status != pulp.LpSolutionOptimal and pulp.LpStatus[status] != "Infeasible":
        raise IlpTimeout(f"{backend}: no proven optimum within {time_limit_s:g} s")
    if pulp.LpStatus[status] != "Optimal":
        return None
    for c in cases:
        if (z[c].value() or 0) > 0.5:
            picks = tuple(
                tuple(r for r in range(len(rows_of(c, s))) if (x[c, s, r].value() or 0) > 0.5) for s in range(S)
            )
            sel = Selection(case=c, picks=picks)
            # CBC can report "Optimal" for an infeasible model and hand back a point that breaks a
            # constraint; never pass that on: check the answer against the problem itself.
            return None if violations(problem, sel) else sel
    return None


def _product_chain(m: pulp.LpProblem, problem: Problem, cases: list[int], x: dict) -> pulp.LpAffineExpression:
    S = problem.n_stages
    groups: list[dict[tuple[int, int], list]] = [defaultdict(list) for _ in range(S)]
    acc_of: list[dict[tuple[int, int], float]] = [{} for _ in range(S)]
    for (c, s, r), var in x.items():
        rows = problem.cases[c].stages[s]
        key = (int(rows.variant[r]), int(rows.share[r]))
        groups[s][key].append(var)
        acc_of[s][key] = float(rows.acc[r])
    ys = [{key: pulp.lpSum(vs) for key, vs in groups[s].items()} for s in range(S)]
    q = pulp.lpSum(acc_of[0][key] * y for key, y in ys[0].items())
    upper = max(acc_of[0].values())
    for s in range(1, S):
        terms = []
        for key, y in ys[s].items():
            w = m.add_variable(f"w_{s}_{key[0]}_{key[1]}", lowBound=0)
            m += w <= upper * y
            m += w <= q
            m += w >= q - upper * (1 - y)
            terms.append(acc_of[s][key] * w)
        q_s = m.add_variable(f"q_{s}", lowBound=0)
        m += q_s == pulp.lpSum(terms)
        q = q_s
        upper *= max(acc_of[s].values())
    return q
