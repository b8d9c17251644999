"""Shared fixtures. `triton` is one real local Triton for the whole session, serving every
variant and the ensembles (started by the product's own launcher)."""

from __future__ import annotations

import pytest

from adapter import paths
from adapter.core.plan import Mode, Plan, Reason, StagePlan, VariantPlan
from adapter.serving.launcher import LocalTriton


@pytest.fixture(scope="session")
def triton(tmp_path_factory):
    server = LocalTriton(log_path=tmp_path_factory.mktemp("triton") / "triton.log")
    server.start()
    yield server
    server.stop()


def small_spec(embed_variants=(("embed_l3_int8", 0.36), ("embed_l3", 0.38)), *,
               max_instances_per_stage: int = 2, max_pods: int = 1) -> dict:
    """A text_search spec (as parsed YAML) over the small Triton's variants, 1 core each."""
    def variants(pairs):
        return [{"model": m, "accuracy": a, "resources": {"cpu": 1}} for m, a in pairs]

    return {
        "name": "text_search", "ensemble": "text_search", "sla_ms": 150, "batch_sizes": [1, 2, 4, 8],
        "objective": {"alpha": 1.0, "beta": 0.05, "gamma": 0.002},
        "limits": {"max_instances_per_stage": max_instances_per_stage, "max_pods": max_pods,
                   "pod": {"cpu": 2}},
        "stages": [
            {"name": "langid", "variants": variants((("langid_cld2", 0.83), ("langid_fasttext", 0.90)))},
            {"name": "embed", "variants": variants(embed_variants)},
        ]}


SMALL_VARIANTS = ["langid_cld2", "langid_fasttext", "embed_l3_int8", "embed_l3", "embed_broken"]

BROKEN_MODEL = '''
class TritonPythonModel:
    def initialize(self, args):
        raise RuntimeError("embed_broken cannot load (test)")
'''


@pytest.fixture(scope="module")
def small_triton(tmp_path_factory):
    """A Triton of its own (one per test module) serving a few variants, one that cannot load,
    and the text_search ensemble: for tests that load, unload or stop what the shared one must
    keep."""
    root = tmp_path_factory.mktemp("actuator")
    models = root / "models"
    models.mkdir()
    for name in SMALL_VARIANTS[:-1]:
        (models / name).symlink_to(paths.MODEL_REPOSITORY / name)
    broken = models / "embed_broken"
    (broken / "1").mkdir(parents=True)
    (broken / "config.pbtxt").write_text(
        (paths.MODEL_REPOSITORY / "embed_l3" / "config.pbtxt").read_text()
        .replace('name: "embed_l3"', 'name: "embed_broken"'))
    (broken / "1" / "model.py").write_text(BROKEN_MODEL)
    server = LocalTriton(repositories=[models, paths.ENSEMBLES], log_path=root / "triton.log",
                         models=["langid_fasttext", "embed_l3", "text_search"])
    server.start()
    yield server, models
    server.stop()


def make_plan(*stages: tuple[str, str, int, int, int]) -> Plan:
    """stages: (stage, model, batch, instances, queue delay us); the rest is not actuated."""
    stage_plans = tuple(
        StagePlan(stage=name, variants=(VariantPlan(
            model=model, share=1.0, max_batch_size=batch, max_queue_delay_us=delay,
            instances=instances, rps=10.0, predicted_p99_ms=10.0, capacity_rps=100.0),),
            predicted_p99_ms=10.0, capacity_rps=100.0, accuracy=0.9, accuracy_score=1.0, cost=1.0)
        for name, model, batch, instances, delay in stages)
    return Plan(pipeline="text_search", mode=Mode.SINGLE, rps=10.0, sla_ms=150.0, pods=1,
                stages=stage_plans, objective=0.0, predicted_p99_ms=20.0, accuracy=0.8,
                accuracy_score=1.0, cost=2.0, feasible=True, reason=Reason.OPTIMAL, message="",
                solver="test")
