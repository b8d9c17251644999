"""Pure tests of adapter.monitor.metrics on hand-written exposition text shaped like
Triton 2.51's /metrics (labels, failure reasons, summaries, `Nan` for idle quantiles)."""

from __future__ import annotations

from dataclasses import fields

import pytest

from adapter.core.observation import ModelStats
from adapter.monitor.metrics import (
    COUNTER_FIELDS, TRITON_METRICS, Kind, ModelCounters, Sample, observation_from_samples,
    parse_exposition,
)

TRITON_TEXT = """\
# HELP nv_inference_request_success Number of successful inference requests, all batch sizes
# TYPE nv_inference_request_success counter
nv_inference_request_success{model="langid_cld2",version="1"} 12
nv_inference_request_success{model="langid_cld2",version="2"} 3
nv_inference_request_success{model="embed_l3",version="1"} 0
# HELP nv_inference_request_failure Number of failed inference requests, all batch sizes
# TYPE nv_inference_request_failure counter
nv_inference_request_failure{model="langid_cld2",reason="BACKEND",version="1"} 1
nv_inference_request_failure{model="langid_cld2",reason="OTHER",version="1"} 2
nv_inference_request_failure{model="langid_cld2",reason="REJECTED",version="2"} 1
nv_inference_request_failure{model="embed_l3",reason="OTHER",version="1"} 0
# TYPE nv_inference_count counter
nv_inference_count{model="langid_cld2",version="1"} 19
nv_inference_count{model="langid_cld2",version="2"} 3
nv_inference_count{model="embed_l3",version="1"} 0
# TYPE nv_inference_exec_count counter
nv_inference_exec_count{model="langid_cld2",version="1"} 12
nv_inference_exec_count{model="langid_cld2",version="2"} 3
nv_inference_exec_count{model="embed_l3",version="1"} 0
# TYPE nv_inference_queue_duration_us counter
nv_inference_queue_duration_us{model="langid_cld2",version="1"} 14286
nv_inference_queue_duration_us{model="langid_cld2",version="2"} 714
nv_inference_queue_duration_us{model="embed_l3",version="1"} 0
# TYPE nv_inference_compute_input_duration_us counter
nv_inference_compute_input_duration_us{model="langid_cld2",version="1"} 400
nv_inference_compute_input_duration_us{model="embed_l3",version="1"} 0
# TYPE nv_inference_compute_infer_duration_us counter
nv_inference_compute_infer_duration_us{model="langid_cld2",version="1"} 50000
nv_inference_compute_infer_duration_us{model="embed_l3",version="1"} 0
# TYPE nv_inference_compute_output_duration_us counter
nv_inference_compute_output_duration_us{model="langid_cld2",version="1"} 6000
nv_inference_compute_output_duration_us{model="embed_l3",version="1"} 0
# TYPE nv_inference_pending_request_count gauge
nv_inference_pending_request_count{model="langid_cld2",version="1"} 2
nv_inference_pending_request_count{model="langid_cld2",version="2"} 1
nv_inference_pending_request_count{model="embed_l3",version="1"} 0
# TYPE nv_cpu_utilization gauge
nv_cpu_utilization 0.5
# TYPE nv_inference_request_summary_us summary
nv_inference_request_summary_us_count{model="langid_cld2",version="1"} 12
nv_inference_request_summary_us_sum{model="langid_cld2",version="1"} 71511
nv_inference_request_summary_us{model="langid_cld2",version="1",quantile="0.5"} 1872
nv_inference_request_summary_us{model="langid_cld2",version="1",quantile="0.99"} 2038
nv_inference_request_summary_us{model="langid_cld2",version="1",quantile="0.999"} 9999
nv_inference_request_summary_us{model="langid_cld2",version="2",quantile="0.99"} 3100
nv_inference_request_summary_us{model="embed_l3",version="1",quantile="0.99"} Nan
"""


def test_parse_sums_versions_and_reasons_and_compute_parts():
    models = parse_exposition(TRITON_TEXT)
    assert models == {
        "langid_cld2": ModelCounters(
            success=15, failure=4, inferences=22, executions=15, queue_us=15000,
            compute_us=56400, pending=3, p99_us=3100),  # p99: the slower version
        "embed_l3": ModelCounters(),  # idle: zero counters, NaN quantile -> None
    }


@pytest.mark.parametrize("text, expected", [
    pytest.param("", {}, id="empty page"),
    pytest.param("# TYPE nv_cpu_utilization gauge\nnv_cpu_utilization 0.5\n", {},
                 id="no model metrics"),
    pytest.param('# TYPE nv_inference_request_success counter\n'
                 'nv_inference_request_success{model="m",version="1"} 7\n',
                 {"m": ModelCounters(success=7)}, id="only one family (summaries disabled)"),
    pytest.param('# TYPE nv_inference_request_summary_us summary\n'
                 'nv_inference_request_summary_us{model="m",version="1",quantile="0.5"} 10\n',
                 {"m": ModelCounters()}, id="summary without the 0.99 quantile"),
])
def test_parse_missing_families(text, expected):
    assert parse_exposition(text) == expected


