"""What the monitor saw in one interval: the only input the decision core takes from metrics."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping


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

    def rps(self, model: str) -> float:
        stats = self.models.get(model)
        return stats.arrival_rps if stats else 0.0
