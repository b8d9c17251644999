"""PrometheusSource against a real Prometheus scraping the real Triton. Prometheus scrapes the
one Triton as two jobs, "pod-a" and "pod-b", so summing across pods can be checked too."""

from __future__ import annotations

import threading
import time

import pytest
import tritonclient.grpc as grpcclient

from adapter.errors import ConfigError, ServerError
from adapter.monitor import PrometheusSource
from adapter.serving.client import TextClient
from adapter.serving.launcher import free_port
from tests.prometheus_server import LocalPrometheus, PrometheusMissing

WINDOW_S = 6.0
TARGET_RPS = 20.0
TOLERANCE = 0.3


@pytest.fixture(scope="module")
def prometheus(triton, tmp_path_factory):
    target = f"{triton.endpoints.host}:{triton.endpoints.metrics_port}"
    server = LocalPrometheus(tmp_path_factory.mktemp("prometheus"),
                             {"pod-a": [target], "pod-b": [target]}, scrape_interval_s=1.0)
    try:
        server.start()
    except PrometheusMissing as exc:  # CI installs it: a missing binary is a failure
        pytest.fail(str(exc))
    yield server
    server.stop()


class SteadyLoad:
    """Single-text requests to one model at a fixed rate from a background thread, keeping
    each completion time so the rate actually driven can be measured."""

    def __init__(self, triton, model: str, outputs: list[str], rps: float):
        self.client = TextClient(triton.endpoints, "http")
        self.model, self.outputs, self.period_s = model, outputs, 1.0 / rps
        self.completed: list[float] = []
        self.errors: list[Exception] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        next_s = time.monotonic()
        while not self._stop.is_set():
            try:
                self.client.infer(self.model, ["steady load for the monitor"], self.outputs)
                self.completed.append(time.monotonic())
            except Exception as exc:  # reported by the test, not lost in the thread
                self.errors.append(exc)
            next_s += self.period_s
            time.sleep(max(0.0, next_s - time.monotonic()))

    def rate_over_last(self, window_s: float) -> float:
        since = time.monotonic() - window_s
        return sum(1 for t in self.completed if t > since) / window_s

    def __enter__(self) -> "SteadyLoad":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.client.close()


def ensemble_members(triton, ensemble: str) -> list[str]:
    config = grpcclient.InferenceServerClient(triton.endpoints.grpc).get_model_config(
        ensemble, as_json=True)["config"]
    return [step["model_name"] for step in config["ensemble_scheduling"]["step"]]


def test_rates_match_the_driven_load(triton, prometheus):
    models = ["text_search", *ensemble_members(triton, "text_search")]
    with SteadyLoad(triton, "text_search", ["LANG", "EMBEDDING"], TARGET_RPS) as load:
        # Prometheus' first scrape comes ~5 s after it starts; rate() needs two samples.
        prometheus.wait_for_series(
            'rate(nv_inference_request_success{model="text_search"}[4s]) > 0')
        # Then fill the whole window with samples under load: rate() over a partly empty
        # window under-reports.
        time.sleep(WINDOW_S + 1)
        one_pod = PrometheusSource(prometheus.url, window_s=WINDOW_S,
                                   selector='job="pod-a"').observe()
        both_pods = PrometheusSource(prometheus.url, window_s=WINDOW_S,
                                     selector='job=~"pod-.*"').observe()
        driven_rps = load.rate_over_last(WINDOW_S)
    assert not load.errors, load.errors[:3]
    assert driven_rps == pytest.approx(TARGET_RPS, rel=TOLERANCE)
    assert one_pod.source == "prometheus" and one_pod.window_s == WINDOW_S
    for model in models:
        stats = one_pod.models[model]
        assert stats.success_rps == pytest.approx(driven_rps, rel=TOLERANCE), model
        assert stats.failure_rps == 0 and stats.arrival_rps == stats.success_rps, model
        assert stats.compute_ms > 0 and stats.p99_ms > 0, model
        assert both_pods.models[model].success_rps == pytest.approx(2 * driven_rps,
                                                                     rel=TOLERANCE), model
    assert one_pod.models["text_search"].mean_batch == pytest.approx(1.0)
    idle = one_pod.models["langid_lingua_high"]
    assert (idle.success_rps, idle.mean_batch) == (0.0, None)


def test_selector_matching_nothing_gives_no_models(prometheus):
    prometheus.wait_for_series("nv_inference_request_success")
    observation = PrometheusSource(prometheus.url, window_s=WINDOW_S,
                                   selector='job="no-such-pod"').observe()
    assert observation.models == {}


def test_bad_selector_is_a_server_error_naming_the_query(prometheus):
    with pytest.raises(ServerError, match=r"^Prometheus at http://127\.0\.0\.1:\d+ rejected "
                                          r"'sum by \(model\) \(rate\(nv_inference_request_"):
        PrometheusSource(prometheus.url, selector="job=").observe()


def test_prometheus_down_is_a_server_error():
    url = f"http://127.0.0.1:{free_port()}"
    started_s = time.monotonic()
    with pytest.raises(ServerError, match=rf"^Prometheus at {url} is unreachable"):
        PrometheusSource(url).observe()
    assert time.monotonic() - started_s < 2, "no retries with backoff on a dead Prometheus"


def test_window_must_be_positive():
    with pytest.raises(ConfigError, match="window_s must be positive, got 0"):
        PrometheusSource("http://127.0.0.1:9090", window_s=0)


def test_missing_binary_names_the_debian_package(tmp_path):
    server = LocalPrometheus(tmp_path, {}, binary=tmp_path / "prometheus")
    with pytest.raises(PrometheusMissing, match="apt-get install .*prometheus"):
        server.start()
