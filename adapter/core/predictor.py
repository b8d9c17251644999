"""Load predictors: per-second arrival history in, the rate to provision for the next horizon out.

A predictor is a frozen, validated value with one method, `predict(history_rps)`. History is
the observed arrival rate of each second, newest last, of any length (empty gives 0); the
result is the requests per second the planner should provision for. Pure: no clock, no I/O,
no state between calls.

IPA (reconfigurable-ml-pipeline/ipa, `optimizer/adapter.py`) takes the max of each 10 s window
over the last 120 s and feeds those 12 maxima to an LSTM trained to predict the max of the
next 20 s; with under 120 s of history it falls back to the max of the windows it has, and it
can add a percentage margin (0 in its final configs). `MaxWindowPredictor` keeps the inputs and
the target but replaces the LSTM with a trend line plus noise headroom; `LstmPredictor`
("ipa-lstm", adapter/core/predictor_lstm.py) is IPA's LSTM itself, retrained and run through
onnxruntime; docs/predictor.md compares them on the Twitter trace.
"""

from __future__ import annotations

import difflib
import math
from statistics import NormalDist
from dataclasses import dataclass, fields
from typing import Iterable, Protocol, Sequence, runtime_checkable

import numpy as np

from adapter.core.predictor_lstm import LstmPredictor
from adapter.errors import ConfigError


