"""plan_from_dict is the exact inverse of Plan.to_dict() (what the leader publishes and every
sidecar reads back), and rejects anything else with the field named."""

from __future__ import annotations

import dataclasses
import functools
import json
import math

import pytest

from adapter import paths
from adapter.cluster.plan_store import configmap_name, plan_from_dict, plan_json
from adapter.core.plan import Mode
from adapter.core.planner import plan_pipeline
from adapter.core.profile import load_profiles
from adapter.core.spec import load_spec
from adapter.errors import ConfigError

SPEC = load_spec(paths.ROOT / "k8s" / "base" / "pipeline.yaml",
                 accuracy_path=paths.ENSEMBLES / "text_search" / "accuracy.yaml")
PROFILES = load_profiles(paths.ENSEMBLES / "text_search" / "profiles.json")


@functools.cache
def _plans():
    single = plan_pipeline(SPEC, PROFILES, 800.0)
    split = plan_pipeline(SPEC, PROFILES, 300.0, mode=Mode.SPLIT)
    impossible = plan_pipeline(SPEC, PROFILES, 1e6)  # infeasible: best effort, inf latency maybe
    timed = dataclasses.replace(single, solve_ms=1.25)
    return {"single": single, "split": split, "infeasible": impossible, "timed": timed}


@pytest.mark.parametrize("name", ["single", "split", "infeasible", "timed"])
def test_round_trip(name):
    plan = _plans()[name]
    data = json.loads(plan_json(plan))
    back = plan_from_dict(data)
    assert back.to_dict() == plan.to_dict()
    assert plan_json(back) == plan_json(plan)
    assert back.pods == plan.pods and back.mode is plan.mode and back.reason is plan.reason
    assert [s.model for s in back.stages] == [s.model for s in plan.stages]


def test_cluster_plans_use_several_pods():
    assert _plans()["single"].pods > 1


def test_null_floats_come_back_as_inf():
    data = _plans()["single"].to_dict()
    data["predicted_p99_ms"] = None
    assert math.isinf(plan_from_dict(data).predicted_p99_ms)


def _broken(edit):
    data = json.loads(plan_json(_plans()["single"]))
    edit(data)
    return data


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.pop("pods"), r"plan: missing key `pods`"),
    (lambda d: d.update(podz=2), r"plan: unknown key\(s\) podz"),
    (lambda d: d.update(pods="2"), r"plan.pods: expected an integer, got '2'"),
    (lambda d: d.update(mode="fast"), r"plan.mode: expected one of single, split, fixed, got 'fast'"),
    (lambda d: d["stages"][0]["variants"][0].update(rps="x"),
     r"plan.stages\[0\].variants\[0\].rps: expected a number, got 'x'"),
    (lambda d: d.update(stages={}), r"plan.stages: expected a list, got dict"),
])
def test_bad_plans_are_rejected_with_the_field_named(edit, message):
    with pytest.raises(ConfigError, match=message):
        plan_from_dict(_broken(edit))


def test_configmap_name_is_a_valid_object_name():
    assert configmap_name("text_search") == "text-search-plan"
    assert configmap_name("ASR__Embed") == "asr-embed-plan"
