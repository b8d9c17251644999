"""The simulator's Triton model against queueing theory and Triton's batcher rules (no servers)."""

from __future__ import annotations

import numpy as np
import pytest

from adapter.core.admission import QueuePolicy
from adapter.core.profile import LatencyFit, Profiles, VariantProfile
from adapter.sim.engine import Engine, StageConfig
from adapter.sim.service import ServiceTimes


def fixed_profiles(service_ms: dict[str, tuple[float, float]], efficiency: float = 1.0) -> Profiles:
    """Deterministic service times: model -> (ms at batch 1, extra ms per request in a batch)."""
    variants = {}
    for model, (c0, c1) in service_ms.items():
        fit = LatencyFit(kind="poly1", coefficients=(c0, c1, 0.0), rmse_ms=0.0, max_rel_error=0.0,
                         max_batch_size=16)
        variants[model] = VariantProfile(model=model, measurements=(), latency=fit, instance_efficiency=efficiency)
    return Profiles(variants=variants)


def engine_with(arrivals, configs, service_ms, pods=1, handoff_ms=0.0, efficiency=1.0):
    engine = Engine("ens", len(configs), np.asarray(arrivals, dtype=float),
                    ServiceTimes(fixed_profiles(service_ms, efficiency)), handoff_ms=handoff_ms)
    for _ in range(pods):
        engine.add_pod(configs, ready_at=0.0)
    return engine


def stage_ms(engine, stage=0):
    a, b = np.asarray(engine.stage_in[stage]), np.asarray(engine.stage_out[stage])
    return (b - a)[b >= 0] * 1000


def poisson(rate, seconds, seed=1):
    rng = np.random.default_rng(seed)
    return np.cumsum(rng.exponential(1 / rate, int(rate * seconds)))


def test_single_server_matches_the_m_d_1_mean_wait():
    """Poisson arrivals, deterministic 8 ms service, batch 1: Pollaczek-Khinchine's mean wait."""
    rate, service_s = 100.0, 0.008
    arrivals = poisson(rate, 600)
    engine = engine_with(arrivals, [StageConfig("m", 1, 0, 1)], {"m": (8.0, 0.0)})
    engine.run_until(arrivals[-1] + 10)
    rho = rate * service_s
    expected_wait_ms = rho * service_s / (2 * (1 - rho)) * 1000
    waits = stage_ms(engine) - 8.0
    assert len(waits) == len(arrivals)
    assert waits.mean() == pytest.approx(expected_wait_ms, rel=0.06)
    assert waits.min() >= -1e-9


def test_two_servers_match_the_m_d_2_throughput_and_halve_the_wait_of_one():
    rate = 180.0  # one 8 ms server could not keep up (rho 1.44); two can (rho 0.72)
    arrivals = poisson(rate, 300)
    engine = engine_with(arrivals, [StageConfig("m", 1, 0, 2)], {"m": (8.0, 0.0)})
    engine.run_until(arrivals[-1] + 10)
    lat = stage_ms(engine)
    assert len(lat) == len(arrivals)
    assert np.percentile(lat, 50) < 20  # stable: no queue growing through the run


def test_the_batcher_waits_for_its_preferred_size_then_sends_at_once():
    # 4 requests 10 ms apart, batch 4, delay 50 ms: one batch, sent when the 4th arrives.
    arrivals = [0.0, 0.01, 0.02, 0.03]
    engine = engine_with(arrivals, [StageConfig("m", 4, 50_000, 1)], {"m": (5.0, 1.0)})
    engine.run_until(1.0)
    assert engine.stats["m"].executions == 1
    assert engine.stage_out[0] == pytest.approx([0.03 + 0.009] * 4)  # 5 + 4 * 1 ms


def test_the_batcher_sends_a_partial_batch_when_the_oldest_has_waited_the_delay():
    arrivals = [0.0, 0.01]
    engine = engine_with(arrivals, [StageConfig("m", 4, 20_000, 1)], {"m": (5.0, 1.0)})
    engine.run_until(1.0)
    assert engine.stats["m"].executions == 1
    assert engine.stage_out[0] == pytest.approx([0.02 + 0.007] * 2)  # sent at 20 ms, 2 requests


def test_batches_never_exceed_the_preferred_size_and_form_only_when_an_instance_is_free():
    arrivals = np.zeros(10)  # a burst of 10 at once, batch 4 (1 ms delay), one instance
    engine = engine_with(arrivals, [StageConfig("m", 4, 1000, 1)], {"m": (5.0, 1.0)})
    engine.run_until(1.0)
    assert engine.stats["m"].executions == 3  # 4 + 4 + 2, one after another
    assert sorted(set(np.round(engine.stage_out[0], 6))) == pytest.approx([0.009, 0.018, 0.025])


