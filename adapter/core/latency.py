"""The stage latency and capacity model: one function, used by both solvers and brute force.

For one variant serving `rps` requests/s with batch size b and n instances (per pod):

    l(b)        p99 service latency of one batch, from the profile fit (ms)
    c_eff       1 + (n - 1) * e              effective instances (e = measured instance efficiency)
    S           l(b) * n / c_eff             service time of one batch while n instances share the host
    capacity    c_eff * b * 1000 / l(b)      requests/s the n instances sustain
    rho         rps / capacity               utilisation (must stay < 1)
    wait        (b - 1) * 1000 / rps         batch formation: time to collect b requests (IPA's (b-1)/lambda);
                                             the dynamic batcher's max_queue_delay is set to exactly this,
                                             so no request waits longer than `wait` for its batch
    queue       ln(100) * (1/b)/2 * rho^(sqrt(2(n+1)) - 1) / (n (1 - rho)) * S
                                             p99 queueing for a free instance: Sakasegawa's M/M/c mean wait,
                                             scaled by Allen-Cunneen's (Ca^2 + Cs^2)/2 with Ca^2 = 1/b (a batch
                                             is b Poisson arrivals) and Cs^2 = 0 (S is already a p99), and
                                             ln(100) for the p99 of an exponential tail
    p99         wait + S + queue

A larger max_queue_delay than `wait` never helps (the batch is full first) and a smaller one is
the same as choosing a smaller batch, so the delay is not a separate decision: it follows b.
With rps = 0, batches larger than 1 never fill (infinite wait) and queueing is zero.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

TAIL_P99 = math.log(100.0)
LATENCY_TOL_MS = 1e-6  # slack on every "<= SLA" comparison, the same in all solvers


def stage_model(service_ms: Any, batch: Any, instances: Any, rps: Any, efficiency: float = 1.0) -> tuple[Any, Any]:
    """Return (p99_ms, capacity_rps); arguments broadcast as numpy arrays (or are scalars).

    p99 is +inf where the stage cannot keep up (rho >= 1) or a batch can never fill.
    """
    l = np.asarray(service_ms, dtype=float)
    b = np.asarray(batch, dtype=float)
    n = np.asarray(instances, dtype=float)
    lam = np.asarray(rps, dtype=float)
    c_eff = 1.0 + (n - 1.0) * efficiency
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


def queue_delay_us(batch: int, rps: float) -> int:
    """Triton's dynamic batcher max_queue_delay_microseconds for batch size b at this rate."""
    if batch <= 1 or rps <= 0:
        return 0
    return int(math.ceil((batch - 1) * 1e6 / rps))
