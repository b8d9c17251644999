"""Plan types: what the planner decided, per stage and for the pipeline. Frozen; `to_dict()` for JSON."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from enum import Enum
from typing import Any


class Mode(str, Enum):
    SINGLE = "single"  # IPA: one variant per stage
    SPLIT = "split"  # InfAdapter: a traffic split across a stage's variants
    FIXED = "fixed"  # Proteus: maximise accuracy on a fixed set of cores/GPUs (all pods)


class Reason(str, Enum):
    """Why the plan is what it is (machine readable; the human text is Plan.message)."""

    OPTIMAL = "Optimal"
    LATENCY_SLA = "LatencySLA"  # no configuration meets the end-to-end p99 SLA
    CAPACITY = "Capacity"  # some stage cannot serve the load (with headroom) at all
    RESOURCES = "Resources"  # the load or the SLA needs more resources than the pods offer


@dataclass(frozen=True, slots=True, kw_only=True)
class VariantPlan:
    """One variant's part of a stage (a single-variant stage has one, with share 1)."""

    model: str
    share: float  # fraction of the stage's requests
    max_batch_size: int
    max_queue_delay_us: int  # Triton's dynamic batcher field
    instances: int  # per pod (Triton instance_group.count)
    rps: float  # planned request rate per pod
    predicted_p99_ms: float
    capacity_rps: float  # over all pods

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class StagePlan:
    stage: str
    variants: tuple[VariantPlan, ...]
    predicted_p99_ms: float  # the slowest variant used
    capacity_rps: float
    accuracy: float  # share-weighted measured accuracy
    accuracy_score: float  # share-weighted normalised accuracy (what the objective uses)
    cost: float  # cores + GPUs over all pods

    @property
    def model(self) -> str:
        """The variant serving the most traffic."""
        return max(self.variants, key=lambda v: v.share).model

    @property
    def max_batch_size(self) -> int:
        return max(v.max_batch_size for v in self.variants)

    @property
    def instances(self) -> int:
        """Instances per pod, over all variants."""
        return sum(v.instances for v in self.variants)

    def to_dict(self) -> dict[str, Any]:
        d = _plain(self)
        d["variants"] = [v.to_dict() for v in self.variants]
        return d


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    pipeline: str
    mode: Mode
    rps: float
    sla_ms: float
    pods: int
    stages: tuple[StagePlan, ...]
    objective: float
    predicted_p99_ms: float
    accuracy: float  # stage accuracies combined (product/sum/mean) as measured
    accuracy_score: float  # the normalised pipeline accuracy in the objective
    cost: float
    feasible: bool
    reason: Reason
    message: str
    solver: str
    solve_ms: float | None = None  # filled in by the caller (the core reads no clock)

    def stage(self, name: str) -> StagePlan:
        return next(s for s in self.stages if s.stage == name)

    def to_dict(self) -> dict[str, Any]:
        d = _plain(self)
        d["stages"] = [s.to_dict() for s in self.stages]
        return d


def _plain(obj: Any) -> dict[str, Any]:
    out = {}
    for f in fields(obj):
        v = getattr(obj, f.name)
        if isinstance(v, Enum):
            v = v.value
        elif isinstance(v, float):
            v = None if math.isinf(v) or math.isnan(v) else round(v, 6)
        out[f.name] = v
    return out
