"""The predictor's per-second history, whichever monitor feeds it.

Pure: `arrivals_per_second` (raw Prometheus samples -> requests per whole second) and the
sidecar merging overlapping observations without duplicating a second.
Live: a rate stepping between two levels through the real Triton, read at the same time by a
real Prometheus (scraping every second) and by Triton's /metrics, each through its own Sidecar;
the two histories agree second by second and the Prometheus one adds up to the requests sent."""

from __future__ import annotations

import threading
import time

import pytest

from adapter import paths
from adapter.core.observation import ModelStats, Observation
from adapter.core.predictor import MaxWindowPredictor
from adapter.core.profile import load_profiles
from adapter.core.spec import parse_spec
from adapter.loadgen import load_records, start_schedule
from adapter.monitor import PrometheusSource, TritonMetricsSource
from adapter.monitor.metrics import Kind
from adapter.monitor.prometheus import RawSeries, arrivals_per_second
from adapter.sidecar import Sidecar
from tests.conftest import small_spec
from tests.prometheus_server import LocalPrometheus, PrometheusMissing

SPEC = parse_spec(small_spec())
PROFILES = load_profiles(paths.ENSEMBLES / "text_search" / "profiles.json")


def _counter(model: str, samples, kind: Kind = Kind.COUNTER) -> RawSeries:
    return RawSeries(model, kind, tuple(samples))


# -- arrivals_per_second, pure -----------------------------------------------------------------

def test_a_steady_counter_gives_its_rate_in_every_whole_second_it_covers():
    # Scrapes at .3 past each second, 10 requests per second.
    series = _counter("p", [(100.3 + i, 1000 + 10 * i) for i in range(6)])
    assert arrivals_per_second([series]) == {"p": {s: pytest.approx(10.0) for s in range(101, 105)}}


def test_each_increase_is_split_across_the_seconds_its_scrape_interval_overlaps():
    # 4 requests in (100.5, 101.5], 12 in (101.5, 102.5]: second 101 gets half of each.
    series = _counter("p", [(100.5, 0), (101.5, 4), (102.5, 16)])
    assert arrivals_per_second([series]) == {"p": {101: pytest.approx(8.0)}}


def test_pods_with_different_scrape_phases_add_up_over_the_seconds_both_cover():
    a = _counter("p", [(100.1 + i, 5 * i) for i in range(5)])  # 5 rps, covers 101..103
    b = _counter("p", [(100.7 + i, 3 * i) for i in range(5)])  # 3 rps, covers 101..103
    assert arrivals_per_second([a, b]) == {"p": {s: pytest.approx(8.0) for s in (101, 102, 103)}}


def test_a_missed_scrape_spreads_the_increase_instead_of_a_zero():
    # The scrape at 102.5 is missing: 20 requests over (101.5, 103.5] are 10 per second.
    series = _counter("p", [(100.5, 0), (101.5, 10), (103.5, 30), (104.5, 40)])
    assert arrivals_per_second([series]) == {"p": {s: pytest.approx(10.0) for s in range(101, 104)}}


def test_a_counter_restart_counts_from_zero():
    series = _counter("p", [(100.0, 500), (101.0, 510), (102.0, 4), (103.0, 14)])
    assert arrivals_per_second([series]) == {"p": {100: 10.0, 101: 4.0, 102: 10.0}}


def test_pending_growth_is_arrival_and_a_drained_queue_is_not_negative_load():
    success = _counter("p", [(100.0, 0), (101.0, 2), (102.0, 20), (103.0, 22)])
    pending = _counter("p", [(100.0, 0), (101.0, 6), (102.0, 0), (103.0, 0)], Kind.GAUGE)
    # 2 done + 6 queued; 18 done, queue drained (6 of them came before); 2 done.
    assert arrivals_per_second([success, pending]) == {"p": {100: 8.0, 101: 12.0, 102: 2.0}}
    restarted = _counter("p", [(100.0, 0), (101.0, 9), (102.0, 0)], Kind.GAUGE)
    assert arrivals_per_second([restarted]) == {"p": {100: 9.0, 101: 0.0}}


def test_the_newest_second_waits_for_the_slowest_live_pod():
    a = _counter("p", [(100.2 + i, 5 * i) for i in range(5)])  # last scrape 104.2
    b = _counter("p", [(100.9 + i, 5 * i) for i in range(4)])  # last scrape 103.9: 103 not complete
    assert sorted(arrivals_per_second([a, b])["p"]) == [101, 102]


