"""TritonMetricsSource against the real Triton: send a known number of requests between two
observations and read them back."""

from __future__ import annotations

import time
import urllib.request

import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from adapter.errors import ServerError
from adapter.monitor import TRITON_METRICS, TritonMetricsSource
from adapter.serving.client import TextClient
from adapter.serving.launcher import free_port

TEXT = ["the quick brown fox jumps over the lazy dog"]


@pytest.fixture(scope="module")
def client(triton):
    client = TextClient(triton.endpoints, "http")
    yield client
    client.close()


@pytest.fixture
def source(triton):
    source = TritonMetricsSource(triton.endpoints.metrics_url)
    assert source.observe() is None  # the first call primes
    return source


def ensemble_members(triton, ensemble: str) -> list[str]:
    """The ensemble's steps as Triton serves them now (other tests may re-point them)."""
    config = grpcclient.InferenceServerClient(triton.endpoints.grpc).get_model_config(
        ensemble, as_json=True)["config"]
    return [step["model_name"] for step in config["ensemble_scheduling"]["step"]]


def counters(source, *keys: tuple[str, str]) -> dict[tuple[str, str], float]:
    """Triton's counters now, by (model, "success" or "failure"); 0 for a model not loaded."""
    models_now = source.sample().models
    return {(m, field): getattr(models_now[m], field) if m in models_now else 0.0
            for m, field in keys}


def successes(source, *models: str) -> dict[str, float]:
    return {m: n for (m, _), n in counters(source, *((m, "success") for m in models)).items()}


def wait_counted(source, expected: dict, timeout_s: float = 30) -> None:
    """Wait until Triton's counters reach `expected` (keys: a model for its successes, or
    (model, field)): Triton counts a request after it has sent the response, so a client can
    read /metrics before its last request is counted."""
    expected = {k if isinstance(k, tuple) else (k, "success"): n for k, n in expected.items()}
    deadline = time.monotonic() + timeout_s
    while (now := counters(source, *expected)) != expected:
        assert all(now[m] <= expected[m] for m in expected), f"counted {now}, sent {expected}"
        assert time.monotonic() < deadline, f"counted {now} after {timeout_s} s, sent {expected}"
        time.sleep(0.02)


def sent(stats, window_s: float) -> float:
    """Requests in the window: rate x window gives back the count Triton recorded."""
    return stats.success_rps * window_s


def test_every_metric_in_the_table_is_exported(triton):
    with urllib.request.urlopen(triton.endpoints.metrics_url, timeout=5) as response:
        text = response.read().decode()
    missing = [name for name in TRITON_METRICS if f"# TYPE {name} " not in text]
    assert not missing, f"Triton no longer exports {missing} (summary_latencies=true is set)"
    quantiles = {line.split('quantile="')[1].split('"')[0] for line in text.splitlines()
                 if line.startswith("nv_inference_request_summary_us{")}
    assert quantiles == {"0.5", "0.9", "0.95", "0.99", "0.999"}


def test_single_requests_counted_exactly(client, source):
    before = successes(source, "langid_cld2")["langid_cld2"]
    for _ in range(40):
        client.infer("langid_cld2", TEXT, ["LANG"])
    wait_counted(source, {"langid_cld2": before + 40})
    observation = source.observe()
    stats = observation.models["langid_cld2"]
    assert sent(stats, observation.window_s) == pytest.approx(40)
    assert stats.failure_rps == 0 and stats.arrival_rps == stats.success_rps
    assert stats.mean_batch == 1.0  # sequential single requests: nothing to batch
    assert stats.queue_ms > 0 and stats.compute_ms > 0
    assert stats.p99_ms > 0
    assert stats.pending == 0
    idle = observation.models["langid_lingua_high"]
    assert (idle.success_rps, idle.mean_batch, idle.queue_ms) == (0.0, None, None)


