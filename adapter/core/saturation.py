"""The stage model at and near saturation, against live open-loop sweeps (pure: no I/O).

A sweep (`tpa profile --saturation`, stored as `VariantProfile.saturation`) holds, per
(batch size B, instances n) of a variant, the latency under Poisson load at a ladder of rates
up to past capacity. Two figures are compared per curve, for a latency budget `sla_ms` that one
stage may take:

  measured max rps   the highest rate at which the stage still kept its p99 within the budget
                     (first crossing along the ladder, interpolated in log p99 between the last
                     point within and the first over; a point that failed requests or could not
                     keep up with its arrivals is over; a point over the budget followed by one
                     within it is noise, since p99 grows with the rate: a crossing takes two
                     points over in a row, or one that fell behind, or the ladder's last);
  predicted max rps  the same on the planner's stage model (`core.latency.stage_model` with the
                     profile's service statistics): the first rate at which its p99 exceeds the
                     budget (or the stage's capacity).

`calibrate` fits the stage model's two figures for a variant (its service scale and instance
efficiency, a `Calibration`, stored in the profiles file) to its curves, and `check_curves`
judges each curve as measured, calibrated, and held out (calibrated on the variant's other
curves).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from adapter.core.latency import stage_model
from adapter.core.profile import (Calibration, SaturationPoint, VariantProfile, as_measured, expected_compute_ms,
                                  service_stats)

KEEPS_UP = 0.95  # achieved / sent below this: the queue grew through the window


@dataclass(frozen=True)
class MaxRps:
    """A measured max rps at a budget: `bound` "=" (interpolated between two points), ">="
    (every point kept the budget: the curve did not reach it) or "<" (none did)."""

    rps: float
    bound: str

    def __str__(self) -> str:
        return f"{'' if self.bound == '=' else self.bound}{self.rps:.0f}"


def curves(points: Iterable[SaturationPoint]) -> dict[tuple[int, int], list[SaturationPoint]]:
    """Points grouped by (batch size, instances), each curve sorted by offered rate."""
    out: dict[tuple[int, int], list[SaturationPoint]] = {}
    for p in points:
        out.setdefault((p.batch_size, p.instances), []).append(p)
    return {k: sorted(v, key=lambda p: p.offered_rps) for k, v in sorted(out.items())}


def point_p99(p: SaturationPoint, side: str = "server") -> float:
    """The point's p99: server-side (what a stage takes inside Triton) where measured, else
    client-side; side="client" always the client's."""
    if side == "server" and p.server_p99_ms is not None:
        return p.server_p99_ms
    return p.p99_ms


def keeps_up(p: SaturationPoint) -> bool:
    """No failed request, and the answers kept up with the arrivals (one request of slack: at a
    low rate, one still in flight at the window's end is not a queue that grew)."""
    slack = p.sent_rps / p.requests if p.requests else 0.0
    return p.failures == 0 and p.achieved_rps >= KEEPS_UP * p.sent_rps - slack


def within(p: SaturationPoint, sla_ms: float, side: str = "server") -> bool:
    return keeps_up(p) and point_p99(p, side) <= sla_ms


def measured_max_rps(curve: Sequence[SaturationPoint], sla_ms: float, side: str = "server") -> MaxRps:
    """The highest arrival rate (requests sent per second) at which the curve kept p99 within
    `sla_ms`: see the module docstring. `curve` is one (B, n) sorted by offered rate."""
    if not curve:
        raise ValueError("measured_max_rps: empty curve")
    pts = sorted(curve, key=lambda p: p.offered_rps)

    def crossing(i: int) -> bool:
        if within(pts[i], sla_ms, side):
            return False
        return not keeps_up(pts[i]) or i + 1 == len(pts) or not within(pts[i + 1], sla_ms, side)

    first_over = next((i for i in range(len(pts)) if crossing(i)), None)
    if first_over is None:
        return MaxRps(pts[-1].sent_rps, ">=")
    if first_over == 0:
        return MaxRps(pts[0].sent_rps, "<")
    ok, over = pts[first_over - 1], pts[first_over]  # the point before a crossing is within
    lo, hi = point_p99(ok, side), point_p99(over, side)
    if not keeps_up(over) or hi <= lo:
        return MaxRps(ok.sent_rps, "=")  # over because it fell behind: the last point within
    t = (math.log(sla_ms) - math.log(lo)) / (math.log(hi) - math.log(lo))
    return MaxRps(ok.sent_rps + min(max(t, 0.0), 1.0) * (over.sent_rps - ok.sent_rps), "=")


def predicted(vp: VariantProfile, batch: int, instances: int, rps: float) -> tuple[float, float]:
    """(p99 ms, capacity rps) of the stage model for this variant at (batch, instances)."""
    st = service_stats(vp, batch)
    return stage_model(st.mean_ms, st.p99_ms, st.cs2, batch, instances, rps, vp.instance_efficiency)