def test_a_pod_that_is_gone_does_not_hold_the_others_back():
    live = _counter("p", [(100.5 + i, 5 * i) for i in range(10)])  # to 109.5
    gone = _counter("p", [(100.2 + i, 7 * i) for i in range(4)])  # stopped at 103.2
    seconds = arrivals_per_second([live, gone])["p"]
    assert sorted(seconds) == list(range(101, 109))
    assert seconds[101] == pytest.approx(12.0) and seconds[105] == pytest.approx(5.0)
    assert seconds[103] == pytest.approx(5 + 7 * 0.2)  # its last interval ends at 103.2


def test_a_pod_that_appears_does_not_rewrite_the_seconds_before_it():
    old = _counter("p", [(100.5 + i, 5 * i) for i in range(8)])  # to 107.5
    new = _counter("p", [(104.8 + i, 3 * i) for i in range(4)])  # from 104.8
    assert arrivals_per_second([old, new]) == {"p": {105: pytest.approx(8.0), 106: pytest.approx(8.0)}}


def test_models_are_separate_and_a_lone_sample_gives_no_second():
    series = [_counter("p", [(100.0, 0), (101.0, 3), (102.0, 6)]), _counter("q", [(101.5, 9)])]
    assert arrivals_per_second(series) == {"p": {100: 3.0, 101: 3.0}, "q": {}}


# -- the sidecar's history from overlapping observations, pure -------------------------------

class _ScriptedSource:
    """Observations as a Prometheus source returns them: each repeats the last few seconds."""

    source = "prometheus"

    def __init__(self, observations):
        self._observations = iter(observations)

    def observe(self):
        return next(self._observations)


def _stats(rps: float) -> ModelStats:
    return ModelStats(model="text_search", arrival_rps=rps, success_rps=rps, failure_rps=0.0,
                      mean_batch=1.0, queue_ms=0.0, compute_ms=1.0, pending=0.0)


def test_the_sidecar_keeps_one_value_per_second_from_overlapping_windows():
    window = 30
    truth = {s: float(s % 7) for s in range(1000, 1100)}
    ticks = range(1030, 1101)  # one observation per second, each carrying the last 30 s
    source = _ScriptedSource(
        Observation(time_s=float(t), window_s=window, source="prometheus",
                    models={"text_search": _stats(14.0)},
                    arrival_seconds={"text_search": {s: truth[s] for s in range(t - window, t)}})
        for t in ticks)
    sidecar = Sidecar(SPEC, PROFILES, source, actuator=None, predictor=MaxWindowPredictor())
    for _ in ticks:
        sidecar.observe()
    assert sidecar.history.seconds() == sorted(truth.items())  # 100 seconds, not 71 x 30


# -- live: real Prometheus and real Triton, same traffic --------------------------------------

LOW_RPS, HIGH_RPS, PLATEAU_S = 4, 20, 8
SCHEDULE = ([LOW_RPS] * PLATEAU_S + [HIGH_RPS] * PLATEAU_S) * 2 + [LOW_RPS] * PLATEAU_S
WINDOW_S = 30.0  # the production default: rate() over 30 s, raw samples over the same 30 s
# How far apart two samplings of the same traffic may attribute a request: each source puts a
# second's value together from ~1 s intervals around it (scrapes for Prometheus, ticks for
# Triton's /metrics); one missed scrape or one late tick widens that to 2 s either side.
SMEAR_S = 2
# Counting noise between two ~1 s samplings of the same requests: each boundary can move one
# request across (1 per source), plus one more completing across a boundary.
NOISE_REQUESTS = 3
# Timing noise: a counter read lands up to 0.25 s from the time it is stamped with (Prometheus
# stamps the scrape's start, the Triton source stamps after its fetch), so a rate over ~1 s may
# be off by up to 25% of it on a busy machine.
TIMING_SHARE = 0.25


@pytest.fixture(scope="module")
def prometheus(triton, tmp_path_factory):
    target = f"{triton.endpoints.host}:{triton.endpoints.metrics_port}"
    server = LocalPrometheus(tmp_path_factory.mktemp("prometheus"), {"triton": [target]},
                             scrape_interval_s=1.0)
    try:
        server.start()
    except PrometheusMissing as exc:  # CI installs it: a missing binary is a failure
        pytest.fail(str(exc))
    yield server
    server.stop()