@runtime_checkable
class Predictor(Protocol):
    def predict(self, history_rps: Sequence[float]) -> float:
        """The rps to provision for the next horizon, from per-second rates (newest last)."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class MaxWindowPredictor:
    """Trend of recent window maxima plus headroom for per-second noise.

    1. Split the last `lookback_s` seconds into `window_s`-second windows, aligned to the newest
       second (the oldest window may be shorter), and take each window's max.
    2. Fit a least-squares line through those maxima and read it at the last window of the
       horizon (`horizon_s / window_s` windows ahead); never go below the last window's max.
    3. Add `headroom_sigma` times the per-second noise over the lookback. The noise is the
       spread of second-to-second changes, std(diff)/sqrt(2), so a steady ramp is not noise.
    """

    window_s: int = 10
    lookback_s: int = 120
    horizon_s: int = 20
    headroom_sigma: float = 1.5

    def __post_init__(self) -> None:
        for name in ("window_s", "lookback_s", "horizon_s"):
            _check_whole_seconds(self, name)
        if self.lookback_s < self.window_s:
            raise ConfigError(
                f"{type(self).__name__}: `lookback_s` ({self.lookback_s}) must be at least "
                f"`window_s` ({self.window_s})"
            )
        _check_non_negative(self, "headroom_sigma")

    def predict(self, history_rps: Sequence[float]) -> float:
        recent = _last_seconds(history_rps, self.lookback_s)
        if recent.size == 0:
            return 0.0
        maxima = _window_maxima(recent, self.window_s)
        trend = _trend_at(maxima, windows_ahead=self.horizon_s / self.window_s)
        return trend + self.headroom_sigma * _noise_sigma(recent)


REGIME_BAND = 2.0  # levels within a factor of 2 count as the same regime


@dataclass(frozen=True, slots=True, kw_only=True)
class QuantilePredictor:
    """A quantile of the load's peak over the next `horizon_s`, learnt from the history itself.

    The load is the rate averaged over `smooth_s` seconds: a queue rides out shorter bursts
    (the planner's queueing model already covers Poisson arrivals within that), so it is the
    peak of that average the plan must serve. The level is the mean of the last `level_s`
    seconds. Over the last `lookback_s` seconds, at every second t whose next `horizon_s` seconds
    are known, the ratio (peak of the `smooth_s` average in those seconds) / (level at t) is what
    the load did next relative to where it stood; the forecast is the current level times the
    `quantile` of those ratios, taken only at seconds whose level was within `REGIME_BAND` of
    today's: how the load moved from levels like this one (the ratio from a quiet 67 rps into a
    240 rps burst says nothing about where 240 rps goes next). The one margin in the forecast is
    thus sized to how much this load really moves within a horizon (noise at low rates, bursts,
    ramps), and the planner adds no headroom of its own on top; a jump nothing foretold is the
    loop's overload trigger's to catch. With fewer than `min_samples` ratios, the ratio is the
    same quantile of the peak of a Poisson process at the level (normal approximation), and the
    forecast never goes below the last `level_s` seconds' `smooth_s` average.
    """

    level_s: int = 5
    smooth_s: int = 5
    horizon_s: int = 20
    lookback_s: int = 300
    quantile: float = 0.95
    min_samples: int = 60

    def __post_init__(self) -> None:
        for name in ("level_s", "smooth_s", "horizon_s", "lookback_s", "min_samples"):
            _check_whole_seconds(self, name)
        if isinstance(self.quantile, bool) or not isinstance(self.quantile, (int, float)) \
                or not 0.5 <= self.quantile < 1.0:
            raise ConfigError(f"{type(self).__name__}: `quantile` must be a number in [0.5, 1), got {self.quantile!r}")

    def predict(self, history_rps: Sequence[float]) -> float:
        samples = self.scenarios(history_rps)
        return float(np.quantile(samples, self.quantile)) if samples.size else 0.0

    def scenarios(self, history_rps: Sequence[float], horizon_s: int | None = None) -> np.ndarray:
        """Equally likely values of the coming peak (rps) over `horizon_s` (default: the
        predictor's): the level times each past ratio, or, with short history, Poisson quantiles
        at the level (never below the recent peak)."""
        horizon_s = horizon_s or self.horizon_s
        recent = _last_seconds(history_rps, self.lookback_s + horizon_s + self.level_s)
        if recent.size == 0:
            return np.zeros(0)
        level = float(recent[-self.level_s:].mean())
        smooth = _moving_mean(recent, self.smooth_s)
        ratios = _peak_ratios(recent, smooth, self.level_s, self.smooth_s, horizon_s, level, REGIME_BAND)
        if ratios.size >= self.min_samples:
            return level * ratios
        # Short history: the peak over the horizon of a Poisson process's `smooth_s` average,
        # about horizon/smooth independent windows, at 99 evenly spread probabilities.
        windows = max(1.0, horizon_s / self.smooth_s)
        probabilities = (np.arange(99) + 0.5) / 99
        z = np.array([NormalDist().inv_cdf(p ** (1.0 / windows)) for p in probabilities])
        floor = float(smooth[-self.level_s:].max()) if smooth.size else level
        return np.maximum(level + z * math.sqrt(level / self.smooth_s), floor)


@dataclass(frozen=True, slots=True, kw_only=True)
class LastValuePredictor:
    """The max of the last `window_s` seconds: 1 is the last second, 10 is IPA's "reactive"
    predictor, 120 its "max" fallback."""

    window_s: int = 10

    def __post_init__(self) -> None:
        _check_whole_seconds(self, "window_s")

    def predict(self, history_rps: Sequence[float]) -> float:
        recent = _last_seconds(history_rps, self.window_s)
        return float(recent.max()) if recent.size else 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class MovingAveragePredictor:
    """The mean of the last `window_s` seconds (a baseline: it provisions for the average, not the peak)."""

    window_s: int = 30

    def __post_init__(self) -> None:
        _check_whole_seconds(self, "window_s")

    def predict(self, history_rps: Sequence[float]) -> float:
        recent = _last_seconds(history_rps, self.window_s)
        return float(recent.mean()) if recent.size else 0.0


PREDICTORS: dict[str, type[Predictor]] = {
    "quantile": QuantilePredictor,
    "max-window": MaxWindowPredictor,
    "last-value": LastValuePredictor,
    "moving-average": MovingAveragePredictor,
    "ipa-lstm": LstmPredictor,
}
DEFAULT_PREDICTOR = "quantile"


def make_predictor(name: str = DEFAULT_PREDICTOR, **params: object) -> Predictor:
    """Build a registered predictor; unknown names and parameters are a ConfigError."""
    if name not in PREDICTORS:
        raise ConfigError(
            f"unknown predictor {name!r}{_did_you_mean(name, PREDICTORS)}; known: {', '.join(PREDICTORS)}"
        )
    kind = PREDICTORS[name]
    known = [field.name for field in fields(kind)]
    for param in params:
        if param not in known:
            raise ConfigError(
                f"predictor {name!r} has no parameter {param!r}{_did_you_mean(param, known)}; "
                f"known: {', '.join(known)}"
            )
    return kind(**params)


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _check_whole_seconds(owner: object, name: str) -> None:
    value = getattr(owner, name)
    # bool is an int subclass; True seconds is a mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{type(owner).__name__}: `{name}` must be a whole number of seconds >= 1, got {value!r}")


def _check_non_negative(owner: object, name: str) -> None:
    value = getattr(owner, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"{type(owner).__name__}: `{name}` must be a finite number >= 0, got {value!r}")


def _last_seconds(history_rps: Sequence[float], seconds: int) -> np.ndarray:
    return np.asarray(history_rps, dtype=np.float64)[-seconds:]


def _window_maxima(recent: np.ndarray, window_s: int) -> np.ndarray:
    """Max of each `window_s` window, oldest first, windows aligned to the newest second."""
    windows = -(-recent.size // window_s)
    padded = np.concatenate((np.full(windows * window_s - recent.size, -np.inf), recent))
    return padded.reshape(windows, window_s).max(axis=1)


def _trend_at(maxima: np.ndarray, windows_ahead: float) -> float:
    """The least-squares line through `maxima` read `windows_ahead` past the last, floored at the last."""
    last = float(maxima[-1])
    if maxima.size < 2:
        return last
    positions = np.arange(maxima.size, dtype=np.float64)
    centred = positions - positions.mean()
    slope = float(centred @ (maxima - maxima.mean()) / (centred @ centred))
    at_horizon = maxima.mean() + slope * (positions[-1] + windows_ahead - positions.mean())
    return max(last, float(at_horizon))


def _noise_sigma(recent: np.ndarray) -> float:
    # Successive differences cancel any slow level or trend; for independent noise of spread s
    # their std is s*sqrt(2).
    if recent.size < 2:
        return 0.0
    return float(np.diff(recent).std() / math.sqrt(2))



def _moving_mean(recent: np.ndarray, window_s: int) -> np.ndarray:
    """smooth[i] = mean(recent[i : i + window_s]) (the average ending at second i + window_s - 1)."""
    if recent.size < window_s:
        return np.zeros(0)
    sums = np.concatenate(([0.0], np.cumsum(recent)))
    return (sums[window_s:] - sums[:-window_s]) / window_s


def _peak_ratios(recent: np.ndarray, smooth: np.ndarray, level_s: int, smooth_s: int, horizon_s: int,
                 like: float, band: float) -> np.ndarray:
    """For every second t with `level_s` seconds up to it and `horizon_s` after it: the peak of
    the `smooth_s` averages lying wholly in (t, t + horizon_s], over the mean of the `level_s`
    seconds ending at t. Only seconds whose level is within a factor `band` of `like` count
    (all of them when `like` is 0); seconds at level 0 are skipped."""
    n = recent.size
    span = horizon_s - smooth_s + 1  # averages wholly inside the horizon
    if span < 1 or n < level_s + horizon_s:
        return np.zeros(0)
    sums = np.concatenate(([0.0], np.cumsum(recent)))
    ends = np.arange(level_s, n - horizon_s + 1)  # level window: recent[end - level_s : end]
    level = (sums[ends] - sums[ends - level_s]) / level_s
    peaks = np.lib.stride_tricks.sliding_window_view(smooth, span).max(axis=1)  # peaks[i]: smooth[i : i + span]
    peak = peaks[ends]  # averages starting at `end` .. end + span - 1, i.e. seconds end .. end + horizon - 1
    keep = level > 0
    if like > 0:
        keep &= (level >= like / band) & (level <= like * band)
    return peak[keep] / level[keep]