def test_instances_share_the_pods_cores_with_the_measured_efficiency():
    arrivals = np.zeros(2)
    full = engine_with(arrivals, [StageConfig("m", 1, 0, 2)], {"m": (10.0, 0.0)}, efficiency=1.0)
    half = engine_with(arrivals, [StageConfig("m", 1, 0, 2)], {"m": (10.0, 0.0)}, efficiency=0.5)
    full.run_until(1.0)
    half.run_until(1.0)
    assert full.stage_out[0] == pytest.approx([0.010, 0.010])  # two at once, each at full speed
    # With e = 0.5 the second instance adds half a core: the batch started second runs 2/1.5 slower.
    assert sorted(half.stage_out[0]) == pytest.approx([0.010, 0.010 * 2 / 1.5])


def test_the_ensemble_hands_each_finished_batch_to_the_next_stage():
    arrivals = np.array([0.0, 0.001])
    configs = [StageConfig("a", 2, 10_000, 1), StageConfig("b", 1, 0, 1)]
    engine = engine_with(arrivals, configs, {"a": (4.0, 0.0), "b": (3.0, 0.0)}, handoff_ms=0.5)
    engine.run_until(1.0)
    # a: one batch of 2 sent at 1 ms, done at 5 ms; b: one at a time from 5.5 ms.
    assert engine.stage_in[1] == pytest.approx([0.0055, 0.0055])
    assert sorted(engine.finished) == pytest.approx([0.0085, 0.0115])
    assert engine.stats["ens"].success == 2


def test_a_reconfiguration_serves_new_arrivals_once_ready_and_the_old_one_drains():
    arrivals = np.array([0.0, 0.001, 0.5, 0.501])
    engine = engine_with(arrivals, [StageConfig("slow", 1, 0, 1)], {"slow": (100.0, 0.0), "fast": (1.0, 0.0)})
    engine.reconfigure(engine.pods[0], 0, StageConfig("fast", 1, 0, 1), ready_at=0.05)
    engine.run_until(2.0)
    # The first two were queued on `slow` before the swap: they finish there, one after another.
    assert engine.stage_out[0][:2] == pytest.approx([0.1, 0.2])
    assert engine.stage_out[0][2:] == pytest.approx([0.501, 0.502])
    assert engine.stats["slow"].success == 2 and engine.stats["fast"].success == 2


def test_a_pod_reconfigured_while_it_starts_comes_up_with_the_newer_configuration():
    # A plan that scales up and then changes the models while the new pod starts: the pod's
    # start (issued first, ready last) must not bring back the configuration it was asked for.
    engine = engine_with([], [StageConfig("slow", 1, 0, 1)], {"slow": (100.0, 0.0), "fast": (1.0, 0.0)})
    starting = engine.add_pod([StageConfig("slow", 1, 0, 1)], ready_at=30.0)
    engine.reconfigure(starting, 0, StageConfig("fast", 1, 0, 1), ready_at=10.0)
    engine.run_until(31.0)
    assert starting.ready and starting.servers[0].config.model == "fast"


def test_of_two_reloads_in_flight_the_later_issued_one_stays():
    engine = engine_with([], [StageConfig("slow", 1, 0, 1)], {"slow": (100.0, 0.0), "a": (1.0, 0.0),
                                                               "b": (1.0, 0.0)})
    pod = engine.pods[0]
    engine.reconfigure(pod, 0, StageConfig("a", 1, 0, 1), ready_at=2.0)
    engine.reconfigure(pod, 0, StageConfig("b", 1, 0, 1), ready_at=5.0)
    engine.run_until(3.0)
    assert pod.servers[0].config.model == "a"  # in force until the later one is ready
    engine.run_until(6.0)
    assert pod.servers[0].config.model == "b"


def test_pods_share_the_load_and_a_new_pod_serves_only_once_ready():
    arrivals = np.arange(0, 2, 0.01)
    engine = engine_with(arrivals, [StageConfig("m", 1, 0, 1)], {"m": (1.0, 0.0)})
    late = engine.add_pod([StageConfig("m", 1, 0, 1)], ready_at=1.0)
    engine.run_until(3.0)
    assert len(engine.ready_pods()) == 2
    served_by_late = [r for r, t in enumerate(arrivals) if t >= 1.0]
    assert all(engine.finished[r] > 0 for r in range(len(arrivals)))
    assert late.ready and len(served_by_late) == 100
    assert engine.stats["m"].success == len(arrivals)


def test_requests_wait_at_the_load_balancer_until_the_first_pod_is_ready():
    engine = Engine("ens", 1, np.array([0.0, 0.1]), ServiceTimes(fixed_profiles({"m": (1.0, 0.0)})))
    engine.add_pod([StageConfig("m", 1, 0, 1)], ready_at=0.5)
    engine.run_until(1.0)
    assert engine.finished == pytest.approx([0.501, 0.502])


