"""Pipeline spec: the YAML next to each ensemble, parsed once into frozen types.

`load_spec(path)` reads `ensembles/<P>/pipeline.yaml` (and `accuracy.yaml` beside it for the
variants whose accuracy is not inline) and either returns a `PipelineSpec` or raises one
`ConfigError` that lists *every* problem found, each with file, field and expectation.
Nothing half-valid reaches the planner.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import yaml

from adapter.errors import ConfigError


class Combine(str, Enum):
    """How stage accuracies make the pipeline accuracy (IPA's `accuracy_method`)."""

    PRODUCT = "product"
    SUM = "sum"
    MEAN = "mean"


class Normalize(str, Enum):
    """Per-stage accuracy normalisation before combining.

    RANK is IPA's: variants of a stage sorted by accuracy get rank/(n-1) in [0, 1] (a single
    variant gets 1). MINMAX maps (a - min)/(max - min). NONE uses measured accuracies as is.
    """

    RANK = "rank"
    MINMAX = "minmax"
    NONE = "none"


@dataclass(frozen=True, slots=True, kw_only=True)
class Resources:
    """What one instance of a variant needs (per pod), or what one pod offers."""

    cpu: float = 0.0
    gpu: float = 0.0
    memory_mb: float = 0.0

    @property
    def cost(self) -> float:
        """Cost units of this much resource: CPU cores + GPUs (weight it with `beta`)."""
        return self.cpu + self.gpu


@dataclass(frozen=True, slots=True, kw_only=True)
class VariantSpec:
    model: str  # Triton model name
    accuracy: float  # measured accuracy in [0, 1]
    resources: Resources  # per instance


@dataclass(frozen=True, slots=True, kw_only=True)
class StageSpec:
    name: str
    variants: tuple[VariantSpec, ...]
    batch_sizes: tuple[int, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Objective:
    """IPA's alpha*accuracy - beta*cost - gamma*batch, plus switching costs vs the current plan."""

    alpha: float = 1.0
    beta: float = 0.01
    gamma: float = 0.001
    switch_variant: float = 0.0  # per stage whose traffic moves fully to other variants
    switch_config: float = 0.0  # per changed max_batch_size / instance count / pod count


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    max_instances_per_stage: int = 4  # Triton instance_group.count, per pod
    max_pods: int = 1  # 1 = local mode; >1 = cluster mode (pods run every stage)
    pod: Resources = Resources(cpu=math.inf, gpu=math.inf, memory_mb=math.inf)


@dataclass(frozen=True, slots=True, kw_only=True)
class PipelineSpec:
    name: str
    ensemble: str
    sla_ms: float  # end-to-end p99
    stages: tuple[StageSpec, ...]
    combine: Combine = Combine.PRODUCT
    normalize: Normalize = Normalize.RANK
    objective: Objective = Objective()
    limits: Limits = Limits()
    headroom: float = 0.2  # capacity must be >= rps * (1 + headroom)
    split_steps: int = 10  # traffic-split granularity: shares are multiples of 1/split_steps
    source: str = "<spec>"

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(v.model for s in self.stages for v in s.variants)


# --------------------------------------------------------------------------------------------
# Validation. `_Check` collects problems; `parse_spec` raises once with all of them.

_TOP_KEYS = {
    "name", "ensemble", "sla_ms", "batch_sizes", "accuracy", "objective", "limits", "headroom",
    "split_steps", "stages",
}
_ACCURACY_KEYS = {"combine", "normalize"}
_OBJECTIVE_KEYS = {"alpha", "beta", "gamma", "switch_variant", "switch_config"}
_LIMIT_KEYS = {"max_instances_per_stage", "max_pods", "pod"}
_RESOURCE_KEYS = {"cpu", "gpu", "memory_mb"}
_STAGE_KEYS = {"name", "variants", "batch_sizes"}
_VARIANT_KEYS = {"model", "accuracy", "resources"}


class _Check:
    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[str] = []

    def add(self, field: str, expected: str, got: Any = None, *, show_got: bool = True) -> None:
        tail = f", got {got!r}" if show_got else ""
        self.problems.append(f"`{field}`: expected {expected}{tail}")

    def raise_if_any(self) -> None:
        if len(self.problems) == 1:
            raise ConfigError(f"{self.source}: {self.problems[0]}")
        if self.problems:
            lines = "\n".join(f"  - {p}" for p in self.problems)
            raise ConfigError(f"{self.source}: {len(self.problems)} problems:\n{lines}")

    def keys(self, data: dict, allowed: set[str], where: str) -> None:
        for key in data:
            if key not in allowed:
                near = difflib.get_close_matches(str(key), sorted(allowed), n=1)
                hint = f" (did you mean `{near[0]}`?)" if near else ""
                self.problems.append(
                    f"`{where}{key}`: unknown key{hint}; expected one of {sorted(allowed)}"
                )

    def mapping(self, data: Any, field: str, *, required: bool = False) -> dict:
        if data is None and not required:
            return {}
        if not isinstance(data, dict):
            self.add(field, "a mapping", data)
            return {}
        return data

    def string(self, data: dict, key: str, field: str) -> str:
        value = data.get(key)
        if not isinstance(value, str) or not value.strip():
            self.add(field, "a non-empty string", value)
            return ""
        return value

    def number(
        self, data: dict, key: str, field: str, *, default: float | None = None,
        low: float = 0.0, low_open: bool = False, high: float = math.inf,
    ) -> float:
        value = data.get(key, default)
        bounds = f"{'>' if low_open else '>='} {low:g}" + (f" and <= {high:g}" if high < math.inf else "")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            self.add(field, f"a number {bounds}", value)
            return default if default is not None else low
        if value < low or (low_open and value == low) or value > high:
            self.add(field, f"a number {bounds}", value)
        return float(value)

    def integer(self, data: dict, key: str, field: str, *, default: int | None = None, low: int = 1) -> int:
        value = data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            self.add(field, f"an integer >= {low}", value)
            return default if default is not None else low
        return value

    def choice(self, data: dict, key: str, field: str, enum: type[Enum], default: Enum) -> Any:
        value = data.get(key, default.value)
        try:
            return enum(value)
        except ValueError:
            self.add(field, "one of " + ", ".join(e.value for e in enum), value)
            return default

    def batch_sizes(self, value: Any, field: str) -> tuple[int, ...]:
        ok = (
            isinstance(value, list) and value
            and all(isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in value)
        )
        if not ok:
            self.add(field, "a non-empty list of integers >= 1", value)
            return (1,)
        if len(set(value)) != len(value):
            self.add(field, "no duplicate batch sizes", value)
        return tuple(sorted(set(value)))


def _resources(check: _Check, data: Any, field: str, *, pod: bool) -> Resources:
    data = check.mapping(data, field, required=not pod)
    check.keys(data, _RESOURCE_KEYS, field + ".")
    if pod:  # a missing pod limit is "unlimited"
        return Resources(
            cpu=check.number(data, "cpu", f"{field}.cpu", default=math.inf, low=0, low_open=True),
            gpu=check.number(data, "gpu", f"{field}.gpu", default=math.inf, low=0),
            memory_mb=check.number(data, "memory_mb", f"{field}.memory_mb", default=math.inf, low=0, low_open=True),
        )
    res = Resources(
        cpu=check.number(data, "cpu", f"{field}.cpu", default=0, low=0),
        gpu=check.number(data, "gpu", f"{field}.gpu", default=0, low=0),
        memory_mb=check.number(data, "memory_mb", f"{field}.memory_mb", default=0, low=0),
    )
    if isinstance(data, dict) and data and res.cost <= 0:
        check.add(field, "a positive `cpu` or `gpu` (cores or GPUs per instance)", data)
    return res


def _accuracy_table(path: Path | None) -> tuple[dict[str, float], list[str]]:
    """Read accuracy.yaml ({models: {name: {accuracy: float, ...}}}); return table + problems."""
    if path is None or not path.exists():
        return {}, []
    check = _Check(str(path))
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        return {}, [f"not valid YAML: {exc}"]
    models = check.mapping(check.mapping(data, "<top>", required=True).get("models"), "models", required=True)
    table = {}
    for name, entry in models.items():
        entry = check.mapping(entry, f"models.{name}", required=True)
        if "accuracy" in entry:
            table[str(name)] = check.number(entry, "accuracy", f"models.{name}.accuracy", low=0, high=1)
        else:
            check.add(f"models.{name}.accuracy", "a number in [0, 1]", None, show_got=False)
    return table, check.problems


def parse_spec(data: Any, *, source: str = "<spec>", accuracies: dict[str, float] | None = None,
               accuracy_source: str = "accuracy.yaml") -> PipelineSpec:
    """Validate a parsed YAML document into a PipelineSpec; raise ConfigError listing all problems."""
    check = _Check(source)
    accuracies = accuracies or {}
    top = check.mapping(data, "<top>", required=True)
    check.keys(top, _TOP_KEYS, "")
    name = check.string(top, "name", "name")
    ensemble = check.string(top, "ensemble", "ensemble")
    sla_ms = check.number(top, "sla_ms", "sla_ms", low=0, low_open=True)
    default_batches = check.batch_sizes(top.get("batch_sizes", [1]), "batch_sizes")
    headroom = check.number(top, "headroom", "headroom", default=0.2, low=0)
    split_steps = check.integer(top, "split_steps", "split_steps", default=10)

    acc = check.mapping(top.get("accuracy"), "accuracy")
    check.keys(acc, _ACCURACY_KEYS, "accuracy.")
    combine = check.choice(acc, "combine", "accuracy.combine", Combine, Combine.PRODUCT)
    normalize = check.choice(acc, "normalize", "accuracy.normalize", Normalize, Normalize.RANK)

    obj = check.mapping(top.get("objective"), "objective")
    check.keys(obj, _OBJECTIVE_KEYS, "objective.")
    d = Objective()
    objective = Objective(**{
        k: check.number(obj, k, f"objective.{k}", default=getattr(d, k), low=0) for k in sorted(_OBJECTIVE_KEYS)
    })

    lim = check.mapping(top.get("limits"), "limits")
    check.keys(lim, _LIMIT_KEYS, "limits.")
    limits = Limits(
        max_instances_per_stage=check.integer(lim, "max_instances_per_stage", "limits.max_instances_per_stage", default=4),
        max_pods=check.integer(lim, "max_pods", "limits.max_pods", default=1),
        pod=_resources(check, lim.get("pod"), "limits.pod", pod=True),
    )

    stages: list[StageSpec] = []
    raw_stages = top.get("stages")
    if not isinstance(raw_stages, list) or not raw_stages:
        check.add("stages", "a non-empty list of stages", raw_stages)
        raw_stages = []
    seen_stage: set[str] = set()
    seen_model: set[str] = set()
    for i, raw in enumerate(raw_stages):
        where = f"stages[{i}]"
        raw = check.mapping(raw, where, required=True)
        check.keys(raw, _STAGE_KEYS, where + ".")
        sname = check.string(raw, "name", f"{where}.name")
        if sname and sname in seen_stage:
            check.add(f"{where}.name", "a stage name used once", sname)
        seen_stage.add(sname)
        batches = check.batch_sizes(raw["batch_sizes"], f"{where}.batch_sizes") if "batch_sizes" in raw else default_batches
        variants = []
        raw_variants = raw.get("variants")
        if not isinstance(raw_variants, list) or not raw_variants:
            check.add(f"{where}.variants", "a non-empty list of variants", raw_variants)
            raw_variants = []
        for j, rv in enumerate(raw_variants):
            vwhere = f"{where}.variants[{j}]"
            rv = check.mapping(rv, vwhere, required=True)
            check.keys(rv, _VARIANT_KEYS, vwhere + ".")
            model = check.string(rv, "model", f"{vwhere}.model")
            if model and model in seen_model:
                check.add(f"{vwhere}.model", "a Triton model used once in the pipeline", model)
            seen_model.add(model)
            if "accuracy" in rv:
                accuracy = check.number(rv, "accuracy", f"{vwhere}.accuracy", low=0, high=1)
            elif model in accuracies:
                accuracy = accuracies[model]
            else:
                accuracy = 0.0
                if model:
                    check.add(f"{vwhere}.accuracy",
                              f"an inline `accuracy` or an entry for `{model}` in {accuracy_source}",
                              None, show_got=False)
            res = _resources(check, rv.get("resources"), f"{vwhere}.resources", pod=False)
            pod = limits.pod
            if res.cpu > pod.cpu or res.gpu > pod.gpu or res.memory_mb > pod.memory_mb:
                check.add(f"{vwhere}.resources", "at most one pod's resources (`limits.pod`)",
                          {"cpu": res.cpu, "gpu": res.gpu, "memory_mb": res.memory_mb})
            variants.append(VariantSpec(model=model, accuracy=accuracy, resources=res))
        stages.append(StageSpec(name=sname, variants=tuple(variants), batch_sizes=batches))
    check.raise_if_any()
    return PipelineSpec(
        name=name, ensemble=ensemble, sla_ms=sla_ms, stages=tuple(stages), combine=combine,
        normalize=normalize, objective=objective, limits=limits, headroom=headroom,
        split_steps=split_steps, source=source,
    )


def load_spec(path: str | Path, *, accuracy_path: str | Path | None = None) -> PipelineSpec:
    """Load and validate a pipeline spec; accuracies default to `accuracy.yaml` beside it."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read pipeline spec: {exc.strerror or exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    acc_path = Path(accuracy_path) if accuracy_path is not None else path.parent / "accuracy.yaml"
    table, acc_problems = _accuracy_table(acc_path)
    if acc_problems:
        failed = _Check(str(acc_path))
        failed.problems = acc_problems
        failed.raise_if_any()
    return parse_spec(data, source=str(path), accuracies=table, accuracy_source=str(acc_path))
