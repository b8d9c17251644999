"""Monitor: Triton's metrics -> one `Observation` per interval, from Triton's /metrics directly
(`TritonMetricsSource`, the embedded default) or through Prometheus (`PrometheusSource`)."""

from __future__ import annotations

from typing import Protocol

from adapter.core.observation import Observation
from adapter.monitor.metrics import (
    TRITON_METRICS, Metric, observation_from_samples, parse_exposition,
)
from adapter.monitor.prometheus import PrometheusSource
from adapter.monitor.triton import TritonMetricsSource


class MetricsSource(Protocol):
    """What the control loop reads from. `observe()` returns the latest window, or None while a
    source has nothing to report yet (TritonMetricsSource's first, priming call)."""

    source: str

    def observe(self) -> Observation | None: ...


__all__ = [
    "TRITON_METRICS", "Metric", "MetricsSource", "PrometheusSource", "TritonMetricsSource",
    "observation_from_samples", "parse_exposition",
]
