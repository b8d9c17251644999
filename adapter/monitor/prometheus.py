"""Read Triton's metrics through Prometheus: rates over a window, summed across every pod it
scrapes. This is what the Kubernetes leader plans from.

Per-second arrivals. `rate()` over the window is a window mean, right for the closed-loop
correction but not for the predictor, which reads one value per real second. So each
observation also fetches the raw samples of the arrival metrics (successes, failures, the
pending gauge) over the same window and turns them into requests per whole second of
Prometheus' clock (`arrivals_per_second`, pure):
- per series, each scrape-to-scrape increase is spread evenly over the time between the two
  scrapes and split across the whole seconds it overlaps (a counter that went down restarted:
  counted from zero, as rate() does). A missed scrape makes one longer segment, so its seconds
  share the real increase: no zero, no repeated value. Resolution is the scrape interval: with
  5 s scrapes each second carries its 5 s segment's mean;
- the series are then summed per model, and only seconds every live series covers are
  reported; a series more than `STALE_INTERVALS` scrape intervals behind the newest (pod gone,
  model unloaded) no longer holds the others back.
Consecutive observations overlap by almost a whole window; `ArrivalHistory` replaces seconds it
already holds rather than appending them again.
"""

from __future__ import annotations

import math
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import requests
from prometheus_api_client import PrometheusApiClientException, PrometheusConnect
from urllib3.util.retry import Retry

from adapter.core.observation import Observation
from adapter.errors import ConfigError, ServerError
from adapter.monitor.metrics import (
    P99_QUANTILE, TRITON_METRICS, Kind, ModelCounters, model_stats,
)

# What arrivals are made of (as in `model_stats`): completions plus growth of the pending queue.
ARRIVAL_METRICS = tuple(name for name, m in TRITON_METRICS.items()
                        if m.field in ("success", "failure", "pending"))
# A live pod's series lags the newest scrape by under one interval, two after a missed scrape.
STALE_INTERVALS = 3


@dataclass(frozen=True)
class RawSeries:
    """One Prometheus series' raw samples: (Unix time s, value), oldest first."""

    model: str
    kind: Kind  # COUNTER or GAUGE
    samples: Sequence[tuple[float, float]]


def arrivals_per_second(series: Iterable[RawSeries]) -> dict[str, dict[int, float]]:
    """model -> {whole second: arrivals in it}, summed over the model's series; only seconds
    every live series covers (see the module docstring). A model whose series span no whole
    second yet maps to {}."""
    by_model: dict[str, list[RawSeries]] = defaultdict(list)
    for s in series:
        if s.samples:
            by_model[s.model].append(s)
    return {model: _model_seconds(group) for model, group in by_model.items()}


def _model_seconds(group: list[RawSeries]) -> dict[int, float]:
    gaps = [b[0] - a[0] for s in group for a, b in zip(s.samples, s.samples[1:])]
    if not gaps:
        return {}
    interval_s = statistics.median(gaps)  # the scrape interval, as scraped
    newest_s = max(s.samples[-1][0] for s in group)
    live = [s for s in group if newest_s - s.samples[-1][0] <= STALE_INTERVALS * interval_s]
    # Seconds before a live series' first sample were reported before it existed; seconds
    # after its last sample are not complete yet.
    first = math.ceil(max(s.samples[0][0] for s in live))
    end = math.floor(min(s.samples[-1][0] for s in live))
    if end <= first:
        return {}
    arrivals = dict.fromkeys(range(first, end), 0.0)
    for s in group:
        for (t0, v0), (t1, v1) in zip(s.samples, s.samples[1:]):
            restarted = s.kind is Kind.COUNTER and v1 < v0
            _spread(v1 if restarted else v1 - v0, t0, t1, arrivals)
    # A pending queue that shrank without completions (a pod restarted) is not negative load.
    return {second: max(0.0, value) for second, value in arrivals.items()}


def _spread(increase: float, t0: float, t1: float, arrivals: dict[int, float]) -> None:
    """Add `increase`, spread evenly over (t0, t1], to the seconds of `arrivals` it overlaps."""
    if t1 <= t0:
        return
    for second in range(math.floor(t0), math.ceil(t1)):
        if second in arrivals:
            overlap_s = min(t1, second + 1) - max(t0, second)
            arrivals[second] += increase * overlap_s / (t1 - t0)


class PrometheusSource:
    """One Observation per `observe()`: Prometheus computes `rate()` over the last `window_s`
    seconds, so every call stands alone (no priming).

    `selector` holds PromQL label matchers without braces, e.g. `job="triton"` or
    `namespace="search",job="triton"`; empty means every Triton series Prometheus has.
    `window_s` should cover at least two scrapes (Prometheus advises four), or rate() is
    empty and models look absent. Counter resets (a pod restarted) are handled by rate();
    a model with no series is absent from the observation. `arrival_seconds` carries each
    model's arrivals per whole second of the window (Unix time, Prometheus' clock).
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

    def _window(self) -> str:
        # PromQL durations are integers with a unit.
        return (f"{self.window_s:.0f}s" if self.window_s == int(self.window_s)
                else f"{round(self.window_s * 1000)}ms")

    def queries(self) -> dict[str, str]:
        """PromQL per Triton metric in TRITON_METRICS. One query per metric: rate() drops the
        metric name, so one query over several names would mix their series."""
        window = self._window()
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

    def sample_queries(self) -> dict[str, str]:
        """PromQL per arrival metric for its raw samples over the window (a range vector)."""
        series = {name: f"{name}{{{self.selector}}}" if self.selector else name
                  for name in ARRIVAL_METRICS}
        return {name: f"{selected}[{self._window()}]" for name, selected in series.items()}

    def observe(self) -> Observation:
        values: dict[str, dict[str, float]] = {}
        for name, query in self.queries().items():
            field = TRITON_METRICS[name].field
            for model, value in self._query(query).items():
                model_values = values.setdefault(model, {})
                model_values[field] = model_values.get(field, 0.0) + value
        raw = [RawSeries(model, TRITON_METRICS[name].kind, samples)
               for name, query in self.sample_queries().items()
               for model, samples in self._query_samples(query)]
        return Observation(
            time_s=self.clock(),
            window_s=self.window_s,
            source=self.source,
            models={model: model_stats(model, ModelCounters(**fields))
                    for model, fields in values.items()},
            arrival_seconds=arrivals_per_second(raw),
        )

    def _query(self, query: str) -> dict[str, float]:
        """model -> value; NaN (an idle summary) counts as no value."""
        values = {}
        for series in self._result(query):
            model = series["metric"].get("model")
            value = float(series["value"][1])
            if model is not None and not math.isnan(value):
                values[model] = value
        return values

    def _query_samples(self, query: str) -> list[tuple[str, list[tuple[float, float]]]]:
        """(model, raw samples) per series of a range-vector query."""
        found = []
        for series in self._result(query):
            model = series["metric"].get("model")
            samples = [(float(t), float(v)) for t, v in series.get("values", ())]
            if model is not None:
                found.append((model, [(t, v) for t, v in samples if math.isfinite(v)]))
        return found

    def _result(self, query: str) -> list[dict]:
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
        return result
