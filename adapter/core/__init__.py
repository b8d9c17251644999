"""Decision core: pure functions from spec, profiles, load and current plan to a plan."""

from adapter.core.plan import Mode, Plan, Reason, StagePlan, VariantPlan
from adapter.core.planner import plan_objective, plan_pipeline
from adapter.core.profile import (
    LatencyFit, Measurement, Profiles, VariantProfile, fit, load_profiles, save_profiles,
)
from adapter.core.spec import PipelineSpec, load_spec, parse_spec

__all__ = [
    "LatencyFit", "Measurement", "Mode", "PipelineSpec", "Plan", "Profiles", "Reason", "StagePlan",
    "VariantPlan", "VariantProfile", "fit", "load_profiles", "load_spec", "parse_spec", "plan_objective",
    "plan_pipeline", "save_profiles",
]
