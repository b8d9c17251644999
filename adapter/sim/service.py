"""Service times of a batch, drawn from a variant's measured profile.

The profile holds, per batch size, the p50 and p99 latency of one batch measured at
concurrency 1, server-side (Triton's request trace) where it has them, else client-side. A batch's service time is drawn from the lognormal distribution with that
median and that p99 (sigma = ln(p99 / p50) / z_0.99). The measured points are used as they
are (the planner's smooth fit can be 20 % off at one batch size, and the simulator is judged
on p99s), interpolated between measured batch sizes.

n instances of a CPU model share the pod's cores: when m of them are busy, each batch takes
m / (1 + (m - 1) * e) times longer (e = the measured instance efficiency), which is what the
planner's capacity model assumes when all n are busy.
"""

from __future__ import annotations

import math

import numpy as np

from adapter.core.profile import Measurement, Profiles, VariantProfile, fit_latency

Z99 = 2.3263478740408408  # standard normal quantile of 0.99
MAX_SIGMA = 1.5  # a p99 more than ~33x the median is a measuring accident, not a distribution


class ServiceTimes:
    """Per model and batch size: lognormal (mu, sigma) of the batch service time in seconds."""

    def __init__(self, profiles: Profiles, max_batch: int = 64, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self._params: dict[str, list[tuple[float, float]]] = {}
        self._efficiency: dict[str, float] = {}
        self._profiles = profiles
        self._max_batch = max_batch
        # Draws are made in blocks: one numpy call per few thousand batches, not per batch.
        self._normals = self.rng.standard_normal(1 << 16)
        self._next = 0

    def _table(self, model: str) -> list[tuple[float, float]]:
        table = self._params.get(model)
        if table is None:
            vp = self._profiles[model]
            table = self._params[model] = lognormal_table(vp, self._max_batch)
            self._efficiency[model] = vp.instance_efficiency
        return table

    def draw_s(self, model: str, batch: int, busy: int) -> float:
        """Service time (s) of a batch of `batch` requests when `busy` instances run at once."""
        mu, sigma = self._table(model)[batch]
        if self._next == len(self._normals):
            self._normals = self.rng.standard_normal(len(self._normals))
            self._next = 0
        z = self._normals[self._next]
        self._next += 1
        stretch = busy / (1.0 + (busy - 1) * self._efficiency[model]) if busy > 1 else 1.0
        return math.exp(mu + sigma * z) * stretch / 1000.0

    def median_ms(self, model: str, batch: int) -> float:
        return math.exp(self._table(model)[batch][0])


def lognormal_table(vp: VariantProfile, max_batch: int) -> list[tuple[float, float]]:
    """(mu, sigma) of ln(service ms) for batch sizes 0..max_batch (index 0 unused).

    The measured p50 and p99 at the measured batch sizes, linear in between; past the largest
    measured size, the fits (p50 fitted like the planner's p99). A profile without measurements
    (synthetic) has a fixed service time: its p99 fit."""
    single = [m for m in vp.measurements if m.instances == min(x.instances for x in vp.measurements)] \
        if vp.measurements else []
    sizes = np.array([m.batch_size for m in single], dtype=float)
    order = np.argsort(sizes)
    p50_fit = vp.latency
    if single:
        p50_fit = fit_latency(sizes, [_p50(m) for m in single])
    table = [(0.0, 0.0)]
    for b in range(1, max_batch + 1):
        if single and b <= sizes.max():
            p50 = float(np.interp(b, sizes[order], np.array([_p50(m) for m in single])[order]))
            p99 = float(np.interp(b, sizes[order], np.array([_p99(m) for m in single])[order]))
        else:
            p50, p99 = float(p50_fit.p99_ms(b)), float(vp.latency.p99_ms(b))  # the fits' evaluator
        p50 = max(p50, 1e-3)
        p99 = max(p99, p50)
        table.append((math.log(p50), min(math.log(p99 / p50) / Z99, MAX_SIGMA)))
    return table


# A stage inside Triton takes the server-side time (Triton's request trace, when the profile has
# it); the client-side figures add the client's and the network's share, about 1-3 ms at p99.
def _p50(m: Measurement) -> float:
    return m.server_p50_ms if m.server_p50_ms is not None else m.p50_ms


def _p99(m: Measurement) -> float:
    return m.server_p99_ms if m.server_p99_ms is not None else m.p99_ms