class _Observer:
    """Both sidecars observing every second in a background thread, as Sidecar.run does."""

    def __init__(self, *sidecars: Sidecar):
        self.sidecars = sidecars
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            with self.lock:
                for sidecar in self.sidecars:
                    sidecar.observe()
            self._stop.wait(1.0)

    def histories(self) -> list[dict[int, float]]:
        with self.lock:
            return [dict(s.history.seconds()) for s in self.sidecars]

    def wait_until(self, predicate, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate(*self.histories()):
            assert time.monotonic() < deadline, f"timed out after {timeout_s:g} s waiting for {what}"
            time.sleep(0.2)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def _hull(history: dict[int, float], second: int) -> tuple[float, float]:
    near = [history[s] for s in range(second - SMEAR_S, second + SMEAR_S + 1)]
    return min(near), max(near)


def test_prometheus_and_triton_give_the_same_history_for_a_stepping_rate(triton, prometheus, tmp_path):
    via_prometheus = Sidecar(SPEC, PROFILES, PrometheusSource(prometheus.url, window_s=WINDOW_S,
                                                              selector='job="triton"'),
                             actuator=None, predictor=MaxWindowPredictor())
    # Triton's source on the wall clock, so both histories are keyed by the same seconds
    # (Prometheus runs on this machine and stamps samples with Unix time).
    via_triton = Sidecar(SPEC, PROFILES, TritonMetricsSource(triton.endpoints.metrics_url,
                                                             clock=time.time),
                         actuator=None, predictor=MaxWindowPredictor())
    records_path = tmp_path / "load.json"
    with _Observer(via_prometheus, via_triton) as observer:
        # Idle seconds in both histories before the load: Prometheus needs two scrapes first.
        observer.wait_until(lambda p, t: len(p) >= 3 and len(t) >= 3, 60, "idle history")
        start_s = time.time()
        load = start_schedule(triton.endpoints.http, "text_search", SCHEDULE, str(records_path))
        load.join(timeout=len(SCHEDULE) + 120)
        assert load.exitcode == 0, f"load generator exited with {load.exitcode}"
        end_s = time.time()  # every request has completed
        # Until both hold the seconds after the load (Prometheus lags a scrape or two).
        last = int(end_s) + 3
        observer.wait_until(lambda p, t: max(p) >= last and max(t) >= last, 60,
                            f"both histories to reach second {last}")
        prom, trit = observer.histories()

    records = load_records(str(records_path))
    assert not [r.error for r in records if r.error][:3]
    assert len(records) == sum(SCHEDULE)
    span = range(min(prom), last + 1)
    assert min(prom) < int(start_s) and min(trit) < int(start_s)
    # One value per second, none missing, none twice (keys are seconds).
    assert all(s in prom for s in span) and all(s in trit for s in span)

    # Prometheus' series is counts spread over scrape intervals: it adds up to what was sent.
    sent_in_span = sum(prom[s] for s in span)
    assert sent_in_span == pytest.approx(len(records), abs=1)

    # Second by second: each source's value lies within what the other saw around it.
    compared = range(span.start + SMEAR_S, span.stop - SMEAR_S)
    misses, plateau_diffs = [], []
    for s in compared:
        for name, value, other in (("prometheus", prom[s], trit), ("triton", trit[s], prom)):
            lo, hi = _hull(other, s)
            tolerance = NOISE_REQUESTS + TIMING_SHARE * hi
            if not lo - tolerance <= value <= hi + tolerance:
                misses.append(f"{s - int(start_s):+d} s {name} {value:.1f} vs [{lo:.1f}, {hi:.1f}]")
        lo, hi = _hull(trit, s)
        if hi - lo < NOISE_REQUESTS:  # a plateau: the traffic was steady around this second
            plateau_diffs.append(abs(prom[s] - trit[s]))
    timeline = " ".join(f"{prom[s]:.0f}/{trit[s]:.0f}" for s in span)
    print(f"\nper second (prometheus/triton) from {span.start - int(start_s):+d} s: {timeline}"
          f"\nsent {len(records)}, prometheus history sums to {sent_in_span:.1f}, triton's to "
          f"{sum(trit[s] for s in span):.1f}; steady seconds {len(plateau_diffs)}, "
          f"|prometheus - triton| mean {sum(plateau_diffs) / max(len(plateau_diffs), 1):.2f} "
          f"max {max(plateau_diffs, default=0):.2f} requests")
    assert not misses, misses
    # Both levels were seen steady, so the comparison above was not all slopes.
    assert sum(1 for s in compared if abs(trit[s] - HIGH_RPS) <= NOISE_REQUESTS + TIMING_SHARE * HIGH_RPS) >= 4
    assert sum(1 for s in compared if abs(trit[s] - LOW_RPS) <= NOISE_REQUESTS + TIMING_SHARE * LOW_RPS) >= 4