def test_metrics_look_like_tritons():
    arrivals = np.arange(0, 10, 0.02)  # 50 rps
    engine = engine_with(arrivals, [StageConfig("m", 2, 40_000, 1)], {"m": (5.0, 1.0)})
    engine.run_until(5.0)
    first = engine.sample()
    engine.run_until(10.0)
    second = engine.sample()
    from adapter.monitor.metrics import observation_from_samples

    obs = observation_from_samples(first, second, source="simulator")
    assert obs.models["ens"].arrival_rps == pytest.approx(50, rel=0.02)
    assert obs.models["m"].mean_batch == pytest.approx(2.0)
    assert obs.models["m"].queue_ms == pytest.approx(10, abs=0.5)  # the first of each pair waits 20 ms
    assert obs.models["m"].compute_ms == pytest.approx(7.0)
    assert obs.models["ens"].p99_ms == pytest.approx(27.0, abs=0.5)


def test_service_times_follow_the_profiles_p50_and_p99():
    from adapter.core.profile import Measurement, fit

    ms = [Measurement(model="m", batch_size=b, instances=1, p50_ms=2.0 * b, p99_ms=5.0 * b,
                      throughput_rps=100, requests=100) for b in (1, 2, 4, 8)]
    service = ServiceTimes(Profiles(variants={"m": fit(ms)}), seed=3)
    draws = np.array([service.draw_s("m", 4, 1) for _ in range(100_000)]) * 1000
    assert np.percentile(draws, 50) == pytest.approx(8.0, rel=0.03)
    assert np.percentile(draws, 99) == pytest.approx(20.0, rel=0.05)


def test_service_times_prefer_the_server_side_percentiles():
    from adapter.core.profile import Measurement, fit

    ms = [Measurement(model="m", batch_size=b, instances=1, p50_ms=3.0 * b, p99_ms=6.0 * b,
                      throughput_rps=100, requests=100, server_p50_ms=2.0 * b, server_p99_ms=4.0 * b)
          for b in (1, 2, 4)]
    service = ServiceTimes(Profiles(variants={"m": fit(ms)}))
    assert service.median_ms("m", 2) == pytest.approx(4.0)
    assert service.median_ms("m", 3) == pytest.approx(6.0)  # between measured sizes: linear


def test_a_bounded_queue_rejects_exactly_the_excess_at_once():
    # A burst of 10 at t = 0, one instance serving one request per 10 ms, a queue of 3: the first
    # goes into service, 3 wait, the other 6 are rejected on arrival.
    engine = engine_with(np.zeros(10), [StageConfig("m", 1, 0, 1, QueuePolicy(max_queue_size=3))], {"m": (10.0, 0.0)})
    engine.run_until(1.0)
    assert engine.finished[:4] == pytest.approx([0.01, 0.02, 0.03, 0.04])
    assert engine.finished[4:] == [-1.0] * 6 and engine.shed == [-1.0] * 4 + [0.0] * 6
    assert (engine.rejected_full, engine.rejected_timeout) == (6, 0)
    # As Triton counts them: nothing on the model for a full queue, two per request on the ensemble.
    assert (engine.stats["m"].success, engine.stats["m"].failure) == (4, 0)
    assert (engine.stats["ens"].success, engine.stats["ens"].failure, engine.stats["ens"].pending) == (4, 12, 0)


def test_a_request_that_waited_past_its_timeout_is_rejected_when_the_batcher_reaches_it():
    # 100 ms per request, a 150 ms timeout: the second starts after 90 ms of waiting; the third
    # and fourth have waited 180 and 170 ms when the instance frees at 200 ms: rejected then,
    # never computed.
    policy = QueuePolicy(timeout_us=150_000, allow_timeout_override=True)
    engine = engine_with([0.0, 0.01, 0.02, 0.03], [StageConfig("m", 1, 0, 1, policy)], {"m": (100.0, 0.0)})
    engine.run_until(1.0)
    assert engine.finished == pytest.approx([0.1, 0.2, -1.0, -1.0])
    assert engine.shed == pytest.approx([-1.0, -1.0, 0.2, 0.2])
    assert (engine.rejected_full, engine.rejected_timeout) == (0, 2)
    m = engine.stats["m"]
    assert (m.success, m.executions, m.failure, m.pending) == (2, 2, 2, 0)  # a timeout counts on the model


def test_a_later_stage_sheds_after_the_earlier_one_served():
    # Stage a serves the first request alone (no delay), then the other two as one batch at 5 ms;
    # stage b serves one per 50 ms and holds one waiting: the third is shed there at 10 ms.
    configs = [StageConfig("a", 4, 0, 1), StageConfig("b", 1, 0, 1, QueuePolicy(max_queue_size=1))]
    engine = engine_with(np.zeros(3), configs, {"a": (5.0, 0.0), "b": (50.0, 0.0)})
    engine.run_until(1.0)
    assert engine.stage_out[0] == pytest.approx([0.005, 0.010, 0.010])  # a computed all three
    assert engine.finished == pytest.approx([0.055, 0.105, -1.0]) and engine.shed[2] == pytest.approx(0.010)
    sample = engine.sample()
    assert (sample.models["ens"].success, sample.models["ens"].failure) == (2.0, 2.0)
    assert (sample.models["a"].success, sample.models["b"].success, sample.models["b"].failure) == (3.0, 2.0, 0.0)
