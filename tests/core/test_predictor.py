import math

import numpy as np

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapter.core.predictor import (
    PREDICTORS, LastValuePredictor, MaxWindowPredictor, MovingAveragePredictor, Predictor, QuantilePredictor,
    make_predictor,
)
from adapter.errors import ConfigError

PREDICTION_CASES = [
    # (case, predictor, history_rps newest last, expected prediction)
    ("constant: max-window", MaxWindowPredictor(), [10] * 120, 10),
    ("constant: last-value", LastValuePredictor(), [10] * 120, 10),
    ("constant: moving-average", MovingAveragePredictor(), [10] * 120, 10),
    # Window maxima 9, 19, ..., 119; two windows on the line is 139, the true max of the next 20 s.
    ("ramp up: trend followed to the horizon", MaxWindowPredictor(), list(range(120)), 139),
    ("ramp down: floored at the last window's max", MaxWindowPredictor(), list(range(119, -1, -1)), 9),
    ("only the lookback counts", MaxWindowPredictor(headroom_sigma=0), [100] * 60 + [10] * 120, 10),
    ("spike: the last window's max is kept", MaxWindowPredictor(headroom_sigma=0), [10] * 119 + [50], 50),
    ("spike: last-value", LastValuePredictor(), [10] * 119 + [50], 50),
    ("spike: moving-average spreads it", MovingAveragePredictor(window_s=30), [10] * 29 + [40], 11),
    ("last-value window_s=1 is the last second", LastValuePredictor(window_s=1), [5, 9, 3], 3),
    # Alternating 10/12: second-to-second changes of +-2 mean a noise spread of sqrt(2).
    ("noise headroom", MaxWindowPredictor(), [10, 12] * 60, 12 + 1.5 * math.sqrt(2)),
    ("short history: one second", MaxWindowPredictor(), [7], 7),
    # A partial oldest window (0..4) and a full one (5..14): the ramp still extrapolates to 34.
    ("short history: ramp over 15 s", MaxWindowPredictor(), list(range(15)), 34),
    ("short history: moving-average of what there is", MovingAveragePredictor(window_s=30), [2, 4], 3),
]


@pytest.mark.parametrize(
    "predictor, history, expected", [case[1:] for case in PREDICTION_CASES], ids=[case[0] for case in PREDICTION_CASES]
)
def test_prediction(predictor, history, expected):
    assert predictor.predict(history) == pytest.approx(expected, rel=1e-3)


@pytest.mark.parametrize("name", PREDICTORS)
def test_empty_history_predicts_zero(name):
    assert make_predictor(name).predict([]) == 0.0


@pytest.mark.parametrize("name, kind", PREDICTORS.items())
def test_registry_builds_predictors(name, kind):
    predictor = make_predictor(name)
    assert isinstance(predictor, kind)
    assert isinstance(predictor, Predictor)


def test_default_is_the_quantile_forecast_over_ipas_horizon():
    assert make_predictor() == QuantilePredictor(horizon_s=20)


INVALID_PARAMETERS = [
    (MaxWindowPredictor, {"window_s": 0},
     r"MaxWindowPredictor: `window_s` must be a whole number of seconds >= 1, got 0"),
    (MaxWindowPredictor, {"window_s": 2.5}, r"`window_s` must be a whole number of seconds >= 1, got 2\.5"),
    (MaxWindowPredictor, {"horizon_s": True}, r"`horizon_s` must be a whole number of seconds >= 1, got True"),
    (MaxWindowPredictor, {"lookback_s": 5}, r"`lookback_s` \(5\) must be at least `window_s` \(10\)"),
    (MaxWindowPredictor, {"headroom_sigma": -1}, r"`headroom_sigma` must be a finite number >= 0, got -1"),
    (MaxWindowPredictor, {"headroom_sigma": math.nan}, r"`headroom_sigma` must be a finite number >= 0, got nan"),
    (LastValuePredictor, {"window_s": 0}, r"LastValuePredictor: `window_s` must be .* got 0"),
    (MovingAveragePredictor, {"window_s": "30"}, r"MovingAveragePredictor: `window_s` must be .* got '30'"),
]


