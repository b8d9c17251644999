"""Score the load predictors on the Twitter trace the way the adapter uses them.

    python -m adapter.bench.predictors                         # IPA's four workloads + one day
    python -m adapter.bench.predictors --workload bursty --damping 8

Every 10 s a predictor sees the per-second history so far and predicts; the truth is the max
rps of the next 20 s. Per workload and predictor setting:
  under %   share of decisions whose prediction < the true max
  over %    mean of (pred - true) / true over decisions with pred >= true (and true > 0)
  short %   mean of (true - pred) / true over the under-predictions: how deep they are
  MAE rps   mean |pred - true| over all decisions
IPA's four workloads are damped (`int(v / damping)`); `twitter-day` is 23.5 h of the undamped
trace (seconds 1,296,000-1,380,600, in IPA's test week) between two of its daily ~29 min
recording gaps, and `twitter-day-damped` the same stretch damped like IPA's workloads: the range
IPA's LSTM ("ipa-lstm", trained on the damped trace before second 1,234,932) was trained for.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm import tqdm

from adapter.core.predictor import DEFAULT_PREDICTOR, Predictor, make_predictor
from adapter.errors import ConfigError
from adapter.workloads import IPA_DAMPING, NAMED_WORKLOADS, named_workload, twitter_trace

INTERVAL_S = 10  # IPA's adaptation interval
HORIZON_S = 20  # what IPA's LSTM predicts: the max of the next 20 s
LONG_STRETCH = ("twitter-day", 1_296_000, 1_380_600)  # 23.5 h from the end of one daily gap to the next
DAMPED_STRETCH = "twitter-day-damped"  # the same, damped as IPA's workloads

# (registry name, parameters, note): the registry's defaults plus the tuning alternatives.
SETTINGS: list[tuple[str, dict[str, Any], str]] = [
    ("quantile", {}, "default; p95 of the peak 5 s average, scored here against the peak second"),
    ("max-window", {}, "the previous default"),
    ("max-window", {"headroom_sigma": 0.0}, "trend only"),
    ("max-window", {"headroom_sigma": 1.0}, ""),
    ("max-window", {"headroom_sigma": 2.0}, ""),
    ("last-value", {}, "IPA reactive"),
    ("last-value", {"window_s": 120}, "IPA max fallback"),
    ("moving-average", {}, ""),
    ("ipa-lstm", {}, "IPA's LSTM"),
]


@dataclass(frozen=True, slots=True, kw_only=True)
class Score:
    decisions: int
    under_pct: float
    over_pct: float
    shortfall_pct: float
    mae_rps: float


def decision_times(seconds: int, interval_s: int = INTERVAL_S, horizon_s: int = HORIZON_S) -> range:
    """Seconds at which the adapter decides: every interval, while a full horizon follows."""
    return range(interval_s, seconds - horizon_s + 1, interval_s)


def evaluate(predictor: Predictor, series: np.ndarray, times: range, horizon_s: int = HORIZON_S) -> Score:
    predicted = np.array([predictor.predict(series[:t]) for t in times])
    true_max = np.array([series[t : t + horizon_s].max() for t in times])
    return score(predicted, true_max)


def score(predicted: np.ndarray, true_max: np.ndarray) -> Score:
    under = predicted < true_max
    covered = ~under & (true_max > 0)  # relative over-provisioning is undefined at 0 rps
    return Score(
        decisions=len(predicted),
        under_pct=100.0 * under.mean(),
        over_pct=_mean_pct((predicted - true_max)[covered] / true_max[covered]),
        shortfall_pct=_mean_pct((true_max - predicted)[under] / true_max[under]),
        mae_rps=float(np.abs(predicted - true_max).mean()),
    )


def _mean_pct(ratios: np.ndarray) -> float:
    return 100.0 * float(ratios.mean()) if ratios.size else float("nan")


def _pct(value: float) -> str:
    return "-" if np.isnan(value) else f"{value:.1f}"  # no decision of that kind


def load_workloads(selected: str, damping: float) -> dict[str, np.ndarray]:
    names = list(NAMED_WORKLOADS) if selected == "all" else [selected]
    workloads = {name: named_workload(name, damping) for name in names if name in NAMED_WORKLOADS}
    long_name, start, end = LONG_STRETCH
    if selected in ("all", long_name):
        workloads[long_name] = np.asarray(twitter_trace()[start:end], dtype=np.float64)
    if selected in ("all", DAMPED_STRETCH):
        workloads[DAMPED_STRETCH] = np.floor(np.asarray(twitter_trace()[start:end], dtype=np.float64) / damping)
    return workloads


def setting_label(name: str, params: dict[str, Any], note: str) -> str:
    label = " ".join([name, *(f"{key}={value}" for key, value in params.items())])
    return f"{label} ({note})" if note else label


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m adapter.bench.predictors", description=__doc__.splitlines()[0])
    parser.add_argument("--workload", default="all", choices=["all", *NAMED_WORKLOADS, LONG_STRETCH[0], DAMPED_STRETCH])
    parser.add_argument("--damping", type=float, default=IPA_DAMPING, help=f"divisor for IPA's four workloads and {DAMPED_STRETCH}")
    args = parser.parse_args(argv)

    try:
        workloads = load_workloads(args.workload, args.damping)
    except ConfigError as error:
        parser.error(str(error))
    times = {name: decision_times(len(series)) for name, series in workloads.items()}
    rows = []
    with tqdm(total=len(SETTINGS) * sum(map(len, times.values())), unit="decision") as progress:
        for workload, series in workloads.items():
            for name, params, note in SETTINGS:
                rows.append((workload, setting_label(name, params, note),
                             evaluate(make_predictor(name, **params), series, times[workload])))
                progress.update(len(times[workload]))

    print(f"decide every {INTERVAL_S} s, truth = max rps of the next {HORIZON_S} s; "
          f"damping {args.damping:g} for IPA's workloads; default predictor: {DEFAULT_PREDICTOR}")
    print(f"{'workload':18} {'predictor':42} {'n':>5} {'under %':>8} {'over %':>7} {'short %':>8} {'MAE rps':>8}")
    for workload, label, result in rows:
        print(f"{workload:18} {label:42} {result.decisions:>5} {result.under_pct:>8.1f} {_pct(result.over_pct):>7} "
              f"{_pct(result.shortfall_pct):>8} {result.mae_rps:>8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