def test_client_batches_give_mean_batch(client, source):
    before = successes(source, "langid_cld2")["langid_cld2"]
    for _ in range(5):
        client.infer("langid_cld2", TEXT * 8, ["LANG"])
    wait_counted(source, {"langid_cld2": before + 5})
    observation = source.observe()
    stats = observation.models["langid_cld2"]
    assert sent(stats, observation.window_s) == pytest.approx(5)
    assert stats.mean_batch == 8.0


def test_ensemble_and_member_counters_with_failures(triton, client, source):
    members = ensemble_members(triton, "text_search")
    before = successes(source, "text_search", *members)
    failed_before = counters(source, ("text_search", "failure"))[("text_search", "failure")]
    for _ in range(5):
        client.infer("text_search", TEXT, ["LANG", "EMBEDDING"])
    for _ in range(3):
        with pytest.raises(InferenceServerException, match="TEXT is empty"):
            client.infer("text_search", [" "], ["LANG", "EMBEDDING"])
    first_name, second_name = members
    wait_counted(source, {"text_search": before["text_search"] + 5,
                          first_name: before[first_name] + 5 + 3,
                          second_name: before[second_name] + 5,
                          # Triton 2.51 counts each failed ensemble request twice (reason OTHER).
                          ("text_search", "failure"): failed_before + 2 * 3})
    observation = source.observe()
    window_s = observation.window_s
    ensemble = observation.models["text_search"]
    assert sent(ensemble, window_s) == pytest.approx(5)
    # Triton 2.51 counts each failed ensemble request twice (reason OTHER).
    assert ensemble.failure_rps * window_s == pytest.approx(2 * 3)
    assert ensemble.mean_batch == 1.0
    first, second = (observation.models[m] for m in members)
    # The first step answered the empty texts with error responses, which Triton counts as
    # successes of that model; the second step only saw the good requests.
    assert sent(first, window_s) == pytest.approx(5 + 3)
    assert sent(second, window_s) == pytest.approx(5)
    assert first.failure_rps == second.failure_rps == 0
    # An ensemble does not queue itself; its compute is its members'.
    assert ensemble.queue_ms < min(first.queue_ms, second.queue_ms)
    assert ensemble.compute_ms > second.compute_ms


def test_model_reloaded_from_scratch_is_a_counter_reset(triton, client, source):
    # A model no ensemble uses: unloading it must not take a pipeline down.
    model = next(m for m in ("langid_cld2", "langid_langidpy")
                 if m not in ensemble_members(triton, "text_search"))
    control = grpcclient.InferenceServerClient(triton.endpoints.grpc)
    for _ in range(10):
        client.infer(model, TEXT, ["LANG"])
    source.observe()
    # Unload, then load once the unload has finished (a load during UNLOADING may keep the
    # old counters): the model's counters restart at zero.
    control.unload_model(model)
    deadline = time.monotonic() + 30
    while model_state(control, model) == "UNLOADING":
        assert time.monotonic() < deadline, f"{model} still unloading after 30 s"
        time.sleep(0.05)
    control.load_model(model)
    for _ in range(3):
        client.infer(model, TEXT, ["LANG"])
    # Counters kept across the reload would read 13 and fail the wait at once.
    wait_counted(source, {model: 3})
    observation = source.observe()
    assert sent(observation.models[model], observation.window_s) == pytest.approx(3)


def model_state(control, model: str) -> str | None:
    index = control.get_model_repository_index(as_json=True)["models"]
    return next((m.get("state") for m in index if m["name"] == model), None)


def test_unreachable_triton_is_a_server_error():
    url = f"http://127.0.0.1:{free_port()}/metrics"
    with pytest.raises(ServerError, match=rf"^Triton metrics at {url} unreachable: .*refused"):
        TritonMetricsSource(url).observe()


def test_page_that_is_not_metrics_is_a_server_error(triton):
    url = f"http://{triton.endpoints.http}/v2"  # server metadata: JSON, not metrics
    with pytest.raises(ServerError, match=rf"^Triton metrics at {url} are not Prometheus text"):
        TritonMetricsSource(url).observe()
