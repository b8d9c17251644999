"""ArrivalHistory, pure: one value per second from overlapping per-second series (replaced, never
appended twice) and from window means (only the seconds not held yet). No servers."""

from __future__ import annotations

import pytest

from adapter.core.observation import ArrivalHistory, ModelStats, Observation


def _stats(model: str, rps: float) -> ModelStats:
    return ModelStats(model=model, arrival_rps=rps, success_rps=rps, failure_rps=0.0,
                      mean_batch=1.0, queue_ms=0.0, compute_ms=1.0, pending=0.0)


def _window_obs(end_s: float, window_s: float, rps: float) -> Observation:
    return Observation(time_s=end_s, window_s=window_s, source="triton",
                       models={"p": _stats("p", rps)})


def _series_obs(seconds: dict[int, float], window_rps: float = 0.0) -> Observation:
    return Observation(time_s=0.0, window_s=30.0, source="prometheus",
                       models={"p": _stats("p", window_rps)}, arrival_seconds={"p": seconds})


def test_overlapping_series_keep_one_value_per_second_and_the_newest_wins():
    history = ArrivalHistory("p", max_seconds=600)
    # Each observation repeats the last 5 s; the newest of a second replaces the older value.
    history.add(_series_obs({100: 4.0, 101: 4.0, 102: 5.0, 103: 2.0}))
    history.add(_series_obs({101: 4.0, 102: 5.0, 103: 3.0, 104: 9.0, 105: 9.0}))
    assert history.seconds() == [(100, 4.0), (101, 4.0), (102, 5.0), (103, 3.0), (104, 9.0),
                                 (105, 9.0)]
    assert history.rates() == [4.0, 4.0, 5.0, 3.0, 9.0, 9.0] == list(history)


def test_a_series_observation_never_falls_back_to_its_window_mean():
    history = ArrivalHistory("p", max_seconds=600)
    history.add(_series_obs({}, window_rps=50.0))  # no complete second yet: nothing known
    history.add(Observation(time_s=0.0, window_s=30.0, source="prometheus",
                            models={"p": _stats("p", 50.0)}, arrival_seconds={}))
    assert len(history) == 0


def test_an_outage_longer_than_the_series_is_left_out_not_filled():
    history = ArrivalHistory("p", max_seconds=600)
    history.add(_series_obs({100: 4.0, 101: 4.0}))
    history.add(_series_obs({160: 7.0, 161: 8.0}))
    assert history.seconds() == [(100, 4.0), (101, 4.0), (160, 7.0), (161, 8.0)]


def test_window_means_fill_each_ended_second_once():
    history = ArrivalHistory("p", max_seconds=600)
    # Ticks drift (1.0-1.3 s windows); every second that ended in a window gets its mean.
    ends = [10.2, 11.3, 12.6, 13.6, 14.65]
    for start, end, rps in zip(ends, ends[1:], [5.0, 6.0, 7.0, 8.0]):
        history.add(_window_obs(end, end - start, rps))
    assert history.seconds() == [(10, 5.0), (11, 6.0), (12, 7.0), (13, 8.0)]


def test_a_window_over_a_gap_spreads_its_mean_not_zeros_nor_a_repeat():
    history = ArrivalHistory("p", max_seconds=600)
    history.add(_window_obs(10.5, 1.0, 4.0))
    # Metrics unreachable for a while: the next window spans the gap with its real mean.
    history.add(_window_obs(16.5, 6.0, 12.0))
    assert history.seconds() == [(9, 4.0)] + [(s, 12.0) for s in range(10, 16)]


def test_a_long_window_mean_fills_only_the_new_seconds():
    history = ArrivalHistory("p", max_seconds=600)
    history.add(_window_obs(130.0, 30.0, 10.0))
    history.add(_window_obs(131.0, 30.0, 40.0))
    assert len(history) == 31  # not 60: 29 seconds of the second window were held
    assert history.seconds()[-2:] == [(129, 10.0), (130, 40.0)]


def test_a_window_mean_does_not_overwrite_a_held_second():
    history = ArrivalHistory("p", max_seconds=600)
    history.merge({10: 3.0})
    history.fill_window(12.0, 3.0, 9.0)
    assert history.seconds() == [(9, 9.0), (10, 3.0), (11, 9.0)]


def test_only_the_newest_seconds_are_kept():
    history = ArrivalHistory("p", max_seconds=3)
    history.merge({s: float(s) for s in range(10)})
    history.merge({4: 0.0})  # older than everything kept: dropped again
    assert history.seconds() == [(7, 7.0), (8, 8.0), (9, 9.0)]
    history.clear()
    assert history.rates() == []


def test_other_models_are_ignored():
    history = ArrivalHistory("p", max_seconds=10)
    history.add(Observation(time_s=0.0, window_s=1.0, source="prometheus",
                            arrival_seconds={"q": {1: 5.0}}))
    history.add(Observation(time_s=5.0, window_s=1.0, source="triton"))  # p absent: 0 rps
    assert history.seconds() == [(4, 0.0)]


def test_max_seconds_must_be_positive():
    with pytest.raises(ValueError, match="at least 1"):
        ArrivalHistory("p", max_seconds=0)


def test_a_shed_ensemble_request_is_one_arrival_though_triton_counts_two_failures():
    stats = ModelStats(model="p", arrival_rps=100.0, success_rps=90.0, failure_rps=10.0, mean_batch=1,
                       queue_ms=0.0, compute_ms=1.0, pending=0)  # 5 requests/s shed, counted twice
    history = ArrivalHistory("p", 60)
    history.add(Observation(time_s=10.0, window_s=1.0, source="test", models={"p": stats}))
    assert history.rates() == [95.0]
