"""The published plan: a ConfigMap `<pipeline>-plan` holding `plan.json` (Plan.to_dict()) and a
`generation` that goes up by one with every change. The leader writes it; every sidecar reads it.

Writes replace the object with the resourceVersion that was read (optimistic concurrency): a
409 means someone wrote in between, so the store re-reads and tries again. Publishing the plan
already published writes nothing.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import MISSING, dataclass, fields
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from adapter.cluster.kube import REQUEST_TIMEOUT_S, with_retries
from adapter.core.plan import Mode, Plan, Reason, StagePlan, VariantPlan
from adapter.errors import ConfigError, ServerError

log = logging.getLogger(__name__)

PLAN_KEY = "plan.json"
GENERATION_KEY = "generation"


# -- Plan <-> dict ---------------------------------------------------------------------------

def _build(cls, data: Any, where: str, nested: dict[str, Any] | None = None):
    """One frozen plan dataclass from its to_dict() form. Unknown or missing keys are errors;
    a float field that to_dict() wrote as null (inf or nan) comes back as inf."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected an object, got {type(data).__name__}")
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")
    kwargs = {}
    for f in fields(cls):
        if f.name not in data:
            if f.default is MISSING:
                raise ConfigError(f"{where}: missing key `{f.name}`")
            continue
        value = data[f.name]
        if nested and f.name in nested:
            value = nested[f.name](value, f"{where}.{f.name}")
        elif f.type in ("float", float):
            value = math.inf if value is None else _number(value, f"{where}.{f.name}")
        elif f.type in ("int", int):
            if not isinstance(value, int) or isinstance(value, bool):
                raise ConfigError(f"{where}.{f.name}: expected an integer, got {value!r}")
        elif f.name == "mode":
            value = _enum(Mode, value, f"{where}.mode")
        elif f.name == "reason":
            value = _enum(Reason, value, f"{where}.reason")
        elif f.type in ("float | None",):
            value = None if value is None else _number(value, f"{where}.{f.name}")
        kwargs[f.name] = value
    return cls(**kwargs)


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    return float(value)


def _enum(cls, value: Any, where: str):
    try:
        return cls(value)
    except ValueError:
        raise ConfigError(f"{where}: expected one of {', '.join(m.value for m in cls)}, "
                          f"got {value!r}") from None


def _tuple_of(cls, nested=None):
    def convert(value: Any, where: str):
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        return tuple(_build(cls, item, f"{where}[{i}]", nested) for i, item in enumerate(value))
    return convert


def plan_from_dict(data: Any, where: str = "plan") -> Plan:
    """The inverse of Plan.to_dict(): plan_from_dict(p.to_dict()).to_dict() == p.to_dict()."""
    stages = _tuple_of(StagePlan, {"variants": _tuple_of(VariantPlan)})
    return _build(Plan, data, where, {"stages": stages})


def plan_json(plan: Plan) -> str:
    return json.dumps(plan.to_dict(), sort_keys=True, separators=(",", ":"))


# -- the ConfigMap ---------------------------------------------------------------------------

def configmap_name(pipeline: str) -> str:
    """`<pipeline>-plan` as a valid object name (text_search -> text-search-plan)."""
    name = re.sub(r"[^a-z0-9-]+", "-", pipeline.lower()).strip("-")
    return f"{name}-plan"


@dataclass(frozen=True)
class PublishedPlan:
    generation: int
    plan: Plan
    text: str  # plan.json as stored


class PlanStore:
    def __init__(self, api: client.CoreV1Api, namespace: str, pipeline: str, attempts: int = 4):
        self.api, self.namespace = api, namespace
        self.name = configmap_name(pipeline)
        self.attempts = attempts

    @property
    def where(self) -> str:
        return f"configmap {self.namespace}/{self.name}"

    def _read(self) -> client.V1ConfigMap | None:
        try:
            return self.api.read_namespaced_config_map(self.name, self.namespace,
                                                       _request_timeout=REQUEST_TIMEOUT_S)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def read(self) -> PublishedPlan | None:
        """The published plan, or None when nothing is published yet. Raises ServerError when
        the API cannot be read (after retries) or the object holds no valid plan."""
        cm = with_retries(f"read {self.where}", self._read, attempts=self.attempts)
        data = (cm.data or {}) if cm is not None else {}
        if PLAN_KEY not in data:
            return None
        try:
            plan = plan_from_dict(json.loads(data[PLAN_KEY]), f"{self.where} {PLAN_KEY}")
            generation = int(data.get(GENERATION_KEY, "0"))
        except (ValueError, ConfigError) as exc:
            raise ServerError(f"{self.where} holds no valid plan: {exc}") from None
        return PublishedPlan(generation, plan, data[PLAN_KEY])

    def publish(self, plan: Plan) -> int | None:
        """Publish `plan`; the new generation, or None when it was already published."""
        text = plan_json(plan)

        def attempt() -> int | None:
            cm = self._read()
            data = dict((cm.data or {}) if cm is not None else {})
            if data.get(PLAN_KEY) == text:
                return None
            try:
                generation = int(data.get(GENERATION_KEY, "0")) + 1
            except ValueError:
                generation = 1
            body = {"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": self.name, "namespace": self.namespace},
                    "data": {**data, PLAN_KEY: text, GENERATION_KEY: str(generation)}}
            if cm is None:
                self.api.create_namespaced_config_map(self.namespace, body,
                                                      _request_timeout=REQUEST_TIMEOUT_S)
            else:
                body["metadata"].update(resourceVersion=cm.metadata.resource_version,
                                        labels=cm.metadata.labels,
                                        annotations=cm.metadata.annotations)
                self.api.replace_namespaced_config_map(self.name, self.namespace, body,
                                                       _request_timeout=REQUEST_TIMEOUT_S)
            return generation

        generation = with_retries(f"publish the plan to {self.where}", attempt,
                                  attempts=self.attempts)
        if generation is not None:
            log.info("published plan generation %d to %s", generation, self.where)
        return generation
