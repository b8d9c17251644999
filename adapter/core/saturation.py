"""The stage model at and near saturation, against live open-loop sweeps (pure: no I/O).

A sweep (`tpa profile --saturation`, stored as `VariantProfile.saturation`) holds, per
(batch size B, instances n) of a variant, the latency under Poisson load at a ladder of rates
up to past capacity. Two figures are compared per curve, for a latency budget `sla_ms` that one
stage may take:

  measured max rps   the highest rate at which the stage still kept its p99 within the budget
                     (first crossing along the ladder, interpolated in log p99 between the last
                     point within and the first over; a point that failed requests or could not
                     keep up with its arrivals is over);
  predicted max rps  the same on the planner's stage model (`core.latency.stage_model` with the
                     profile's service statistics): the first rate at which its p99 exceeds the
                     budget (or the stage's capacity).

`fit_service_scale` is the calibration: the factor on every service time of the variant
(`VariantProfile.service_scale`) that makes the predicted max rps the measured one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from adapter.core.latency import stage_model
from adapter.core.profile import SaturationPoint, VariantProfile, service_stats

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


def within(p: SaturationPoint, sla_ms: float, side: str = "server") -> bool:
    return (p.failures == 0 and p.achieved_rps >= KEEPS_UP * p.sent_rps
            and point_p99(p, side) <= sla_ms)


def measured_max_rps(curve: Sequence[SaturationPoint], sla_ms: float, side: str = "server") -> MaxRps:
    """The highest arrival rate (requests sent per second) at which the curve kept p99 within
    `sla_ms`: see the module docstring. `curve` is one (B, n) sorted by offered rate."""
    if not curve:
        raise ValueError("measured_max_rps: empty curve")
    pts = sorted(curve, key=lambda p: p.offered_rps)
    first_over = next((i for i, p in enumerate(pts) if not within(p, sla_ms, side)), None)
    if first_over is None:
        return MaxRps(pts[-1].sent_rps, ">=")
    if first_over == 0:
        return MaxRps(pts[0].sent_rps, "<")
    ok, over = pts[first_over - 1], pts[first_over]
    lo, hi = point_p99(ok, side), point_p99(over, side)
    if not (over.failures == 0 and over.achieved_rps >= KEEPS_UP * over.sent_rps) or hi <= lo:
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


def fit_service_scale(vp: VariantProfile, batch: int, instances: int, sla_ms: float, target_rps: float,
                      low: float = 0.25, high: float = 4.0, iterations: int = 40) -> float:
    """The factor on every service time of `vp` (`service_scale`) at which the predicted max
    rps at (batch, instances, sla_ms) is `target_rps` (a measured one). Service times scale the
    capacity as 1/scale and the waits in proportion, so the predicted max rps falls as the scale
    grows: bisection on log scale, clipped to [low, high]."""
    import dataclasses

    def rate(scale: float) -> float:
        return predicted_max_rps(dataclasses.replace(vp, service_scale=vp.service_scale * scale),
                                 batch, instances, sla_ms)

    lo, hi = math.log(low), math.log(high)
    if rate(low) <= target_rps:
        return low
    if rate(high) >= target_rps:
        return high
    for _ in range(iterations):
        mid = (lo + hi) / 2
        if rate(math.exp(mid)) > target_rps:
            lo = mid
        else:
            hi = mid
    return math.exp((lo + hi) / 2)


MAX_RPS_TOLERANCE = 0.15  # predicted vs measured max rps: the fidelity the planner is held to


@dataclass(frozen=True)
class CurveCheck:
    """One (variant, B, n) curve: measured and predicted max rps at `sla_ms`, and the service
    scale that would make them agree (None where the measured one is only a bound)."""

    model: str
    batch_size: int
    instances: int
    sla_ms: float
    measured: MaxRps
    predicted_rps: float
    scale: float | None

    @property
    def error(self) -> float | None:
        """predicted / measured - 1, where the measured max rps is a value, not a bound."""
        return self.predicted_rps / self.measured.rps - 1.0 if self.measured.bound == "=" else None

    @property
    def ok(self) -> bool:
        """Within the tolerance; for a bound, whether the prediction respects it (within it)."""
        if self.measured.bound == "=":
            return abs(self.error) <= MAX_RPS_TOLERANCE
        if self.measured.bound == ">=":  # the stage kept the budget at every rate tried
            return self.predicted_rps >= self.measured.rps * (1 - MAX_RPS_TOLERANCE)
        return self.predicted_rps <= self.measured.rps * (1 + MAX_RPS_TOLERANCE)


def check_curves(vp: VariantProfile, sla_ms: float, side: str = "server") -> list[CurveCheck]:
    """Every saturation curve of `vp` against the stage model at a budget of `sla_ms`."""
    out = []
    for (batch, instances), curve in curves(vp.saturation).items():
        measured = measured_max_rps(curve, sla_ms, side)
        scale = fit_service_scale(vp, batch, instances, sla_ms, measured.rps) if measured.bound == "=" else None
        out.append(CurveCheck(vp.model, batch, instances, sla_ms, measured,
                              predicted_max_rps(vp, batch, instances, sla_ms), scale))
    return out


def format_checks(checks: Sequence[CurveCheck]) -> str:
    """A Markdown table of curve checks."""
    lines = ["| variant | B | n | measured max rps | predicted | error | within 15 % | fitted scale |",
             "|---|---|---|---|---|---|---|---|"]
    for c in checks:
        error = "" if c.error is None else f"{c.error:+.0%}"
        scale = "" if c.scale is None else f"{c.scale:.2f}"
        lines.append(f"| {c.model} | {c.batch_size} | {c.instances} | {c.measured} | {c.predicted_rps:.0f} | "
                     f"{error} | {'yes' if c.ok else 'no'} | {scale} |")
    return "\n".join(lines)