def predicted_max_rps(vp: VariantProfile, batch: int, instances: int, sla_ms: float,
                      grid: int = 400, iterations: int = 40) -> float:
    """The first rate at which the stage model's p99 exceeds `sla_ms` (its capacity at most):
    a scan of `grid` rates up to capacity, then bisection in the first interval that crosses.
    0 when even an idle stage misses the budget."""
    st = service_stats(vp, batch)

    def p99(rps):
        return stage_model(st.mean_ms[None, :].repeat(np.size(rps), 0), st.p99_ms[None, :].repeat(np.size(rps), 0),
                           st.cs2[None, :].repeat(np.size(rps), 0), batch, instances, rps,
                           vp.instance_efficiency)[0]

    _, capacity = stage_model(st.mean_ms, st.p99_ms, st.cs2, batch, instances, 1.0, vp.instance_efficiency)
    rates = np.linspace(0.0, capacity, grid + 1)[1:]
    over = np.flatnonzero(~(p99(rates) <= sla_ms))
    if p99(np.array([1e-9]))[0] > sla_ms:
        return 0.0
    if not len(over):
        return float(capacity)
    lo = float(rates[over[0] - 1]) if over[0] > 0 else 0.0
    hi = float(rates[over[0]])
    for _ in range(iterations):
        mid = (lo + hi) / 2
        if p99(np.array([mid]))[0] <= sla_ms:
            lo = mid
        else:
            hi = mid
    return lo


def _solve(rate_at, target_rps: float, low: float, high: float, rising: bool, iterations: int = 40) -> float:
    """The value in [low, high] (bisection on its log) at which the monotone `rate_at(value)` is
    `target_rps`; clipped to the bounds. `rising`: the rate grows with the value."""
    sign = 1.0 if rising else -1.0
    if sign * (rate_at(low) - target_rps) >= 0:
        return low
    if sign * (rate_at(high) - target_rps) <= 0:
        return high
    lo, hi = math.log(low), math.log(high)
    for _ in range(iterations):
        mid = (lo + hi) / 2
        if sign * (rate_at(math.exp(mid)) - target_rps) < 0:
            lo = mid
        else:
            hi = mid
    return math.exp((lo + hi) / 2)


def fit_service_scale(vp: VariantProfile, batch: int, instances: int, sla_ms: float, target_rps: float,
                      low: float = 0.25, high: float = 4.0) -> float:
    """The factor on every service time of `vp` at which the predicted max rps at (batch,
    instances, sla_ms) is `target_rps` (a measured one): service times scale the capacity as
    1/scale and the waits in proportion, so the max rps falls as the scale grows."""
    return _solve(lambda scale: predicted_max_rps(dataclasses.replace(vp, service_scale=vp.service_scale * scale),
                                                  batch, instances, sla_ms), target_rps, low, high, rising=False)


def fit_instance_efficiency(vp: VariantProfile, batch: int, instances: int, sla_ms: float, target_rps: float,
                            low: float = 0.05, high: float = 1.0) -> float:
    """The instance efficiency at which the predicted max rps at (batch, instances > 1, sla_ms)
    is `target_rps`: each extra instance adds that share of one, so the max rps grows with it."""
    return _solve(lambda eff: predicted_max_rps(dataclasses.replace(vp, instance_efficiency=eff),
                                                batch, instances, sla_ms), target_rps, low, high, rising=True)


def calibrate(vp: VariantProfile, sla_ms: float, side: str = "server",
              only: Sequence[tuple[int, int]] | None = None) -> Calibration:
    """The stage model's two figures for this variant, fitted on its saturation curves (those in
    `only`, if given) at a budget of `sla_ms`, starting from the profile as measured:
      service scale         on the curves with one instance (all curves if there are none), with
                            the measured instance efficiency: the geometric mean of the curves'
                            fitted scales where a max rps was measured; where none was (a fast
                            model whose curves never reached the budget), Triton's compute time
                            per request in the sweep over the profile's (`compute_scale`);
      instance efficiency   on the curves with several instances, given that scale: the mean of
                            their fitted efficiencies (kept as measured without both kinds of
                            curve: one instance alone says nothing about a second);
    each then kept within what the bounds say (a curve that never reached the budget says the
    stage is at least that fast, one already over at its first rate that it is at most that
    fast). Without curves: the profile as measured."""
    raw = as_measured(vp)
    chosen = {k: c for k, c in curves(vp.saturation).items() if only is None or k in only}
    single = {k: c for k, c in chosen.items() if k[1] == 1}
    multi = {k: c for k, c in chosen.items() if k[1] > 1}
    scale = _combine(raw, single or chosen, sla_ms, side, fit_service_scale, faster_is_lower=True,
                     default=compute_scale(raw, single) or 1.0, mean=lambda xs: float(np.exp(np.mean(np.log(xs)))))
    scaled = dataclasses.replace(raw, service_scale=scale)
    eff = raw.instance_efficiency
    if single and multi:
        eff = _combine(scaled, multi, sla_ms, side, fit_instance_efficiency, faster_is_lower=False,
                       default=eff, mean=lambda xs: float(np.mean(xs)))
    return Calibration(scale, eff)


