import bz2

import numpy as np
import pytest

from adapter import paths, workloads
from adapter.errors import ConfigError
from adapter.workloads import load_rps_file, named_workload, time_scale, twitter_trace

# From shared/traces/README.md: IPA's workloads after int(v / 8).
WORKLOAD_STATS = [
    # (name, seconds, min rps, max rps, mean rps to 0.1)
    ("bursty", 1200, 3, 34, 12.0),
    ("steady-low", 1200, 3, 8, 5.1),
    ("steady-high", 600, 23, 34, 28.8),
    ("fluctuating", 1200, 3, 34, 16.5),
]


@pytest.mark.parametrize("name, seconds, low, high, mean", WORKLOAD_STATS)
def test_named_workload_matches_ipa(name, seconds, low, high, mean):
    series = named_workload(name)
    assert (len(series), series.min(), series.max(), round(series.mean(), 1)) == (seconds, low, high, mean)


def test_named_workloads_are_all_pinned():
    assert set(workloads.NAMED_WORKLOADS) == {row[0] for row in WORKLOAD_STATS}


def test_twitter_trace_is_the_whole_read_only_trace():
    trace = twitter_trace()
    assert (len(trace), trace.max(), round(trace.mean(), 1)) == (1_899_061, 388, 63.6)
    with pytest.raises(ValueError):
        trace[0] = 1


def test_damping_is_int_of_the_division():
    raw = twitter_trace()[1301160:1302360]
    assert np.array_equal(named_workload("bursty", damping=1), raw)
    assert np.array_equal(named_workload("bursty", damping=3), [int(v / 3) for v in raw])


@pytest.mark.parametrize(
    "name, damping, message",
    [
        ("burst", 8, r"unknown workload 'burst' \(did you mean 'bursty'\?\); "
                     r"known: bursty, steady-low, steady-high, fluctuating"),
        ("diurnal", 8, r"unknown workload 'diurnal'; known: bursty, "),
        ("bursty", 0, r"`damping` must be a positive number, got 0"),
        ("bursty", float("inf"), r"`damping` must be a positive number, got inf"),
    ],
)
def test_named_workload_errors(name, damping, message):
    with pytest.raises(ConfigError, match=message):
        named_workload(name, damping)


def test_traces_dir_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("TPA_TRACES_DIR", str(tmp_path))
    assert workloads.traces_dir() == tmp_path
    with pytest.raises(ConfigError, match=r"twitter_rps\.txt\.bz2: Twitter trace missing"):
        twitter_trace()


def test_missing_traces_dir_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("TPA_TRACES_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match=r"nowhere \(from \$TPA_TRACES_DIR\) does not exist"):
        workloads.traces_dir()


def test_missing_default_traces_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("TPA_TRACES_DIR", raising=False)
    monkeypatch.setattr(paths, "ROOT", tmp_path / "main")
    message = r"shared/traces \(from the default location\) does not exist.*TPA_TRACES_DIR"
    with pytest.raises(ConfigError, match=message):
        workloads.traces_dir()


def test_load_rps_file(tmp_path):
    path = tmp_path / "load.txt"
    path.write_text("3\n4.5\n 0 \n1e2\n\n\n")
    assert load_rps_file(path).tolist() == [3, 4.5, 0, 100]


def test_load_rps_file_bz2(tmp_path):
    path = tmp_path / "load.txt.bz2"
    path.write_bytes(bz2.compress(b"1\n2\n"))
    assert load_rps_file(path).tolist() == [1, 2]


@pytest.mark.parametrize(
    "text, message",
    [
        ("1\nabc\n", r"load\.txt:2: expected one non-negative number \(requests per second\), got 'abc'"),
        ("1\n2\n-3\n", r"load\.txt:3: expected one non-negative number .* got '-3'"),
        ("nan\n", r"load\.txt:1: .* got 'nan'"),
        ("1\ninf\n", r"load\.txt:2: .* got 'inf'"),
        ("1\n\n2\n", r"load\.txt:2: .* got ''"),
        ("1 2\n", r"load\.txt:1: .* got '1 2'"),
        ("\n \n", r"load\.txt: no values; expected one number of requests per second per line"),
    ],
)
def test_load_rps_file_errors(tmp_path, text, message):
    path = tmp_path / "load.txt"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_rps_file(path)


def test_load_rps_file_unreadable(tmp_path):
    with pytest.raises(ConfigError, match=r"missing\.txt: cannot read rps file: .*No such file"):
        load_rps_file(tmp_path / "missing.txt")


@pytest.mark.parametrize(
    "series, factor, expected",
    [
        ([1, 3, 5, 7], 2, [2, 6]),
        ([1, 3, 5], 2, [2, 5]),  # the last output second covers only the input's last second
        ([1, 3, 5], 1, [1, 3, 5]),
        ([1, 3], 0.5, [1, 1, 3, 3]),  # factor < 1 stretches time
        ([0, 3, 6], 1.5, [1, 5]),  # [0, 1.5): 0 for 1 s and 3 for 0.5 s; [1.5, 3): 3 for 0.5 s, 6 for 1 s
        ([], 2, []),
    ],
)
def test_time_scale(series, factor, expected):
    assert time_scale(np.array(series, dtype=float), factor) == pytest.approx(expected)


def test_time_scale_keeps_the_shape():
    bursty = named_workload("bursty")
    faster = time_scale(bursty, 2)
    assert len(faster) == 600
    assert faster == pytest.approx(bursty.reshape(600, 2).mean(axis=1))
    assert (faster.min(), faster.max(), faster.mean()) == pytest.approx((3.5, 31.0, bursty.mean()))


def test_time_scale_length_ignores_float_error():
    assert len(time_scale(np.ones(1200), 0.3)) == 4000


@pytest.mark.parametrize("factor", [0, -2, float("nan"), "2"])
def test_time_scale_errors(factor):
    with pytest.raises(ConfigError, match=r"time-scale `factor` must be a positive number, got"):
        time_scale(np.ones(4), factor)


def test_arrival_times_spread_each_second_or_follow_a_poisson_process():
    from adapter.workloads import arrival_times

    assert list(arrival_times(np.array([2.0, 0.0, 4.0]))) == [0.0, 0.5, 2.0, 2.25, 2.5, 2.75]
    times = arrival_times(np.array([50.0] * 200 + [5.0] * 200), poisson=True, seed=1)
    assert np.all(np.diff(times) >= 0) and times.min() >= 0 and times.max() < 400
    per_second = np.bincount(times.astype(int), minlength=400)
    assert abs(per_second[:200].mean() - 50) < 1.5 and abs(per_second[200:].mean() - 5) < 0.5
    assert 0.7 < per_second[:200].var() / per_second[:200].mean() < 1.3  # Poisson: variance = mean
    gaps = np.diff(times[times < 200])
    assert 0.8 < gaps.std() / gaps.mean() < 1.2  # exponential gaps: coefficient of variation 1
    five = np.array([50.0] * 5)
    assert np.array_equal(arrival_times(five, True, 1), arrival_times(five, True, 1))
    assert not np.array_equal(arrival_times(five, True, 1), arrival_times(five, True, 2))
