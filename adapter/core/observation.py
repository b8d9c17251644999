"""What the monitor saw in one interval: the only input the decision core takes from metrics,
and the per-second arrival history the sidecar builds from a stream of them.

Per-second history. The predictor reads one arrival rate per real second. Sources give it in
one of two ways, and `ArrivalHistory` merges either without duplicating a second:
- `Observation.arrival_seconds` (Prometheus): the source's own per-second series, keyed by
  whole second on the source's clock, complete seconds only. Consecutive observations overlap
  (each one repeats the last `window_s` seconds), so a second already held is *replaced*, never
  appended again; a late scrape thereby corrects a second on the next observation.
- `arrival_seconds is None` (Triton's /metrics, differenced every tick): only the window's
  mean rate is known. Each second that ended inside the window (on the observation's clock)
  and is not held yet gets that mean; seconds already held keep their value. A window that
  spans a gap (metrics unreachable for a while) spreads its mean over the gap's seconds: the
  real average, not zeros, and not an old value repeated.
Seconds no observation covers (an outage longer than a Prometheus window) are left out, not
guessed: the history then jumps over them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterator, Mapping


@dataclass(frozen=True, kw_only=True)
class ModelStats:
    """One Triton model (all versions, all pods) over one observation window."""

    model: str
    arrival_rps: float  # requests that arrived: successes + failures, per second
    success_rps: float
    failure_rps: float
    mean_batch: float | None  # nv_inference_count / nv_inference_exec_count; None if idle
    queue_ms: float | None  # mean queue time per request; None if idle
    compute_ms: float | None  # mean compute (input + infer + output) per request; None if idle
    pending: float  # nv_inference_pending_request_count at the end of the window
    p99_ms: float | None = None  # from Triton's summary latencies when enabled


@dataclass(frozen=True, kw_only=True)
class Observation:
    time_s: float  # end of the window, on the caller's clock
    window_s: float
    source: str  # "triton" or "prometheus"
    models: Mapping[str, ModelStats] = field(default_factory=dict)
    # model -> {whole second s: requests that arrived in [s, s+1)}, on the source's clock, only
    # seconds the source has complete data for. None: the source knows window means only.
    arrival_seconds: Mapping[str, Mapping[int, float]] | None = None

    def rps(self, model: str) -> float:
        stats = self.models.get(model)
        return stats.arrival_rps if stats else 0.0


ENSEMBLE_FAILURE_COUNT = 2  # failures Triton 2.51 counts per failed ensemble request


class ArrivalHistory:
    """One model's arrival rate per whole second, oldest first, at most `max_seconds` of the
    newest seconds (see the module docstring for how observations merge)."""

    def __init__(self, model: str, max_seconds: int):
        if max_seconds < 1:
            raise ValueError(f"max_seconds must be at least 1, got {max_seconds}")
        self.model = model
        self.max_seconds = max_seconds
        self._rps: dict[int, float] = {}

    def add(self, observation: Observation) -> None:
        if observation.arrival_seconds is not None:
            self.merge(observation.arrival_seconds.get(self.model, {}))
        else:
            stats = observation.models.get(self.model)
            # Triton 2.51 counts each failed ensemble request twice (monitor/metrics.py); a
            # request shed at admission is one arrival, not two.
            rps = stats.arrival_rps - stats.failure_rps / ENSEMBLE_FAILURE_COUNT if stats else 0.0
            self.fill_window(observation.time_s, observation.window_s, max(0.0, rps))

    def merge(self, seconds: Mapping[int, float]) -> None:
        """A source's per-second series: newer data for a held second replaces it."""
        self._rps.update(seconds)
        self._trim()

    def fill_window(self, end_s: float, window_s: float, rps: float) -> None:
        """A window mean: for each second that ended in (end_s - window_s, end_s] and is not
        held yet. Consecutive windows share no such second, so none is counted twice."""
        for second in range(math.floor(end_s - window_s), math.floor(end_s)):
            self._rps.setdefault(second, rps)
        self._trim()

    def _trim(self) -> None:
        excess = len(self._rps) - self.max_seconds
        if excess > 0:
            for second in sorted(self._rps)[:excess]:
                del self._rps[second]

    def seconds(self) -> list[tuple[int, float]]:
        """(second, rps) pairs, oldest first."""
        return sorted(self._rps.items())

    def rates(self) -> list[float]:
        """What the predictor reads: rps per second, oldest first."""
        return [rps for _, rps in self.seconds()]

    def clear(self) -> None:
        self._rps.clear()

    def __len__(self) -> int:
        return len(self._rps)

    def __iter__(self) -> Iterator[float]:
        return iter(self.rates())
