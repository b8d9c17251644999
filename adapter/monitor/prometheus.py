"""Read Triton's metrics through Prometheus: rates over a window, summed across every pod it
scrapes. This is what the Kubernetes leader plans from."""

from __future__ import annotations

import math
import time
from typing import Callable

import requests
from prometheus_api_client import PrometheusApiClientException, PrometheusConnect
from urllib3.util.retry import Retry

from adapter.core.observation import Observation
from adapter.errors import ConfigError, ServerError
from adapter.monitor.metrics import (
    P99_QUANTILE, TRITON_METRICS, Kind, ModelCounters, model_stats,
)


class PrometheusSource:
    """One Observation per `observe()`: Prometheus computes `rate()` over the last `window_s`
    seconds, so every call stands alone (no priming).

    `selector` holds PromQL label matchers without braces, e.g. `job="triton"` or
    `namespace="search",job="triton"`; empty means every Triton series Prometheus has.
    `window_s` should cover at least two scrapes (Prometheus advises four), or rate() is
    empty and models look absent. Counter resets (a pod restarted) are handled by rate();
    a model with no series is absent from the observation.
    """

    source = "prometheus"

    def __init__(self, url: str, window_s: float = 30.0, selector: str = "",
                 clock: Callable[[], float] = time.monotonic, timeout_s: float = 5.0):
        if window_s <= 0:
            raise ConfigError(f"Prometheus window_s must be positive, got {window_s}")
        self.url = url.rstrip("/")
        self.window_s = window_s
        self.selector = selector
        self.clock = clock
        self.timeout_s = timeout_s
        # No retries: a monitor that stalls for backoffs delays the whole control loop; the
        # next tick asks again.
        self._client = PrometheusConnect(self.url, disable_ssl=True, timeout=timeout_s,
                                         retry=Retry(total=0))

    def queries(self) -> dict[str, str]:
        """PromQL per Triton metric in TRITON_METRICS. One query per metric: rate() drops the
        metric name, so one query over several names would mix their series."""
        # PromQL durations are integers with a unit.
        window = (f"{self.window_s:.0f}s" if self.window_s == int(self.window_s)
                  else f"{round(self.window_s * 1000)}ms")
        queries = {}
        for name, metric in TRITON_METRICS.items():
            matchers = [self.selector] if self.selector else []
            if metric.kind is Kind.QUANTILE:
                matchers.append(f'quantile="{P99_QUANTILE}"')
            series = f"{name}{{{','.join(matchers)}}}" if matchers else name
            queries[name] = {
                Kind.COUNTER: f"sum by (model) (rate({series}[{window}]))",
                Kind.GAUGE: f"sum by (model) ({series})",
                # Quantiles cannot be added across pods; the slowest pod is the SLA's concern.
                Kind.QUANTILE: f"max by (model) ({series})",
            }[metric.kind]
        return queries

    def observe(self) -> Observation:
        values: dict[str, dict[str, float]] = {}
        for name, query in self.queries().items():
            field = TRITON_METRICS[name].field
            for model, value in self._query(query).items():
                model_values = values.setdefault(model, {})
                model_values[field] = model_values.get(field, 0.0) + value
        return Observation(
            time_s=self.clock(),
            window_s=self.window_s,
            source=self.source,
            models={model: model_stats(model, ModelCounters(**fields))
                    for model, fields in values.items()},
        )

    def _query(self, query: str) -> dict[str, float]:
        """model -> value; NaN (an idle summary) counts as no value."""
        try:
            result = self._client.custom_query(query)
        except requests.Timeout as exc:
            raise ServerError(f"Prometheus at {self.url} did not answer within "
                              f"{self.timeout_s:g} s") from exc
        except requests.ConnectionError as exc:
            raise ServerError(f"Prometheus at {self.url} is unreachable "
                              f"(connection failed)") from exc
        except PrometheusApiClientException as exc:
            raise ServerError(f"Prometheus at {self.url} rejected {query!r}: {exc}") from exc
        values = {}
        for series in result:
            model = series["metric"].get("model")
            value = float(series["value"][1])
            if model is not None and not math.isnan(value):
                values[model] = value
        return values
