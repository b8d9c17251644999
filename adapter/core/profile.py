"""Variant profiles: measurements, the fitted latency model, and JSON load/save.

The profiler (an edge, it does the measuring) produces `Measurement`s; `fit()` turns one
model's measurements into a `VariantProfile`; `Profiles` bundles them with provenance.

Latency model: the p99 service latency of one batch, l(b), as a polynomial in the batch size.
IPA uses degree 2; we fit degree 1 and degree 2 (weighted by 1/latency, i.e. relative error)
and keep the one with the lower leave-one-out relative error, rejecting a quadratic that is not
positive and non-decreasing over the measured range. The chosen fit's in-sample RMSE and
maximum relative error are reported. The model is only trusted inside the measured batch range.

Instance scaling: n instances of a CPU model rarely give n times the throughput. If the
measurements hold several instance counts for a batch size, the efficiency e of each extra
instance is fitted from throughput ratios, thr(n) = thr(1) * (1 + (n - 1) * e), e in [0.05, 1];
otherwise scaling is assumed linear (e = 1).

Reconfiguration delay: each measured point may carry `load_s`, the wall time of the repository
load (or reload in place) that set it up; `fit()` keeps their median and maximum over all the
model's points as `VariantProfile.load_s` / `load_s_max` (None when nothing was timed).

Saturation curves (optional, `tpa profile --saturation`): a variant's latency under open-loop
Poisson load at a ladder of rates up to past its capacity, per (batch size, instances); kept in
`VariantProfile.saturation` as `SaturationPoint`s. They calibrate the stage model live
(`adapter.core.saturation.calibrate`): the fitted factor on every service time is stored as the
model's `calibration` (`Calibration`: its service scale and instance efficiency), which the
planner and the simulator both read, through `service_stats` and `instance_efficiency`.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from adapter.errors import ConfigError

FORMAT = "tpa-profiles/1"
_MEASUREMENT_FIELDS = ("batch_size", "instances", "p50_ms", "p99_ms", "throughput_rps", "requests")
_OPTIONAL_FIELDS = ("load_s", "server_p50_ms", "server_p99_ms")  # written only when known; older files lack them
_SATURATION_FIELDS = ("batch_size", "instances", "offered_rps", "sent_rps", "achieved_rps", "p50_ms", "p99_ms",
                      "requests", "failures")
_SATURATION_OPTIONAL = ("server_p50_ms", "server_p99_ms", "mean_batch", "compute_ms", "host_load_1m",
                        "server_cpu", "client_cpu", "other_cpu")


@dataclass(frozen=True, slots=True, kw_only=True)
class Measurement:
    """One measured operating point of one model (at a fixed batch size and instance count)."""

    model: str
    batch_size: int
    instances: int
    p50_ms: float  # latency of one batch request, as the client sees it
    p99_ms: float
    throughput_rps: float  # requests (not batches) per second at saturation
    requests: int  # how many requests the percentiles come from (0: synthetic)
    load_s: float | None = None  # wall time of the repository load that set up this point
    # The same requests as Triton saw them (its request trace: arrival to output ready), without
    # the client's and the network's share; what a pipeline stage takes inside Triton.
    server_p50_ms: float | None = None
    server_p99_ms: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SaturationPoint:
    """One rate of an open-loop sweep of one model at a fixed (batch size, instances): Poisson
    arrivals of one text each, many in flight, a few seconds per rate (`adapter.profiler`).
    Rates are over the measured window (each rate's first second left out); percentiles over
    the requests sent in it, client-side from the scheduled send time (no coordinated omission)
    and, where known, server-side (Triton's request trace: arrival to output ready)."""

    batch_size: int  # Triton's max and preferred batch size, no queue delay
    instances: int
    offered_rps: float  # the rate asked of the load generator
    sent_rps: float  # requests it sent per second (a Poisson draw of offered_rps)
    achieved_rps: float  # responses per second: below sent_rps once the queue grows
    p50_ms: float
    p99_ms: float
    requests: int  # requests sent in the window (the percentiles' sample)
    failures: int  # of those, failed or unanswered
    server_p50_ms: float | None = None
    server_p99_ms: float | None = None
    mean_batch: float | None = None  # Triton: inferences / executions in the window
    compute_ms: float | None = None  # Triton: mean compute time of one execution (a batch)
    host_load_1m: float | None = None  # the machine's 1-minute load average after the rate
    # Cores busy during the window: Triton with its backends, the load generator, all else.
    server_cpu: float | None = None
    client_cpu: float | None = None
    other_cpu: float | None = None  # > ~0.1: other work shared the cores; the point is suspect


@dataclass(frozen=True, slots=True, kw_only=True)
class LatencyFit:
    """p99_ms(b) = c0 + c1*b + c2*b^2 over 1 <= b <= max_batch_size."""

    kind: str  # "poly0" | "poly1" | "poly2"
    coefficients: tuple[float, float, float]  # c0, c1, c2
    rmse_ms: float
    max_rel_error: float
    max_batch_size: int

    def p99_ms(self, batch: Any) -> Any:
        c0, c1, c2 = self.coefficients
        b = np.asarray(batch, dtype=float)
        out = c0 + c1 * b + c2 * b * b
        return float(out) if out.ndim == 0 else out


@dataclass(frozen=True, slots=True, kw_only=True)
class VariantProfile:
    model: str
    measurements: tuple[Measurement, ...]
    latency: LatencyFit
    instance_efficiency: float = 1.0  # throughput gain of each extra instance, relative to the first
    efficiency_measured: bool = False
    load_s: float | None = None  # median repository load (reconfiguration) time, seconds
    load_s_max: float | None = None  # slowest such load, seconds
    # The factor on every service time: the calibration from the saturation sweep (stored in the
    # file), times the closed-loop correction's at run time (1: the profile as measured).
    service_scale: float = 1.0
    # Open-loop saturation sweeps, sorted by (instances, batch size, offered rate); () if none.
    saturation: tuple[SaturationPoint, ...] = ()


@dataclass(frozen=True, slots=True)
class Calibration:
    """What the saturation sweep says a variant really does on this host, as the two figures of
    the stage model it fits (`adapter.core.saturation.calibrate`): the factor on every service
    time, and the throughput gain of each extra instance."""

    service_scale: float
    instance_efficiency: float

    def apply(self, vp: VariantProfile) -> VariantProfile:
        return replace(vp, service_scale=self.service_scale, instance_efficiency=self.instance_efficiency)


def as_measured(vp: VariantProfile) -> VariantProfile:
    """The profile as its measurements say, without a calibration or correction."""
    eff, measured = _efficiency(list(vp.measurements)) if vp.measurements else (1.0, False)
    return replace(vp, service_scale=1.0, instance_efficiency=eff, efficiency_measured=measured)


@dataclass(frozen=True, slots=True, kw_only=True)
class Profiles:
    variants: Mapping[str, VariantProfile]
    provenance: Mapping[str, Any] = field(default_factory=dict)  # host_cores, triton_version, date, command
    source: str = "<profiles>"

    def __getitem__(self, model: str) -> VariantProfile:
        return self.variants[model]

    def __contains__(self, model: object) -> bool:
        return model in self.variants


def _polyfit(b: np.ndarray, y: np.ndarray, degree: int) -> np.ndarray:
    """Least squares on relative error; returns (c0, c1, c2)."""
    coef = np.polyfit(b, y, degree, w=1.0 / y)[::-1]
    return np.pad(coef, (0, 3 - len(coef)))


def _acceptable(coef: np.ndarray, max_b: float) -> bool:
    grid = np.linspace(1.0, max_b, 64)
    vals = coef[0] + coef[1] * grid + coef[2] * grid * grid
    return bool(np.all(vals > 0) and np.all(np.diff(vals) >= -1e-12))


def _loo_error(b: np.ndarray, y: np.ndarray, degree: int) -> float:
    errs = []
    for i in range(len(b)):
        keep = np.arange(len(b)) != i
        coef = _polyfit(b[keep], y[keep], degree)
        pred = coef[0] + coef[1] * b[i] + coef[2] * b[i] ** 2
        errs.append(abs(pred - y[i]) / y[i])
    return float(np.max(errs))


def fit_latency(batches: Any, p99_ms: Any) -> LatencyFit:
    """Fit p99 service latency against batch size (several points per batch size are fine)."""
    b = np.asarray(batches, dtype=float)
    y = np.asarray(p99_ms, dtype=float)
    distinct = len(np.unique(b))
    max_b = float(b.max())
    candidates = [0] if distinct == 1 else [1]
    if distinct >= 4:
        candidates.append(2)
    best, best_err = None, math.inf
    for degree in candidates:
        coef = _polyfit(b, y, degree) if degree else np.array([float(np.max(y)), 0.0, 0.0])
        if degree and not _acceptable(coef, max_b):
            continue
        err = _loo_error(b, y, degree) if distinct >= 4 else 0.0
        if best is None or err < best_err - 1e-12:
            best, best_err = (degree, coef), err
    if best is None:  # a linear fit that decreases: fall back to a monotone flat-at-max line
        best = (1, np.array([float(np.max(y)), 0.0, 0.0]))
    degree, coef = best
    pred = coef[0] + coef[1] * b + coef[2] * b * b
    return LatencyFit(
        kind=f"poly{degree}",
        coefficients=tuple(float(c) for c in coef),
        rmse_ms=float(np.sqrt(np.mean((pred - y) ** 2))),
        max_rel_error=float(np.max(np.abs(pred - y) / y)),
        max_batch_size=int(max_b),
    )


def _efficiency(measurements: list[Measurement]) -> tuple[float, bool]:
    ratios = []
    for m in measurements:
        if m.instances <= 1:
            continue
        base = [x.throughput_rps for x in measurements if x.instances == 1 and x.batch_size == m.batch_size]
        if base and base[0] > 0:
            ratios.append((m.throughput_rps / base[0] - 1.0) / (m.instances - 1))
    if not ratios:
        return 1.0, False
    return float(min(1.0, max(0.05, float(np.mean(ratios))))), True


def fit(measurements: list[Measurement] | tuple[Measurement, ...]) -> VariantProfile:
    """Fit one model's measurements (all of the same model) into a VariantProfile."""
    ms = list(measurements)
    if not ms:
        raise ConfigError("fit: expected at least one measurement, got none")
    models = {m.model for m in ms}
    if len(models) != 1:
        raise ConfigError(f"fit: expected measurements of one model, got {sorted(models)}")
    low = min(m.instances for m in ms)
    single = [m for m in ms if m.instances == low]
    latency = fit_latency([m.batch_size for m in single], [m.p99_ms for m in single])
    eff, measured = _efficiency(ms)
    loads = [m.load_s for m in ms if m.load_s is not None]
    load_s, load_s_max = (float(np.median(loads)), float(max(loads))) if loads else (None, None)
    return VariantProfile(
        model=ms[0].model, measurements=tuple(sorted(ms, key=lambda m: (m.instances, m.batch_size))),
        latency=latency, instance_efficiency=eff, efficiency_measured=measured,
        load_s=load_s, load_s_max=load_s_max,
    )


def reconfiguration_s(profiles: Profiles, model: str, instances: int, before: int | None,
                      default_s: float) -> float:
    """Expected seconds until `model` serves with `instances` instances. `before`: the instances
    it already serves with when only its instance count changes (Triton then updates the model
    in place: it starts the added instances and keeps the rest serving), None for a load or a
    full reload. Measured load times at that instance count, else the model's median, else
    `default_s`."""
    if before is not None and instances <= before:
        return 0.0  # instances removed: nothing to start
    starting = instances if before is None else instances - before
    vp = profiles.variants.get(model)
    if vp is None or vp.load_s is None:
        return default_s
    same = [m.load_s for m in vp.measurements if m.instances == starting and m.load_s is not None]
    return float(np.median(same)) if same else vp.load_s


# --------------------------------------------------------------------------------------------
# JSON

def _measurement_doc(m: Measurement) -> dict[str, Any]:
    doc = {k: getattr(m, k) for k in _MEASUREMENT_FIELDS}
    doc.update({k: getattr(m, k) for k in _OPTIONAL_FIELDS if getattr(m, k) is not None})
    return doc


def _saturation_doc(p: SaturationPoint) -> dict[str, Any]:
    doc = {k: getattr(p, k) for k in _SATURATION_FIELDS}
    doc.update({k: getattr(p, k) for k in _SATURATION_OPTIONAL if getattr(p, k) is not None})
    return doc


def _calibration_doc(vp: VariantProfile) -> dict[str, float]:
    """The model's calibration where it differs from its measurements ({} where it does not)."""
    raw = as_measured(vp)
    if (vp.service_scale, vp.instance_efficiency) == (raw.service_scale, raw.instance_efficiency):
        return {}
    return {"service_scale": vp.service_scale, "instance_efficiency": vp.instance_efficiency}


def sorted_saturation(points) -> tuple[SaturationPoint, ...]:
    return tuple(sorted(points, key=lambda p: (p.instances, p.batch_size, p.offered_rps)))


def save_profiles(profiles: Profiles, path: str | Path) -> None:
    """Write profiles as JSON. The fit is saved for people to read; loading re-fits it."""
    doc = {
        "format": FORMAT,
        "provenance": dict(profiles.provenance),
        "models": {
            name: {
                "measurements": [_measurement_doc(m) for m in vp.measurements],
                "fit": {**asdict(vp.latency), "instance_efficiency": vp.instance_efficiency,
                        "efficiency_measured": vp.efficiency_measured,
                        **({"load_s": vp.load_s, "load_s_max": vp.load_s_max}
                           if vp.load_s is not None else {})},
                **({"saturation": [_saturation_doc(p) for p in sorted_saturation(vp.saturation)]} if vp.saturation else {}),
                **({"calibration": _calibration_doc(vp)} if _calibration_doc(vp) else {}),
            }
            for name, vp in sorted(profiles.variants.items())
        },
    }
    Path(path).write_text(json.dumps(doc, indent=2) + "\n")


def save_saturation(profiles: Profiles, path: str | Path, provenance: Mapping[str, Any] | None = None) -> None:
    """Write the models' saturation sweeps and their `calibration` into an existing
    profiles file, leaving every other byte of it as it was (the measurements and fits are not
    re-serialised); `provenance`, when given, is stored as the file's `provenance.saturation`."""
    path = Path(path)
    doc = json.loads(path.read_text())
    for name, vp in profiles.variants.items():
        if vp.saturation and name in doc.get("models", {}):
            doc["models"][name]["saturation"] = [_saturation_doc(p) for p in sorted_saturation(vp.saturation)]
        if name in doc.get("models", {}):
            doc["models"][name].pop("calibration", None)
            if _calibration_doc(vp):
                doc["models"][name]["calibration"] = _calibration_doc(vp)
    if provenance is not None:
        doc.setdefault("provenance", {})["saturation"] = dict(provenance)
    path.write_text(json.dumps(doc, indent=2) + "\n")


def _number(problems: list[str], entry: dict, key: str, where: str, *, integer: bool, low: float) -> Any:
    value = entry.get(key)
    kind = "an integer" if integer else "a number"
    ok = (isinstance(value, int) if integer else isinstance(value, (int, float))) and not isinstance(value, bool)
    if not ok or (not integer and not math.isfinite(value)) or value < low:
        problems.append(f"`{where}.{key}`: expected {kind} >= {low:g}, got {value!r}")
        return None
    return value


def _calibration(problems: list[str], raw: Any, where: str) -> Calibration | None:
    if not isinstance(raw, dict):
        problems.append(f"`{where}`: expected an object with service_scale and instance_efficiency, got {raw!r}")
        return None
    unknown = sorted(set(raw) - {"service_scale", "instance_efficiency"})
    if unknown:
        problems.append(f"`{where}.{unknown[0]}`: unknown key; expected service_scale, instance_efficiency")
    scale = _number(problems, raw, "service_scale", where, integer=False, low=1e-9)
    eff = _number(problems, raw, "instance_efficiency", where, integer=False, low=1e-9)
    if eff is not None and eff > 1:
        problems.append(f"`{where}.instance_efficiency`: expected a number <= 1, got {eff!r}")
        return None
    return None if unknown or scale is None or eff is None else Calibration(float(scale), float(eff))


def _saturation(problems: list[str], raw: Any, where: str) -> tuple[SaturationPoint, ...]:
    """A model's `saturation` list: every point complete, numbers in range, no unknown key."""
    if not isinstance(raw, list):
        problems.append(f"`{where}`: expected a list of sweep points, got {raw!r}")
        return ()
    points = []
    for i, p in enumerate(raw):
        at = f"{where}[{i}]"
        if not isinstance(p, dict):
            problems.append(f"`{at}`: expected an object, got {p!r}")
            continue
        for key in p:
            if key not in _SATURATION_FIELDS + _SATURATION_OPTIONAL:
                problems.append(f"`{at}.{key}`: unknown key; expected one of "
                                f"{list(_SATURATION_FIELDS + _SATURATION_OPTIONAL)}")
        vals = {key: _number(problems, p, key, at, integer=key in ("batch_size", "instances", "requests",
                                                                   "failures"),
                             low=1 if key in ("batch_size", "instances") else 0)
                for key in _SATURATION_FIELDS}
        for key in _SATURATION_OPTIONAL:
            if key in p:
                vals[key] = _number(problems, p, key, at, integer=False, low=0)
        if None in vals.values():
            continue
        if vals["offered_rps"] <= 0:
            problems.append(f"`{at}.offered_rps`: expected a rate > 0, got {vals['offered_rps']!r}")
            continue
        if vals["failures"] > vals["requests"]:
            problems.append(f"`{at}.failures`: expected <= requests ({vals['requests']}), got {vals['failures']!r}")
            continue
        bad = [f"{lo} <= {hi}" for lo, hi in (("p50_ms", "p99_ms"), ("server_p50_ms", "server_p99_ms"))
               if lo in vals and hi in vals and vals[hi] < vals[lo]]
        if bad:
            problems.append(f"`{at}`: expected {bad[0]}, got {vals}")
            continue
        points.append(SaturationPoint(**vals))
    return sorted_saturation(points)


def load_profiles(path: str | Path) -> Profiles:
    """Read a profiles JSON file; a malformed file raises ConfigError listing every problem."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read profiles: {exc.strerror or exc}") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON: {exc}") from exc
    problems: list[str] = []
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: `<top>`: expected a JSON object, got {type(doc).__name__}")
    if doc.get("format") != FORMAT:
        problems.append(f"`format`: expected {FORMAT!r}, got {doc.get('format')!r}")
    provenance = doc.get("provenance", {})
    if not isinstance(provenance, dict):
        problems.append(f"`provenance`: expected an object, got {provenance!r}")
        provenance = {}
    models = doc.get("models")
    if not isinstance(models, dict) or not models:
        problems.append(f"`models`: expected a non-empty object of model name -> profile, got {models!r}")
        models = {}
    variants = {}
    for name, entry in models.items():
        raw = entry.get("measurements") if isinstance(entry, dict) else None
        if not isinstance(raw, list) or not raw:
            problems.append(f"`models.{name}.measurements`: expected a non-empty list, got {raw!r}")
            continue
        ms = []
        for i, m in enumerate(raw):
            where = f"models.{name}.measurements[{i}]"
            if not isinstance(m, dict):
                problems.append(f"`{where}`: expected an object, got {m!r}")
                continue
            for key in m:
                if key not in _MEASUREMENT_FIELDS + _OPTIONAL_FIELDS:
                    problems.append(f"`{where}.{key}`: unknown key; expected one of "
                                    f"{list(_MEASUREMENT_FIELDS + _OPTIONAL_FIELDS)}")
            vals = {
                "batch_size": _number(problems, m, "batch_size", where, integer=True, low=1),
                "instances": _number(problems, m, "instances", where, integer=True, low=1),
                "p50_ms": _number(problems, m, "p50_ms", where, integer=False, low=1e-9),
                "p99_ms": _number(problems, m, "p99_ms", where, integer=False, low=1e-9),
                "throughput_rps": _number(problems, m, "throughput_rps", where, integer=False, low=0),
                "requests": _number(problems, m, "requests", where, integer=True, low=0),
            }
            for key in _OPTIONAL_FIELDS:  # optional, but a positive finite number when present
                if key in m:
                    vals[key] = _number(problems, m, key, where, integer=False, low=1e-9)
            if None in vals.values():
                continue
            if vals["p99_ms"] < vals["p50_ms"]:
                problems.append(f"`{where}.p99_ms`: expected >= p50_ms ({vals['p50_ms']!r}), got {vals['p99_ms']!r}")
                continue
            ms.append(Measurement(model=str(name), **vals))
        if ms:
            variants[str(name)] = fit(ms)
        if "saturation" in entry:
            points = _saturation(problems, entry["saturation"], f"models.{name}.saturation")
            if str(name) in variants:
                variants[str(name)] = replace(variants[str(name)], saturation=points)
        if "calibration" in entry:
            calibration = _calibration(problems, entry["calibration"], f"models.{name}.calibration")
            if calibration is not None and str(name) in variants:
                variants[str(name)] = calibration.apply(variants[str(name)])
    if len(problems) == 1:
        raise ConfigError(f"{path}: {problems[0]}")
    if problems:
        raise ConfigError(f"{path}: {len(problems)} problems:\n" + "\n".join(f"  - {p}" for p in problems))
    return Profiles(variants=variants, provenance=provenance, source=str(path))


# --------------------------------------------------------------------------------------------
# The service-time distribution of one batch: what the planner's stage model and the simulator
# both read, so that they cannot disagree about a variant.

Z99 = 2.3263478740408408  # standard normal quantile of 0.99
MAX_SIGMA = 1.5  # a p99 more than ~33x the median is a measuring accident, not a distribution


def lognormal_table(vp: VariantProfile, max_batch: int) -> tuple[tuple[float, float], ...]:
    """(mu, sigma) of ln(service ms) of one batch, for batch sizes 0..max_batch (index 0 unused).

    A batch's service time is lognormal with the measured p50 as median and the measured p99 as
    99th percentile (server-side, Triton's request trace, where the profile has them), at the
    measured batch sizes, linear in between; past the largest measured size, the fits. A profile
    without measurements (synthetic) has a fixed service time: its p99 fit. `service_scale`
    multiplies every time. Memoised: the planner asks for it for every candidate of every
    decision, and it depends on the measurements alone (refitting them was 85 % of a decision)."""
    shift = math.log(vp.service_scale)
    return tuple((mu + shift if b else 0.0, sigma)
                 for b, (mu, sigma) in enumerate(_lognormal_table(vp.measurements, vp.latency, max_batch)))


@functools.lru_cache(maxsize=4096)
def _lognormal_table(measurements: tuple[Measurement, ...], latency: LatencyFit,
                     max_batch: int) -> tuple[tuple[float, float], ...]:
    """`lognormal_table` at service scale 1."""
    single = [m for m in measurements if m.instances == min(x.instances for x in measurements)] \
        if measurements else []
    sizes = np.array([m.batch_size for m in single], dtype=float)
    order = np.argsort(sizes)
    p50_fit = latency
    if single:
        p50_fit = fit_latency(sizes, [_p50(m) for m in single])
    table = [(0.0, 0.0)]
    for b in range(1, max_batch + 1):
        if single and b <= sizes.max():
            p50 = float(np.interp(b, sizes[order], np.array([_p50(m) for m in single])[order]))
            p99 = float(np.interp(b, sizes[order], np.array([_p99(m) for m in single])[order]))
        else:
            p50, p99 = float(p50_fit.p99_ms(b)), float(latency.p99_ms(b))  # the fits' evaluator
        p50 = max(p50, 1e-3)
        p99 = max(p99, p50)
        table.append((math.log(p50), min(math.log(p99 / p50) / Z99, MAX_SIGMA)))
    return tuple(table)


@dataclass(frozen=True, eq=False)
class ServiceStats:
    """Per batch size b (index 0 unused): mean and p99 service time of one batch (ms) on one
    instance alone, and the squared coefficient of variation of that time."""

    mean_ms: np.ndarray
    p99_ms: np.ndarray
    cs2: np.ndarray


def service_stats(vp: VariantProfile, max_batch: int) -> ServiceStats:
    table = np.array(lognormal_table(vp, max_batch))
    mu, sigma = table[:, 0], table[:, 1]
    mean = np.exp(mu + sigma * sigma / 2)
    p99 = np.exp(mu + Z99 * sigma)
    mean[0] = p99[0] = np.inf
    return ServiceStats(mean_ms=mean, p99_ms=p99, cs2=np.expm1(sigma * sigma))


# A stage inside Triton takes the server-side time (Triton's request trace, when the profile has
# it); the client-side figures add the client's and the network's share, about 1-3 ms at p99.
def _p50(m: Measurement) -> float:
    return m.server_p50_ms if m.server_p50_ms is not None else m.p50_ms


def _p99(m: Measurement) -> float:
    return m.server_p99_ms if m.server_p99_ms is not None else m.p99_ms


def expected_compute_ms(vp: VariantProfile, mean_batch: float, max_batch: int) -> float:
    """Triton's compute time per request the profile expects at a mean batch (inferences per
    execution): each request counts its whole batch's time, so with batches of floor and ceil
    of the mean mixed to that mean, larger batches weigh in by their size. (The profile's mean
    at the rounded mean batch reads 1.4x on a 1.38 mix of batches of 1 and 2 that is exactly
    as profiled.)"""
    mb = min(max(1.0, mean_batch), float(max_batch))
    lo = int(math.floor(mb))
    hi = min(lo + 1, max_batch)
    m = service_stats(vp, hi).mean_ms
    p = mb - lo if hi > lo else 0.0  # the share of executions at `hi`
    return float(((1 - p) * lo * m[lo] + p * hi * m[hi]) / ((1 - p) * lo + p * hi))