def compute_scale(vp: VariantProfile, chosen: dict) -> float | None:
    """Triton's compute time per request at the sweep's one-instance rates that kept up, over
    what the profile expects at the same mean batch: the median ratio (the same evidence the
    policy's run-time correction reads). None without such points."""
    ratios = [p.compute_ms / expected_compute_ms(vp, p.mean_batch, p.batch_size)
              for curve in chosen.values() for p in curve
              if p.compute_ms is not None and p.mean_batch and keeps_up(p)]
    return float(np.median(ratios)) if ratios else None


def _combine(vp: VariantProfile, chosen: dict, sla_ms: float, side: str, fit_one, faster_is_lower: bool,
             default: float, mean) -> float:
    """One figure from several curves: the mean of the fitted values where a max rps was
    measured (else `default`), kept within the bounds the other curves set."""
    fitted, floor, cap = [], -math.inf, math.inf
    for (batch, instances), curve in chosen.items():
        measured = measured_max_rps(curve, sla_ms, side)
        value = fit_one(vp, batch, instances, sla_ms, measured.rps)
        if measured.bound == "=":
            fitted.append(value)
        elif (measured.bound == ">=") == faster_is_lower:  # at least this fast
            cap = min(cap, value)
        else:  # at most this fast
            floor = max(floor, value)
    value = mean(fitted) if fitted else default
    return max(floor, min(cap, value))


MAX_RPS_TOLERANCE = 0.15  # predicted vs measured max rps: the fidelity the planner is held to


@dataclass(frozen=True)
class CurveCheck:
    """One (variant, B, n) curve: the measured max rps at `sla_ms` and the stage model's, on the
    profile as measured (`raw_rps`), calibrated on all the variant's curves (`predicted_rps`)
    and held out (`held_out_rps`: calibrated on the variant's other curves; None if it has none)."""

    model: str
    batch_size: int
    instances: int
    sla_ms: float
    measured: MaxRps
    raw_rps: float
    predicted_rps: float
    held_out_rps: float | None

    def error(self, rps: float | None) -> float | None:
        """rps / measured - 1, where the measured max rps is a value, not a bound."""
        return rps / self.measured.rps - 1.0 if self.measured.bound == "=" and rps is not None else None

    def ok(self, rps: float | None) -> bool | None:
        """Within the tolerance; for a bound, whether the prediction respects it (within it)."""
        if rps is None:
            return None
        if self.measured.bound == "=":
            return abs(self.error(rps)) <= MAX_RPS_TOLERANCE
        if self.measured.bound == ">=":  # the stage kept the budget at every rate tried
            return rps >= self.measured.rps * (1 - MAX_RPS_TOLERANCE)
        return rps <= self.measured.rps * (1 + MAX_RPS_TOLERANCE)


def check_curves(vp: VariantProfile, sla_ms: float, side: str = "server") -> list[CurveCheck]:
    """Every saturation curve of `vp` against the stage model at a budget of `sla_ms`."""
    by_config = curves(vp.saturation)
    raw, calibrated = as_measured(vp), calibrate(vp, sla_ms, side).apply(vp)
    out = []
    for (batch, instances), curve in by_config.items():
        others = [c for c in by_config if c != (batch, instances)]
        held_out = (predicted_max_rps(calibrate(vp, sla_ms, side, others).apply(vp), batch, instances, sla_ms)
                    if others else None)
        out.append(CurveCheck(
            vp.model, batch, instances, sla_ms, measured_max_rps(curve, sla_ms, side),
            predicted_max_rps(raw, batch, instances, sla_ms), predicted_max_rps(calibrated, batch, instances, sla_ms),
            held_out))
    return out


def format_checks(checks: Sequence[CurveCheck]) -> str:
    """A Markdown table of curve checks."""
    def cell(c: CurveCheck, rps: float | None) -> str:
        if rps is None:
            return "n/a"
        error = c.error(rps)
        return f"{rps:.0f}" + ("" if error is None else f" ({error:+.0%})") + ("" if c.ok(rps) else " ✗")

    lines = ["| variant | B | n | measured max rps | profile as measured | calibrated | held out |",
             "|---|---|---|---|---|---|---|"]
    for c in checks:
        lines.append(f"| {c.model} | {c.batch_size} | {c.instances} | {c.measured} | {cell(c, c.raw_rps)} | "
                     f"{cell(c, c.predicted_rps)} | {cell(c, c.held_out_rps)} |")
    return "\n".join(lines)