def test_parse_rejects_text_that_is_not_an_exposition():
    with pytest.raises(ValueError, match="invalid metric name"):
        parse_exposition("<html>502 Bad Gateway</html>\n")


BUSY = ModelCounters(success=100, failure=2, inferences=180, executions=90, queue_us=50_000,
                compute_us=200_000, pending=1, p99_us=4000)


@pytest.mark.parametrize("previous, current, window_s, expected", [
    pytest.param(
        {"m": BUSY},
        {"m": ModelCounters(success=140, failure=4, inferences=260, executions=130,
                       queue_us=90_000, compute_us=400_000, pending=3, p99_us=5000)},
        2.0,
        # arrivals: 21 completions/s plus the pending queue growing from 1 to 3 in 2 s
        ModelStats(model="m", arrival_rps=22, success_rps=20, failure_rps=1, mean_batch=2.0,
                   queue_ms=1.0, compute_ms=5.0, pending=3, p99_ms=5.0),
        id="rates from deltas"),
    pytest.param(
        {"m": BUSY}, {"m": BUSY}, 10.0,
        ModelStats(model="m", arrival_rps=0, success_rps=0, failure_rps=0, mean_batch=None,
                   queue_ms=None, compute_ms=None, pending=1, p99_ms=4.0),
        id="idle: no means"),
    pytest.param(
        {"m": BUSY},
        {"m": ModelCounters(success=7, inferences=14, executions=7, queue_us=7000,
                       compute_us=14_000)},
        1.0,
        ModelStats(model="m", arrival_rps=7, success_rps=7, failure_rps=0, mean_batch=2.0,
                   queue_ms=1.0, compute_ms=2.0, pending=0, p99_ms=None),
        id="counter reset: counted from zero"),
    pytest.param(
        {"m": BUSY},
        {"m": ModelCounters(success=101, failure=2, inferences=181, executions=91, queue_us=50_500,
                       compute_us=199_000)},
        1.0,
        ModelStats(model="m", arrival_rps=103, success_rps=101, failure_rps=2,
                   mean_batch=181 / 91, queue_ms=0.5, compute_ms=199_000 / 101 / 1000,
                   pending=0, p99_ms=None),
        id="reset seen in one counter only: whole model from zero"),
    pytest.param(
        {},
        {"m": ModelCounters(success=30, inferences=30, executions=30, queue_us=3000,
                       compute_us=6000)},
        3.0,
        ModelStats(model="m", arrival_rps=10, success_rps=10, failure_rps=0, mean_batch=1.0,
                   queue_ms=0.1, compute_ms=0.2, pending=0, p99_ms=None),
        id="model loaded in between"),
])
def test_observation_from_samples(previous, current, window_s, expected):
    observation = observation_from_samples(Sample(100.0, previous),
                                           Sample(100.0 + window_s, current))
    assert observation.time_s == 100.0 + window_s
    assert observation.window_s == window_s
    assert observation.source == "triton"
    assert set(observation.models) == {"m"}
    actual = observation.models["m"]
    for field in fields(ModelStats):
        assert getattr(actual, field.name) == pytest.approx(getattr(expected, field.name)), \
            field.name


def test_model_gone_from_the_later_sample_is_left_out():
    observation = observation_from_samples(Sample(0.0, {"gone": BUSY, "m": BUSY}),
                                           Sample(1.0, {"m": BUSY}))
    assert set(observation.models) == {"m"}
    assert observation.rps("gone") == 0.0


def test_no_negative_rates_from_any_pair_of_samples():
    samples = [{}, {"m": BUSY}, {"m": ModelCounters(success=3)}, {"m": ModelCounters()}]
    for previous in samples:
        for current in samples:
            for stats in observation_from_samples(Sample(0, previous),
                                                  Sample(1, current)).models.values():
                assert min(stats.arrival_rps, stats.success_rps, stats.failure_rps) >= 0, \
                    (previous, current)


@pytest.mark.parametrize("later_s", [100.0, 99.0])
def test_samples_out_of_order_are_refused(later_s):
    with pytest.raises(ValueError, match="samples must be taken in order"):
        observation_from_samples(Sample(100.0, {}), Sample(later_s, {}))


def test_every_counters_field_is_fed_by_the_metric_table():
    fed = {metric.field for metric in TRITON_METRICS.values()}
    assert fed == {field.name for field in fields(ModelCounters)}
    assert set(COUNTER_FIELDS) == {m.field for m in TRITON_METRICS.values()
                                   if m.kind is Kind.COUNTER}
    for name, metric in TRITON_METRICS.items():
        assert name.startswith("nv_inference_") and metric.unit and metric.meaning, name
