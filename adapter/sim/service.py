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

from adapter.core.profile import Profiles, lognormal_table



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