@pytest.mark.parametrize("kind, params, message", INVALID_PARAMETERS)
def test_invalid_parameters(kind, params, message):
    with pytest.raises(ConfigError, match=message):
        kind(**params)


@pytest.mark.parametrize(
    "name, params, message",
    [
        ("max-widow", {}, r"unknown predictor 'max-widow' \(did you mean 'max-window'\?\); "
                          r"known: quantile, max-window, last-value, moving-average, ipa-lstm"),
        ("lstm", {}, r"unknown predictor 'lstm' \(did you mean 'ipa-lstm'\?\); known: "),
        ("max-window", {"window": 5},
         r"predictor 'max-window' has no parameter 'window' \(did you mean 'window_s'\?\); "
         r"known: window_s, lookback_s, horizon_s, headroom_sigma"),
        ("moving-average", {"window_s": -3}, r"`window_s` must be a whole number of seconds >= 1, got -3"),
    ],
)
def test_make_predictor_errors(name, params, message):
    with pytest.raises(ConfigError, match=message):
        make_predictor(name, **params)


@given(
    history=st.lists(st.floats(min_value=0, max_value=1e4), max_size=300),
    window_s=st.integers(1, 30),
    extra_lookback_s=st.integers(0, 200),
    horizon_s=st.integers(1, 60),
    headroom_sigma=st.floats(min_value=0, max_value=5),
)
def test_max_window_never_below_the_last_window(history, window_s, extra_lookback_s, horizon_s, headroom_sigma):
    predictor = MaxWindowPredictor(
        window_s=window_s, lookback_s=window_s + extra_lookback_s, horizon_s=horizon_s, headroom_sigma=headroom_sigma
    )
    last_window_max = max(history[-window_s:], default=0.0)
    assert predictor.predict(history) >= last_window_max


@given(history=st.lists(st.floats(min_value=0, max_value=1e4), max_size=200), name=st.sampled_from(list(PREDICTORS)))
def test_predictions_are_finite_and_non_negative(history, name):
    prediction = make_predictor(name).predict(history)
    assert math.isfinite(prediction) and prediction >= 0


def test_the_quantile_forecast_sizes_its_margin_to_the_loads_own_variation():
    """Poisson load: the margin is about the spread of a 5 s average's peak over 20 s (no fixed
    percentage on top); a load that doubles within every horizon is forecast at about double."""
    rng = np.random.default_rng(0)
    steady = QuantilePredictor().predict(rng.poisson(100, 400))
    assert 100 < steady < 100 * 1.2
    saw = np.tile(np.concatenate([np.full(30, 50.0), np.full(30, 100.0)]), 7)  # 50 <-> 100 every 30 s
    assert QuantilePredictor().predict(saw[:-30]) >= 95  # at 50 now, and it has always doubled soon


def test_the_quantile_forecast_with_short_history_assumes_poisson_noise():
    assert QuantilePredictor().predict([100.0] * 20) == pytest.approx(100 + 2.0 * 10 / 5 ** 0.5, rel=0.15)


def test_a_longer_horizon_sees_the_returns_a_shorter_one_does_not():
    """50 s at 20 rps, then 10 s at 200, over and over: within 20 s of a quiet second the load
    mostly stays quiet; within 40 s it mostly comes back (what the release horizon asks)."""
    history = ([20.0] * 50 + [200.0] * 10) * 6 + [20.0] * 5
    q = QuantilePredictor()
    near, later = q.scenarios(history), q.scenarios(history, horizon_s=40)
    assert np.median(near) < 30 and np.median(later) > 150
    assert np.array_equal(near, q.scenarios(history, horizon_s=q.horizon_s))
