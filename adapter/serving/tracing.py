"""Per-stage server-side latency of every ensemble request, from Triton's own request trace.

Why: live experiments compare each stage's (composing model's) latency distribution with the
simulator's, request by request. Triton's metrics only give cumulative sums per model; its trace
(`--trace-config`, TIMESTAMPS level) gives every request's timestamps, and each composing model's
trace names the ensemble request it served (`parent_id`).

What Triton 2.51 writes (checked on the nvidia-pytriton build): a JSON array whose elements are
either a header `{"id":N,"model_name":"m","model_version":V[,"parent_id":P]}` or one timestamp
`{"id":N,"timestamps":[{"name":"REQUEST_START","ns":T}]}`; the composing models' traces come
before their ensemble's. Times are CLOCK_MONOTONIC nanoseconds (Python's `time.monotonic()` and
`time.perf_counter()` on Linux). An ensemble step whose outputs the request does not ask for is
not run, so has no trace. With
`log-frequency=K > 0` the traces go to `<file>.0`, `<file>.1`, ... every K ensemble requests (and
the rest at shutdown); with 0, to `<file>` only at a clean shutdown. A killed Triton leaves the
last file truncated; a file being written ends mid-element: both are read up to their last
complete element.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from adapter.errors import ConfigError

_STAMPS = ("REQUEST_START", "QUEUE_START", "COMPUTE_START", "COMPUTE_OUTPUT_START", "COMPUTE_END",
           "INFER_RESPONSE_COMPLETE", "REQUEST_END")
_STAMP = re.compile(rb'\{"id":(\d+),"timestamps":\[\{"name":"('
                    + b"|".join(name.encode() for name in _STAMPS) + rb')","ns":(\d+)\}\]\}')
_HEADER = re.compile(rb'\{"id":(\d+),"model_name":"((?:[^"\\]|\\.)*)","model_version":-?\d+'
                     rb'(?:,"parent_id":(\d+))?\}')
_ELEMENT_START = b'{"id":'


def trace_args(path: Path, log_frequency: int = 1000) -> list[str]:
    """tritonserver arguments tracing every request's timestamps to `path` (LocalTriton's
    `extra_args`). With `log_frequency` K > 0, Triton writes `path.0`, `path.1`, ... every K
    requests (a killed server loses fewer than K); with 0, only `path` at a clean shutdown.
    Creates path's folder: Triton writes nothing, silently, into a folder that does not exist.
    Refuses a path that already holds a trace: trace ids restart at 1 with every server."""
    path = Path(path)
    if trace_files(path):
        raise ConfigError(f"{path} already holds a Triton trace; give each server run its own path")
    path.parent.mkdir(parents=True, exist_ok=True)
    return [f"--trace-config=triton,file={path}", "--trace-config=rate=1",
            "--trace-config=level=TIMESTAMPS",
            f"--trace-config=triton,log-frequency={log_frequency}"]


@dataclass(frozen=True)
class StageTimes:
    """One model's requests served for the ensemble, sorted by start (NaN where a timestamp is
    absent: an ensemble has no COMPUTE_* of its own).

    `total_ms` ends when Triton releases the request, which can be well after its response went
    on: under CPU contention a stage's REQUEST_END (and COMPUTE_END) was seen up to 7 ms after the
    next stage had started, and the ensemble's after its HTTP response was sent. `response_ms`
    ends when the response was ready: the ensemble's INFER_RESPONSE_COMPLETE, a composing model's
    COMPUTE_OUTPUT_START (always before the next stage started, by 0.01-0.03 ms). Stages'
    `response_ms` add up to less than the ensemble's; their `total_ms` may add up to more."""

    ensemble_id: np.ndarray  # int64 trace id of the ensemble request served (the ensemble's own)
    start_s: np.ndarray      # REQUEST_START, seconds on the trace clock (CLOCK_MONOTONIC)
    total_ms: np.ndarray     # REQUEST_START -> REQUEST_END
    response_ms: np.ndarray  # REQUEST_START -> COMPUTE_OUTPUT_START, else INFER_RESPONSE_COMPLETE
    queue_ms: np.ndarray     # QUEUE_START -> COMPUTE_START
    compute_ms: np.ndarray   # COMPUTE_START -> COMPUTE_END

    def __len__(self) -> int:
        return len(self.start_s)


def trace_files(path: Path) -> list[Path]:
    """`path` and its numbered parts `path.0`, `path.1`, ... that exist, in order."""
    path = Path(path)
    parts = [p for p in path.parent.glob(path.name + ".*") if p.suffix[1:].isdigit()]
    return ([path] if path.is_file() else []) + sorted(parts, key=lambda p: int(p.suffix[1:]))


def _complete_end(data: bytes) -> int:
    """Where the array's last complete element ends (the tail may be cut anywhere)."""
    last = data.rfind(_ELEMENT_START)
    if last < 0:
        return 0
    tail = data[last:].decode(errors="replace")
    try:
        _, length = json.JSONDecoder().raw_decode(tail)
    except ValueError:
        return last
    return last + len(tail[:length].encode())


