"""Request-rate workloads: the Twitter trace IPA replays, its four named slices, user files.

A workload is a float64 array of requests per second, one value per second, oldest first.
Nothing here touches the clock or writes files; the Twitter trace is read once per process
and kept in memory, read-only.
"""

from __future__ import annotations

import bz2
import difflib
import functools
import math
import os
from pathlib import Path

import numpy as np

from adapter import paths
from adapter.errors import ConfigError

TRACES_DIR_ENV = "TPA_TRACES_DIR"
TWITTER_TRACE_FILE = "twitter_rps.txt.bz2"

# IPA's named workloads: slices [start, end) of the per-second Twitter trace, joined in order
# (see shared/traces/README.md). The raw trace also has a ~29 min gap of zeros every day
# (e.g. seconds 1,294,261-1,296,000), which none of these slices touch.
NAMED_WORKLOADS: dict[str, tuple[tuple[int, int], ...]] = {
    "bursty": ((1301160, 1302360),),
    "steady-low": ((1299600, 1300800),),
    "steady-high": ((1768800, 1769400),),
    "fluctuating": ((1301400, 1302000), (1308600, 1309200)),
}
IPA_DAMPING = 8  # IPA's final configs divide every value by 8


def traces_dir() -> Path:
    """The folder holding the shared traces: $TPA_TRACES_DIR, else `shared/traces` beside the checkout."""
    configured = os.environ.get(TRACES_DIR_ENV)
    folder = Path(configured) if configured else paths.ROOT.parent / "shared" / "traces"
    if not folder.is_dir():
        source = f"${TRACES_DIR_ENV}" if configured else "the default location"
        raise ConfigError(
            f"traces folder {folder} (from {source}) does not exist; "
            f"put {TWITTER_TRACE_FILE} there or set {TRACES_DIR_ENV} to the folder holding it"
        )
    return folder


def twitter_trace() -> np.ndarray:
    """The whole undamped Twitter trace (1,899,061 seconds), read-only."""
    path = traces_dir() / TWITTER_TRACE_FILE
    if not path.is_file():
        raise ConfigError(f"{path}: Twitter trace missing; expected one integer per line (bz2)")
    return _load_read_only(path)


@functools.lru_cache(maxsize=1)
def _load_read_only(path: Path) -> np.ndarray:
    # Cached because every named workload slices the same 1.9 M seconds; read-only so that
    # one caller cannot change what the next one sees.
    series = load_rps_file(path)
    series.setflags(write=False)
    return series


def named_workload(name: str, damping: float = IPA_DAMPING) -> np.ndarray:
    """One of IPA's workloads: each second's count becomes `int(v / damping)`, then sliced."""
    if name not in NAMED_WORKLOADS:
        raise ConfigError(_unknown_workload_message(name))
    if not (isinstance(damping, (int, float)) and math.isfinite(damping) and damping > 0):
        raise ConfigError(f"`damping` must be a positive number, got {damping!r}")
    trace = twitter_trace()
    parts = [trace[start:end] for start, end in NAMED_WORKLOADS[name]]
    # floor == int() truncation here because the counts are non-negative.
    return np.floor(np.concatenate(parts) / damping)


def _unknown_workload_message(name: str) -> str:
    known = ", ".join(NAMED_WORKLOADS)
    close = difflib.get_close_matches(name, list(NAMED_WORKLOADS), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown workload {name!r}{hint}; known: {known}"


def load_rps_file(path: str | Path) -> np.ndarray:
    """Read one non-negative number per line (requests in that second); `.bz2` is decompressed.

    Trailing blank lines are ignored; any other line that is not a non-negative finite number
    is an error naming the file and the line.
    """
    path = Path(path)
    lines = _read_text(path).rstrip().splitlines()
    if not lines:
        raise ConfigError(f"{path}: no values; expected one number of requests per second per line")
    try:
        series = np.array(lines, dtype=np.float64)
    except ValueError:
        series = None
    if series is None or not (np.isfinite(series) & (series >= 0)).all():
        raise ConfigError(_first_bad_line(path, lines))
    return series


def _read_text(path: Path) -> str:
    opener = bz2.open if path.suffix == ".bz2" else open
    try:
        with opener(path, "rt", encoding="utf-8") as file:
            return file.read()
    except (OSError, UnicodeDecodeError, EOFError) as error:
        raise ConfigError(f"{path}: cannot read rps file: {error}") from None


def _first_bad_line(path: Path, lines: list[str]) -> str:
    # Only reached on error, so the slow per-line scan costs nothing in the normal case.
    number, line = next((n, line) for n, line in enumerate(lines, start=1) if not _is_rate(line))
    return f"{path}:{number}: expected one non-negative number (requests per second), got {line.strip()!r}"


def _is_rate(text: str) -> bool:
    try:
        value = float(text)
    except ValueError:
        return False
    return math.isfinite(value) and value >= 0


def time_scale(series: np.ndarray, factor: float) -> np.ndarray:
    """Replay `series` `factor` times faster: factor 2 gives half the seconds, same rates.

    Resampling rule: read the series as a step function (value i holds over [i, i+1)). Output
    second j is the mean of that function over input time [j*factor, (j+1)*factor), the last
    one clipped to the input's end; there are ceil(len/factor) of them. So each output second
    carries the input's mean rate over the stretch it covers, factor 1 is the identity,
    factor < 1 stretches time, and bursts shorter than `factor` seconds are averaged, not kept
    at their peak.
    """
    if not (isinstance(factor, (int, float)) and math.isfinite(factor) and factor > 0):
        raise ConfigError(f"time-scale `factor` must be a positive number, got {factor!r}")
    values = np.asarray(series, dtype=np.float64)
    # The tolerance stops float error (1200 / 0.3 = 4000.0000000000005) adding a sliver second.
    output_seconds = math.ceil(len(values) / factor - 1e-9)
    starts = np.arange(output_seconds) * factor
    ends = np.minimum(starts + factor, len(values))
    knots = np.arange(len(values) + 1)
    cumulative_requests = np.concatenate(([0.0], np.cumsum(values)))
    requests = np.interp(ends, knots, cumulative_requests) - np.interp(starts, knots, cumulative_requests)
    return requests / (ends - starts)


def arrival_times(rates: np.ndarray, poisson: bool = False, seed: int = 0) -> np.ndarray:
    """Send times (s from the start) of the requests a per-second rate series asks for.

    Trace-exact (the default, what loadtest/trace_replay.py sends): each second's requests are
    spread evenly over the second, and the fractional parts carry over so that every stretch of
    the trace gets its exact share. Poisson: a Poisson process whose rate is the series.
    """
    rates = np.asarray(rates, dtype=np.float64)
    if poisson:
        rng = np.random.default_rng(seed)
        counts = rng.poisson(rates)
        second = np.repeat(np.arange(len(rates)), counts)
        return np.sort(second + rng.random(len(second)))
    counts = np.diff(np.floor(np.concatenate(([0.0], np.cumsum(rates))) + 1e-9)).astype(np.int64)
    second = np.repeat(np.arange(len(rates)), counts)
    first_of_second = np.repeat(np.cumsum(counts) - counts, counts)
    k = np.arange(len(second)) - first_of_second
    return second + k / np.repeat(np.maximum(counts, 1), counts)
