"""Triton's metrics, what they mean, and how counters become one `Observation` (pure: no I/O).

Rules, checked against Triton 2.51 (the server in nvidia-pytriton 0.7.0):
1. Every Triton metric the monitor reads is in `TRITON_METRICS`, and only there. Both sources
   (Triton's /metrics, Prometheus) derive what they read from that table.
2. Counters are cumulative per model *version*; the monitor sums versions into one model.
3. A counter that went down means the model's counters restarted from zero (Triton restarted,
   or the model was unloaded and loaded again). The whole model is then counted from zero, as
   Prometheus' rate() does per series. A config-override reload through the repository API
   keeps the counters.
4. A model missing from the earlier sample was loaded in between (counted from zero); a model
   missing from the later one is gone and is left out of the observation. (An unloaded model's
   series can linger in /metrics, seen for over 30 s: it then shows zero rates.)

What Triton counts, measured here:
- A python-backend model that answers one request with an error response (e.g. empty TEXT)
  still counts it in `nv_inference_request_success`: only the ensemble around it sees a failure.
  Requests Triton rejects before scheduling (batch too large, unknown input) count nowhere.
- An ensemble has its own series: one success per request, `inference_count / exec_count` is
  the client batch, queue time ~0 (its members queue), compute = the members' compute summed.
  Each failed ensemble request adds 2 to its `nv_inference_request_failure` (reason OTHER).
  Triton runs only the steps the requested outputs need: asking text_search for LANG alone
  leaves the embedding step's counters still.
- Summary quantiles exported with `--metrics-config summary_latencies=true`: 0.5, 0.9, 0.95,
  0.99, 0.999, over Triton's own sliding window (not the observation window); `Nan` while idle.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, replace
from enum import Enum
from typing import Iterable, Mapping

from prometheus_client.parser import text_string_to_metric_families

from adapter.core.observation import ModelStats, Observation


class Kind(Enum):
    COUNTER = "counter"  # cumulative since the model loaded: the monitor takes rates
    GAUGE = "gauge"  # a level: the monitor takes the latest value
    QUANTILE = "quantile"  # one quantile of a Triton summary: the latest value


class Better(Enum):
    HIGHER = "higher"
    LOWER = "lower"
    NEUTRAL = "neutral"


@dataclass(frozen=True)
class Metric:
    field: str  # the ModelCounters field it adds into (several metrics may add into one)
    kind: Kind
    unit: str
    better: Better
    meaning: str


P99_QUANTILE = "0.99"

TRITON_METRICS: Mapping[str, Metric] = {
    "nv_inference_request_success": Metric(
        "success", Kind.COUNTER, "requests", Better.HIGHER,
        "requests completed; includes requests a python-backend model answered with an error"),
    "nv_inference_request_failure": Metric(
        "failure", Kind.COUNTER, "requests", Better.LOWER,
        "requests that failed, summed over `reason`; an ensemble counts each one twice"),
    "nv_inference_count": Metric(
        "inferences", Kind.COUNTER, "batch items", Better.HIGHER,
        "batch items inferred (a request of 8 texts counts 8)"),
    "nv_inference_exec_count": Metric(
        "executions", Kind.COUNTER, "executions", Better.NEUTRAL,
        "model executions; inferences / executions = mean batch"),
    "nv_inference_queue_duration_us": Metric(
        "queue_us", Kind.COUNTER, "us", Better.LOWER,
        "time requests waited in the scheduler queue, summed over requests"),
    "nv_inference_compute_input_duration_us": Metric(
        "compute_us", Kind.COUNTER, "us", Better.LOWER,
        "time preparing inputs, summed over requests (a batch's time counts for each request)"),
    "nv_inference_compute_infer_duration_us": Metric(
        "compute_us", Kind.COUNTER, "us", Better.LOWER,
        "time executing the model, summed over requests"),
    "nv_inference_compute_output_duration_us": Metric(
        "compute_us", Kind.COUNTER, "us", Better.LOWER,
        "time handling outputs, summed over requests"),
    "nv_inference_pending_request_count": Metric(
        "pending", Kind.GAUGE, "requests", Better.LOWER,
        "requests received and not yet executing"),
    "nv_inference_request_summary_us": Metric(
        "p99_us", Kind.QUANTILE, "us", Better.LOWER,
        f"request latency, quantile {P99_QUANTILE} over Triton's sliding window "
        "(end to end for an ensemble); only with summary_latencies=true"),
}


@dataclass(frozen=True, kw_only=True)
class ModelCounters:
    """One model's Triton metrics, versions summed. As scraped, the counter fields are
    cumulative totals; `per_second` turns two of them into rates with the same fields."""

    success: float = 0.0
    failure: float = 0.0
    inferences: float = 0.0
    executions: float = 0.0
    queue_us: float = 0.0
    compute_us: float = 0.0
    pending: float = 0.0
    p99_us: float | None = None  # None: summaries disabled, or no request in Triton's window


COUNTER_FIELDS = tuple(sorted({m.field for m in TRITON_METRICS.values() if m.kind is Kind.COUNTER}))


@dataclass(frozen=True)
class Sample:
    """Every model's counters at one instant on the caller's clock."""

    time_s: float
    models: Mapping[str, ModelCounters]


def parse_exposition(text: str) -> dict[str, ModelCounters]:
    """Triton's /metrics text -> counters per model. Metrics outside `TRITON_METRICS` and
    series without a `model` label are ignored. Raises ValueError on text that is not in the
    Prometheus exposition format."""
    totals: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    quantiles: dict[str, list[float]] = defaultdict(list)
    for family in text_string_to_metric_families(text):
        metric = TRITON_METRICS.get(family.name)
        if metric is None:
            continue
        for sample in family.samples:
            model = sample.labels.get("model")
            if model is None:
                continue
            values = totals[model]  # created even when the model's only samples are quantiles
            if metric.kind is Kind.QUANTILE:
                # Only the quantile samples: a summary also has _count and _sum samples.
                if sample.name == family.name and sample.labels.get("quantile") == P99_QUANTILE:
                    quantiles[model].append(sample.value)
            else:
                values[metric.field] += sample.value
    return {model: ModelCounters(**values, p99_us=_worst(quantiles[model]))
            for model, values in totals.items()}


def _worst(values: Iterable[float]) -> float | None:
    """The highest quantile across versions or pods: quantiles cannot be added or averaged,
    and the SLA is about the slowest."""
    known = [v for v in values if not math.isnan(v)]
    return max(known) if known else None


def per_second(previous: ModelCounters | None, current: ModelCounters,
               window_s: float) -> ModelCounters:
    """Counter increases over the window divided by its length; gauges and quantiles keep
    their current value. `previous` None (model loaded in between) or any counter lower than
    before (counters restarted) counts the model from zero."""
    start = ModelCounters() if _restarted(previous, current) else previous
    return replace(current, **{
        f: (getattr(current, f) - getattr(start, f)) / window_s for f in COUNTER_FIELDS})


def model_stats(model: str, rates: ModelCounters, pending_growth_per_s: float = 0.0) -> ModelStats:
    """Per-second rates (with the gauge and quantile at the window's end) -> ModelStats.
    Means are None when nothing completed in the window. Triton counts requests when they
    complete, so arrivals = completions + growth of the pending queue: otherwise a queue that
    drains after a stall reads as a burst of arrivals (and a filling one hides real load)."""
    return ModelStats(
        model=model,
        arrival_rps=max(0.0, rates.success + rates.failure + pending_growth_per_s),
        success_rps=rates.success,
        failure_rps=rates.failure,
        mean_batch=rates.inferences / rates.executions if rates.executions > 0 else None,
        # Queue and compute time accrue per completed request.
        queue_ms=rates.queue_us / rates.success / 1000 if rates.success > 0 else None,
        compute_ms=rates.compute_us / rates.success / 1000 if rates.success > 0 else None,
        pending=rates.pending,
        p99_ms=rates.p99_us / 1000 if rates.p99_us is not None else None,
    )


def observation_from_samples(previous: Sample, current: Sample,
                             source: str = "triton") -> Observation:
    """One Observation over the window between two samples of the same server."""
    window_s = current.time_s - previous.time_s
    if window_s <= 0:
        raise ValueError(f"samples must be taken in order: window is {window_s} s "
                         f"({previous.time_s} -> {current.time_s})")
    return Observation(
        time_s=current.time_s,
        window_s=window_s,
        source=source,
        models={model: model_stats(model, per_second(previous.models.get(model), counters, window_s),
                                   _pending_growth(previous.models.get(model), counters, window_s))
                for model, counters in current.models.items()},
    )


def _restarted(previous: ModelCounters | None, current: ModelCounters) -> bool:
    return previous is None or any(getattr(current, f) < getattr(previous, f) for f in COUNTER_FIELDS)


def _pending_growth(previous: ModelCounters | None, current: ModelCounters, window_s: float) -> float:
    """How fast the pending queue grew; a restarted model's queue started empty."""
    before = 0.0 if _restarted(previous, current) else previous.pending
    return (current.pending - before) / window_s
