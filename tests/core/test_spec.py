"""Pipeline spec loading: every error names file, field and expectation; all are reported."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

from adapter import paths
from adapter.core.spec import Combine, Normalize, load_spec, parse_spec
from adapter.errors import ConfigError

GOOD = {
    "name": "demo",
    "ensemble": "demo",
    "sla_ms": 100,
    "batch_sizes": [1, 4],
    "accuracy": {"combine": "sum", "normalize": "none"},
    "objective": {"alpha": 1, "beta": 0.1, "gamma": 0.01},
    "limits": {"max_instances_per_stage": 3, "max_pods": 2, "pod": {"cpu": 4, "memory_mb": 1000}},
    "stages": [
        {"name": "a", "variants": [{"model": "a1", "accuracy": 0.5, "resources": {"cpu": 1}},
                                   {"model": "a2", "resources": {"cpu": 2, "memory_mb": 100}}]},
        {"name": "b", "batch_sizes": [2], "variants": [{"model": "b1", "accuracy": 0.9, "resources": {"gpu": 1}}]},
    ],
}


def _with(path: str, value, *, delete: bool = False) -> dict:
    data = copy.deepcopy(GOOD)
    keys = [int(k) if k.isdigit() else k for k in path.split(".")]
    node = data
    for k in keys[:-1]:
        node = node[k]
    if delete:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return data


def test_good_spec_parses_with_accuracy_table():
    spec = parse_spec(GOOD, source="demo.yaml", accuracies={"a2": 0.7})
    assert spec.combine is Combine.SUM and spec.normalize is Normalize.NONE
    assert [s.name for s in spec.stages] == ["a", "b"]
    assert spec.stages[0].variants[1].accuracy == 0.7  # from accuracy.yaml
    assert spec.stages[1].batch_sizes == (2,) and spec.stages[0].batch_sizes == (1, 4)
    assert spec.limits.pod.cpu == 4 and spec.limits.max_pods == 2
    assert spec.stages[1].variants[0].resources.cost == 1.0


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (_with("sla_ms", -5), r"demo\.yaml: `sla_ms`: expected a number > 0, got -5"),
        (_with("sla_ms", "fast"), r"`sla_ms`: expected a number > 0, got 'fast'"),
        (_with("name", None, delete=True), r"`name`: expected a non-empty string, got None"),
        (_with("slaa_ms", 3), r"`slaa_ms`: unknown key \(did you mean `sla_ms`\?\)"),
        (_with("accuracy.combine", "multiply"), r"`accuracy.combine`: expected one of product, sum, mean, got 'multiply'"),
        (_with("accuracy.normalise", "rank"), r"`accuracy.normalise`: unknown key \(did you mean `normalize`\?\)"),
        (_with("objective.beta", -1), r"`objective.beta`: expected a number >= 0, got -1"),
        (_with("objective.gama", 1), r"`objective.gama`: unknown key \(did you mean `gamma`\?\)"),
        (_with("limits.max_pods", 0), r"`limits.max_pods`: expected an integer >= 1, got 0"),
        (_with("limits.pod.cpus", 2), r"`limits.pod.cpus`: unknown key \(did you mean `cpu`\?\)"),
        (_with("batch_sizes", [1, 1]), r"`batch_sizes`: expected no duplicate batch sizes, got \[1, 1\]"),
        (_with("batch_sizes", [0]), r"`batch_sizes`: expected a non-empty list of integers >= 1, got \[0\]"),
        (_with("stages", []), r"`stages`: expected a non-empty list of stages, got \[\]"),
        (_with("stages.1.name", "a"), r"`stages\[1\].name`: expected a stage name used once, got 'a'"),
        (_with("stages.1.variants.0.model", "a1"), r"`stages\[1\].variants\[0\].model`: expected a Triton model used once"),
        (_with("stages.0.variants.0.accuracy", 1.5), r"`stages\[0\].variants\[0\].accuracy`: expected a number >= 0 and <= 1, got 1.5"),
        (_with("stages.0.variants.1.accuracy", None, delete=False) | {}, r"`stages\[0\].variants\[1\].accuracy`: expected a number"),
        (_with("stages.0.variants.0.resources", {"cpu": 0}), r"`stages\[0\].variants\[0\].resources`: expected a positive `cpu` or `gpu`"),
        (_with("stages.0.variants.0.resources", {"cpu": 8}), r"`stages\[0\].variants\[0\].resources`: expected at most one pod's resources"),
        (_with("stages.0.variants.0.resources", None, delete=True), r"`stages\[0\].variants\[0\].resources`: expected a mapping, got None"),
        (_with("stages.0.variants.0.modle", "x"), r"`stages\[0\].variants\[0\].modle`: unknown key \(did you mean `model`\?\)"),
    ],
)
def test_bad_spec_is_rejected_with_field_and_expectation(data, match):
    with pytest.raises(ConfigError, match=match):
        parse_spec(data, source="demo.yaml", accuracies={"a2": 0.7})


def test_missing_accuracy_names_the_variant_and_the_accuracy_file():
    with pytest.raises(ConfigError, match=r"`stages\[0\]\.variants\[1\]\.accuracy`: expected an inline `accuracy` "
                                          r"or an entry for `a2` in acc\.yaml"):
        parse_spec(GOOD, source="demo.yaml", accuracies={}, accuracy_source="acc.yaml")


def test_all_problems_are_reported_at_once():
    data = _with("sla_ms", 0)
    data["objective"]["alpha"] = -1
    data["stages"][1]["variants"][0]["resources"] = {"gpu": 0}
    with pytest.raises(ConfigError) as info:
        parse_spec(data, source="demo.yaml", accuracies={"a2": 0.7})
    text = str(info.value)
    assert text.startswith("demo.yaml: 3 problems:")
    assert "`sla_ms`" in text and "`objective.alpha`" in text and "`stages[1].variants[0].resources`" in text


def test_load_spec_reads_accuracy_yaml_beside_it(tmp_path: Path):
    (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump(GOOD))
    (tmp_path / "accuracy.yaml").write_text(yaml.safe_dump({"models": {"a2": {"accuracy": 0.61, "metric": "acc", "n": 9}}}))
    spec = load_spec(tmp_path / "pipeline.yaml")
    assert spec.stages[0].variants[1].accuracy == 0.61
    assert spec.source == str(tmp_path / "pipeline.yaml")


@pytest.mark.parametrize(
    ("pipeline", "accuracy", "match"),
    [
        ("name: [", None, r"pipeline\.yaml: not valid YAML"),
        (None, {"models": {"a2": {"metric": "acc"}}}, r"accuracy\.yaml: `models\.a2\.accuracy`: expected a number in \[0, 1\]"),
        (None, {"models": {"a2": {"accuracy": 7}}}, r"accuracy\.yaml: `models\.a2\.accuracy`: expected a number >= 0 and <= 1, got 7"),
        (None, {"modells": {}}, r"accuracy\.yaml: `models`: expected a mapping, got None"),
    ],
)
def test_load_spec_file_errors(tmp_path: Path, pipeline, accuracy, match):
    (tmp_path / "pipeline.yaml").write_text(pipeline if pipeline is not None else yaml.safe_dump(GOOD))
    if accuracy is not None:
        (tmp_path / "accuracy.yaml").write_text(yaml.safe_dump(accuracy))
    with pytest.raises(ConfigError, match=match):
        load_spec(tmp_path / "pipeline.yaml")


def test_missing_spec_file():
    with pytest.raises(ConfigError, match=r"nope\.yaml: cannot read pipeline spec"):
        load_spec("nope.yaml")


def test_text_search_spec_is_valid():
    spec = load_spec(paths.ENSEMBLES / "text_search" / "pipeline.yaml")
    assert spec.name == "text_search" and spec.ensemble == "text_search"
    assert [s.name for s in spec.stages] == ["langid", "embed"]
    assert [v.model for v in spec.stages[0].variants] == [
        "langid_cld2", "langid_fasttext", "langid_lingua_low", "langid_langidpy", "langid_lingua_high"]
    assert [v.model for v in spec.stages[1].variants] == ["embed_l3_int8", "embed_l3", "embed_l6_int8"]
    assert all(0 < v.accuracy <= 1 for s in spec.stages for v in s.variants)
    assert spec.combine is Combine.PRODUCT and spec.limits.pod.cpu == 2 and spec.limits.max_pods == 1
    assert re.search(r"text_search/pipeline\.yaml$", spec.source)
