"""What a plan truly serves within the SLA at a steady load, measured on the simulated pods.

    plan -> its pods on the engine -> Poisson arrivals at rates 1, 1.1, 1.21, ... req/s
         -> per rate: the share of requests answered within the SLA (neither late nor shed)

This is the oracle's ground truth (oracle.py): the planner's model of a stage differs from the
simulated Triton batcher (cautious on some plans, optimistic on others), so an oracle that
trusted it could be beaten by an online policy. Measured once per plan and remembered for the process; the scan
stops where the plan serves under a quarter of the load (beyond it the plan's throughput is
flat, and `ServedCurve.share` extrapolates so).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from adapter.core.admission import DEFAULT, Admission
from adapter.core.plan import Plan
from adapter.core.profile import Profiles
from adapter.core.spec import PipelineSpec
from adapter.sim.engine import Engine, stage_configs
from adapter.sim.service import ServiceTimes

RATE_STEP = 1.1  # the scan's ratio between rates
SCAN_S = 30.0  # seconds of steady load per rate
SATURATED = 0.25  # the scan stops once the plan serves less than this share


@dataclass
class ServedCurve:
    """Share of a steady Poisson load served within the SLA, by rate (rates ascending)."""

    rates: list[float] = field(default_factory=list)
    shares: list[float] = field(default_factory=list)

    @property
    def saturated(self) -> bool:
        return bool(self.shares) and self.shares[-1] < SATURATED

    def share(self, rps: np.ndarray) -> np.ndarray:
        """Interpolated between measured rates; above the last one the served rate stays flat."""
        rps = np.asarray(rps, dtype=float)
        rates, shares = np.asarray(self.rates), np.asarray(self.shares)
        inside = np.interp(rps, rates, shares)
        flat = shares[-1] * rates[-1] / np.maximum(rps, 1e-9)
        return np.where(rps > rates[-1], flat, inside)


_CURVES: dict[tuple, ServedCurve] = {}


def served_curve(spec: PipelineSpec, profiles: Profiles, plan: Plan, up_to_rps: float,
                 admission: Admission | str = DEFAULT, handoff_ms: float = 0.1, seed: int = 0) -> ServedCurve:
    """The plan's curve, scanned up to `up_to_rps` (or until it saturates); later calls that
    need higher rates extend the remembered scan."""
    models = [v.model for s in plan.stages for v in s.variants]
    key = (spec.ensemble, spec.sla_ms, repr(admission), plan.pods, handoff_ms, seed,
           tuple((v.model, v.max_batch_size, v.max_queue_delay_us, v.instances)
                 for s in plan.stages for v in s.variants),
           tuple(repr(profiles[m]) for m in models))
    curve = _CURVES.setdefault(key, ServedCurve())
    configs = stage_configs(plan, admission)
    rate = curve.rates[-1] * RATE_STEP if curve.rates else 1.0
    while not curve.saturated and (not curve.rates or curve.rates[-1] < up_to_rps):
        curve.rates.append(rate)
        curve.shares.append(_served_share(spec, profiles, configs, plan.pods, rate, handoff_ms, seed))
        rate *= RATE_STEP
    return curve


def _served_share(spec, profiles, configs, pods: int, rps: float, handoff_ms: float, seed: int) -> float:
    from adapter.workloads import arrival_times

    arrivals = arrival_times(np.full(int(SCAN_S), rps), poisson=True, seed=seed)
    if len(arrivals) == 0:
        return 1.0
    engine = Engine(spec.ensemble, len(configs), arrivals, ServiceTimes(profiles, seed=seed), handoff_ms)
    for _ in range(pods):
        engine.add_pod(configs, ready_at=0.0)
    engine.run_until(SCAN_S + spec.sla_ms / 1000.0)
    finished, shed = np.asarray(engine.finished), np.asarray(engine.shed) >= 0
    in_time = (finished >= 0) & ~shed & ((finished - arrivals) * 1000.0 <= spec.sla_ms)
    return float(in_time.mean())
