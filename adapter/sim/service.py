"""Service times of a batch, drawn from a variant's measured profile.

The profile holds, per batch size, the p50 and p99 latency of one batch measured at
concurrency 1. A batch's service time is drawn from the lognormal distribution with that
median and that p99 (sigma = ln(p99 / p50) / z_0.99), where p50(b) and p99(b) are fitted over
the batch size the same way the planner fits p99 (`profile.fit_latency`), so batch sizes
between measured ones interpolate.

n instances of a CPU model share the pod's cores: when m of them are busy, each batch takes
m / (1 + (m - 1) * e) times longer (e = the measured instance efficiency), which is what the
planner's capacity model assumes when all n are busy.
"""

from __future__ import annotations

import math

import numpy as np

from adapter.core.profile import Profiles, VariantProfile, fit_latency

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
    """(mu, sigma) of ln(service ms) for batch sizes 0..max_batch (index 0 unused)."""
    p50_fit = vp.latency  # a profile without measurements (synthetic): service time = its p99
    if vp.measurements:
        single = [m for m in vp.measurements if m.instances == min(x.instances for x in vp.measurements)]
        p50_fit = fit_latency([m.batch_size for m in single], [m.p50_ms for m in single])
    table = [(0.0, 0.0)]
    for b in range(1, max_batch + 1):
        p50 = max(float(p50_fit.p99_ms(b)), 1e-3)  # the fit's evaluator, applied to the p50 fit
        p99 = max(float(vp.latency.p99_ms(b)), p50)
        table.append((math.log(p50), min(math.log(p99 / p50) / Z99, MAX_SIGMA)))
    return table