def _read(path: Path) -> tuple[dict[str, np.ndarray], np.ndarray, list[bytes], np.ndarray]:
    """One trace file: per timestamp name an (n, 2) array of (id, ns); header ids,
    model names and parent ids (-1: none)."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read Triton trace {path}: {e.strerror or e}") from e
    if data.strip() and not data.lstrip().startswith(b"["):
        raise ConfigError(f"{path} is not a Triton trace (not a JSON array)")
    end = _complete_end(data)
    if end == 0 and data.strip() != b"[]" and not (b"[" + _ELEMENT_START).startswith(data.strip()):
        raise ConfigError(f"{path} is not a Triton trace (no trace elements)")
    found = np.array(_STAMP.findall(data, 0, end), dtype=bytes).reshape(-1, 3)
    ids, ns = found[:, 0].astype(np.int64), found[:, 2].astype(np.int64)
    stamps = {}
    for name in _STAMPS:
        hit = found[:, 1] == name.encode()
        if hit.sum() != data.count(b'"name":"' + name.encode() + b'"', 0, end):
            raise ConfigError(f"{path}: {name} timestamps not in the layout of Triton 2.51's trace")
        stamps[name] = np.column_stack((ids[hit], ns[hit]))
    headers = _HEADER.findall(data, 0, end)
    if len(headers) != data.count(b'"model_name":', 0, end):
        raise ConfigError(f"{path}: trace headers not in the layout of Triton 2.51's trace")
    ids = np.array([int(h[0]) for h in headers], dtype=np.int64)
    parents = np.array([int(h[2]) if h[2] else -1 for h in headers], dtype=np.int64)
    return stamps, ids, [h[1] for h in headers], parents


def _lookup(table: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """ns of each id in the (id, ns) table sorted by id, NaN where absent."""
    out = np.full(len(ids), np.nan)
    if len(table) and len(ids):
        pos = np.minimum(np.searchsorted(table[:, 0], ids), len(table) - 1)
        hit = table[pos, 0] == ids
        out[hit] = table[pos[hit], 1]
    return out


def stage_latencies(path: Path, ensemble: str | None) -> dict[str, StageTimes]:
    """Per model (the ensemble and each model that served requests for it; with `ensemble`
    None, the requests sent to each model directly): every completed request's start and
    latencies. Reads `path` and its parts `path.0`, `path.1`, ...;
    requests without REQUEST_START and REQUEST_END (in flight when the file ended) are left out.
    Raises ConfigError when there is no trace or a file is not one."""
    files = trace_files(path)
    if not files:
        raise ConfigError(f"no Triton trace at {path} (nor {path}.0, ...): Triton writes it every "
                          f"log-frequency requests, or only at a clean shutdown when that is 0")
    parts = [_read(f) for f in files]
    stamps = {}
    for name in _STAMPS:
        table = np.concatenate([p[0][name] for p in parts])
        stamps[name] = table[np.argsort(table[:, 0], kind="stable")]
    ids = np.concatenate([p[1] for p in parts])
    models = np.array([m.decode() for p in parts for m in p[2]], dtype=object)
    parents = np.concatenate([p[3] for p in parts])
    if ensemble is None:
        mine = parents < 0
    else:
        ensemble_ids = ids[(models == ensemble) & (parents < 0)]
        mine = np.isin(parents, ensemble_ids) | np.isin(ids, ensemble_ids)
    # The ensemble request each one served (the ensemble's entries: their own id).
    served = np.where(parents < 0, ids, parents)[mine]
    ids, models = ids[mine], models[mine]
    at = {name: _lookup(stamps[name], ids) for name in _STAMPS}
    # A model's output is ready at COMPUTE_OUTPUT_START; an ensemble has no compute of its own.
    responded = np.where(np.isnan(at["COMPUTE_OUTPUT_START"]), at["INFER_RESPONSE_COMPLETE"],
                         at["COMPUTE_OUTPUT_START"])
    done = ~np.isnan(at["REQUEST_START"]) & ~np.isnan(at["REQUEST_END"])
    result: dict[str, StageTimes] = {}
    for model in dict.fromkeys(models[done]):
        sel = np.flatnonzero(done & (models == model))
        sel = sel[np.argsort(at["REQUEST_START"][sel], kind="stable")]
        result[model] = StageTimes(
            ensemble_id=served[sel],
            start_s=at["REQUEST_START"][sel] * 1e-9,
            total_ms=(at["REQUEST_END"] - at["REQUEST_START"])[sel] * 1e-6,
            response_ms=(responded - at["REQUEST_START"])[sel] * 1e-6,
            queue_ms=(at["COMPUTE_START"] - at["QUEUE_START"])[sel] * 1e-6,
            compute_ms=(at["COMPUTE_END"] - at["COMPUTE_START"])[sel] * 1e-6)
    return result


def summarise(stages: dict[str, StageTimes], field: str = "total_ms") -> dict[str, dict]:
    """Per model: request count and p50/p99 in ms of one StageTimes field."""
    def pct(x, q):
        return float(np.percentile(x, q)) if len(x) else float("nan")
    return {model: {"count": len(s), "p50_ms": pct(getattr(s, field), 50),
                    "p99_ms": pct(getattr(s, field), 99)} for model, s in stages.items()}
