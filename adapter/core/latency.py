"""The stage latency and capacity model: one model of a Triton stage, used by both solvers,
brute force, the policy's correction, and checked against the simulator (tests/core/test_latency.py).

One variant serving `rps` requests/s per pod with n instances and Triton's dynamic batcher
(max / preferred batch B, no queue delay: a batch is whatever is queued when an instance is
free, up to B). From the profile, per batch size b: m(b) and S99(b), the mean and p99 service
time of one batch on one instance alone, and cs2(b) its squared coefficient of variation
(`profile.service_stats`, the same lognormal service times the simulator draws).

    c_eff     1 + (n - 1) * e              effective instances (e = measured instance efficiency)
    f         n / c_eff                    stretch of a batch while all n instances share the cores
    thr(b)    c_eff * b * 1000 / m(b)      requests/s the instances sustain in batches of b
    capacity  thr(B)                       once a queue builds (a burst), the batcher forms batches
                                           of B: the stage drains only if thr(B) > rps. Where larger
                                           batches are slower per request (CPU embedders) a stage
                                           can run below thr(B) at small batches for a while and
                                           then collapse; thr(B) is the rate it survives a burst at.
    b_op      the smallest b <= B with thr(b) >= rps: the batch the batcher settles on
    rho       rps * m(b_op) / (c_eff * b_op * 1000)       busy share of the instances there
    W(r, b)   ln(100) * r^(sqrt(2(n+1)) - 1) / (n (1 - r)) * m(b) f * (1/b + cs2(b)) / 2
              p99 wait for a free instance: Sakasegawa's M/G/n mean wait with Allen-Cunneen's
              (Ca^2 + Cs^2)/2 (a batch of b Poisson arrivals has Ca^2 = 1/b), times ln(100) for
              an exponential tail
    wait      max(W(rho, b_op), W(rps / thr(B), B)), the first capped at S99(b_op) f when B > 1:
              a request waits at most for the batch in service, the batcher takes it in the next
              one, unless the queue outgrows B (the second term, which grows as rps -> thr(B))
    p99       S99(b_op) f + wait

No batching delay is configured (max_queue_delay 0): on these models a delay only adds latency,
since the batcher already batches whatever queued while the instances were busy. With rps = 0
the stage is idle: p99 = S99(1).

Against the discrete-event simulator (the same service times, Triton's batcher rules) over 375
(variant, B, n, load) points at 20-95 % of thr(B): median ratio model/simulated p99 1.14, 10-90 %
range 0.88-2.0; the model over-predicts most where larger batches are slower per request (the
configurations it should steer away from).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

TAIL_P99 = math.log(100.0)
LATENCY_TOL_MS = 1e-6  # slack on every "<= SLA" comparison, the same in all solvers


def _wait_p99(rho: np.ndarray, n: np.ndarray, mean_ms: np.ndarray, batch: np.ndarray, cs2: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ok = rho < 1.0
        r = np.where(ok, np.maximum(rho, 0.0), 0.0)
        w = TAIL_P99 * r ** (np.sqrt(2.0 * (n + 1.0)) - 1.0) / (n * (1.0 - r)) * mean_ms * (1.0 / batch + cs2) / 2.0
    return np.where(ok, w, np.inf)


def stage_model(mean_ms: Any, p99_ms: Any, cs2: Any, batch: Any, instances: Any, rps: Any,
                efficiency: Any = 1.0) -> tuple[Any, Any]:
    """Return (p99_ms, capacity_rps) of rows.

    `mean_ms`, `p99_ms`, `cs2`: (rows, max_batch + 1) per-batch-size service statistics of each
    row's variant (index 0 unused), or one such vector for a single row; `batch`, `instances`,
    `rps`, `efficiency`: per row (or scalars). p99 is +inf where the stage cannot keep up.
    """
    mean = np.atleast_2d(np.asarray(mean_ms, dtype=float))
    p99t = np.atleast_2d(np.asarray(p99_ms, dtype=float))
    cs2t = np.atleast_2d(np.asarray(cs2, dtype=float))
    rows = mean.shape[0]
    b = np.broadcast_to(np.asarray(batch, dtype=int), (rows,))
    n = np.broadcast_to(np.asarray(instances, dtype=float), (rows,))
    lam = np.broadcast_to(np.asarray(rps, dtype=float), (rows,))
    eff = np.broadcast_to(np.asarray(efficiency, dtype=float), (rows,))
    c_eff = 1.0 + (n - 1.0) * eff
    stretch = n / c_eff
    sizes = np.arange(mean.shape[1])
    with np.errstate(divide="ignore"):
        thr = c_eff[:, None] * sizes[None, :] * 1000.0 / mean  # (rows, max_batch + 1); column 0 is 0
    idx = np.arange(rows)
    capacity = thr[idx, b]
    allowed = (sizes[None, :] >= 1) & (sizes[None, :] <= b[:, None])
    covers = allowed & (thr >= lam[:, None])
    b_op = np.where(covers.any(axis=1), np.argmax(covers, axis=1), b)
    m_op, s99_op, cs2_op = mean[idx, b_op] * stretch, p99t[idx, b_op] * stretch, cs2t[idx, b_op]
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = lam * mean[idx, b_op] / (c_eff * b_op * 1000.0)
        rho_b = lam / capacity
    near = _wait_p99(rho, n, m_op, b_op.astype(float), cs2_op)
    near = np.where(b > 1, np.minimum(near, s99_op), near)
    overflow = _wait_p99(rho_b, n, mean[idx, b] * stretch, b.astype(float), cs2t[idx, b])
    overflow = np.where(b > 1, overflow, 0.0)  # with B = 1 both terms are the same queue
    idle = lam <= 0
    p99 = np.where(idle, p99t[idx, 1], s99_op + np.maximum(near, overflow))
    p99 = np.where(idle | (lam < capacity), p99, np.inf)
    if np.ndim(mean_ms) == 1:
        return float(p99[0]), float(capacity[0])
    return p99, capacity


def ipa_stage_model(service_ms: Any, batch: Any, instances: Any, rps: Any, efficiency: Any = 1.0) -> tuple[Any, Any]:
    """IPA's formulation, kept for the IPA baseline only (reconfigurable-ml-pipeline/ipa,
    `optimizer/`: a batch waits (b - 1) / lambda to fill, then takes its p99 service time l(b);
    capacity b / l(b) per instance). Queueing for a free instance is Sakasegawa's M/M/c p99 as
    this project first modelled it. `service_ms` is l(b), the profile's p99 fit."""
    l = np.asarray(service_ms, dtype=float)
    b = np.asarray(batch, dtype=float)
    n = np.asarray(instances, dtype=float)
    lam = np.asarray(rps, dtype=float)
    c_eff = 1.0 + (n - 1.0) * np.asarray(efficiency, dtype=float)
    service = l * n / c_eff
    capacity = c_eff * b * 1000.0 / l
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        rho = lam / capacity
        wait = np.where(b > 1, np.where(lam > 0, (b - 1.0) * 1000.0 / np.where(lam > 0, lam, 1.0), np.inf), 0.0)
        ok = rho < 1.0
        safe_rho = np.where(ok, rho, 0.0)
        queue = TAIL_P99 * (0.5 / b) * safe_rho ** (np.sqrt(2.0 * (n + 1.0)) - 1.0) / (n * (1.0 - safe_rho)) * service
        p99 = np.where(ok, wait + service + queue, np.inf)
    if p99.ndim == 0:
        return float(p99), float(capacity)
    return p99, capacity


def ipa_queue_delay_us(batch: int, rps: float) -> int:
    """IPA's batching delay: the time to fill a batch of b at this rate, (b - 1) / lambda."""
    if batch <= 1 or rps <= 0:
        return 0
    return int(math.ceil((batch - 1) * 1e6 / rps))
