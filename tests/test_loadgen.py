"""The open-loop load generator's schedule (pure: no server)."""

from __future__ import annotations

import numpy as np

from adapter.loadgen import send_times


def test_without_a_seed_each_seconds_requests_are_evenly_spaced():
    assert send_times([2, 0, 4]) == [0.0, 0.5, 2.0, 2.25, 2.5, 2.75]


def test_with_a_seed_arrivals_are_poisson_at_each_seconds_rate():
    times = np.array(send_times([50.0] * 200 + [5.0] * 200, poisson_seed=1))
    assert np.all(np.diff(times) >= 0) and times.min() >= 0 and times.max() < 400
    per_second = np.bincount(times.astype(int), minlength=400)
    assert abs(per_second[:200].mean() - 50) < 1.5 and abs(per_second[200:].mean() - 5) < 0.5
    assert 0.7 < per_second[:200].var() / per_second[:200].mean() < 1.3  # Poisson: variance = mean
    gaps = np.diff(times[times < 200])
    assert 0.8 < gaps.std() / gaps.mean() < 1.2  # exponential gaps: coefficient of variation 1
    assert send_times([50.0] * 5, poisson_seed=1) == send_times([50.0] * 5, poisson_seed=1)
    assert send_times([50.0] * 5, poisson_seed=1) != send_times([50.0] * 5, poisson_seed=2)
