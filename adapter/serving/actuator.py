"""Triton actuator: make the live server match a plan, by level (reconcile), with zero downtime.

    desired = desired_state(plan, ensemble_max_batch)      pure
    observed = TritonActuator.observe()                     reads Triton
    actions = diff(desired, observed)                       pure; [] when nothing differs
    TritonActuator.apply(actions)                           writes Triton, rolls back on failure

Order of the actions is what keeps requests from failing: a variant is loaded (or reloaded in
place, over gRPC) before the ensemble points at it; variants it no longer uses are unloaded
last, after their in-flight requests finish. Stages change one at a time, the quickest first
(expected load times from the profiles), each re-pointed in one config override as soon as its
model is ready, so a slow load does not delay a quick change that restores capacity. A change of
instances alone Triton applies in place (it starts or stops instances, the rest keep serving);
a queue policy within 25 % of the applied one is kept so that it does not turn such a change
into a reload.

Batch sizes: the planner's batch b becomes the dynamic batcher's preferred size with the planned
queue delay, while max_batch_size stays >= the ensemble's: a member whose max_batch_size drops
below the ensemble's makes Triton unload the ensemble (measured: thousands of failed requests).

Admission: each member gets the queue policy of `core.admission` for the plan and the mode (by
default a timeout that rejects what has waited too long to finish within the SLA; mode BOUNDED
also bounds the queue, mode OFF leaves it unbounded). A changed policy is a reconfiguration like
a batching change (an in-place reload over gRPC); the ensemble itself has no queue and passes
its members' rejections to the client.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from adapter.core.admission import DEFAULT, UNBOUNDED, Admission, QueuePolicy, queue_policies, same_rule
from adapter.core.plan import Plan
from adapter.core.profile import Profiles, reconfiguration_s
from adapter.errors import AdapterError, ServerError
from adapter.serving.repository import ModelRepository, configured, read_config_pbtxt

log = logging.getLogger(__name__)


@dataclass(frozen=True, order=True)
class ModelSettings:
    """The knobs the adapter owns in a member model's config."""

    instances: int
    max_batch_size: int
    preferred_batch_size: int
    max_queue_delay_us: int
    queue: QueuePolicy = UNBOUNDED  # dynamic_batching.default_queue_policy


@dataclass(frozen=True)
class DesiredState:
    ensemble: str
    steps: tuple[str, ...]  # the model each ensemble step runs, in step order
    models: dict[str, ModelSettings]  # every model that must be loaded, with its settings


@dataclass(frozen=True)
class ObservedState:
    ensemble_steps: tuple[str, ...]
    ready: frozenset[str]
    settings: dict[str, ModelSettings]  # for ready models the adapter manages
    configs: dict[str, dict[str, Any]] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class LoadModel:
    model: str
    settings: ModelSettings
    reason: str  # "new" | "reconfigure" (a reload) | "update" (instances only, in place)


@dataclass(frozen=True)
class RepointEnsemble:
    ensemble: str
    steps: tuple[str, ...]


@dataclass(frozen=True)
class UnloadModel:
    model: str


Action = LoadModel | RepointEnsemble | UnloadModel


class ActuationError(ServerError):
    """A change failed; the server was rolled back to the configuration it served before.
    `model`: the variant whose load failed, where that was the failure."""

    def __init__(self, message: str, model: str | None = None):
        super().__init__(message)
        self.model = model


def desired_state(plan: Plan, ensemble: str, ensemble_max_batch: int,
                  admission: Admission | str = DEFAULT) -> DesiredState:
    """The plan as Triton settings, each member's queue policy by `admission`."""
    policies = queue_policies(plan, admission)
    models = {}
    steps = []
    for stage in plan.stages:
        if len(stage.variants) != 1:
            raise ServerError(f"stage {stage.stage}: a traffic split across "
                              f"{len(stage.variants)} variants needs a router model; the Triton "
                              f"actuator applies single-variant plans")
        v = stage.variants[0]
        models[v.model] = ModelSettings(
            instances=v.instances, max_batch_size=max(v.max_batch_size, ensemble_max_batch),
            preferred_batch_size=v.max_batch_size, max_queue_delay_us=v.max_queue_delay_us,
            queue=policies.get(v.model, UNBOUNDED))
        steps.append(v.model)
    return DesiredState(ensemble=ensemble, steps=tuple(steps), models=models)


def settings_of(config: dict[str, Any]) -> ModelSettings:
    batching = config.get("dynamic_batching") or {}
    preferred = [int(p) for p in batching.get("preferred_batch_size", [])]
    max_batch = int(config.get("max_batch_size", 0))
    return ModelSettings(
        instances=sum(int(g.get("count", 1)) for g in config.get("instance_group", [])) or 1,
        max_batch_size=max_batch,
        preferred_batch_size=preferred[0] if len(preferred) == 1 else max_batch,
        max_queue_delay_us=int(batching.get("max_queue_delay_microseconds", 0)),
        queue=queue_policy_of(batching.get("default_queue_policy") or {}))


def queue_policy_of(policy: dict[str, Any]) -> QueuePolicy:
    """Triton's default_queue_policy in JSON form (as the repository API reports it: fields at
    their default are left out, uint64 values are strings) -> QueuePolicy."""
    return QueuePolicy(max_queue_size=int(policy.get("max_queue_size", 0)),
                       timeout_us=int(policy.get("default_timeout_microseconds", 0)),
                       timeout_action=str(policy.get("timeout_action", "REJECT")),
                       allow_timeout_override=bool(policy.get("allow_timeout_override", False)))


def queue_policy_json(q: QueuePolicy) -> dict[str, Any]:
    return {"max_queue_size": q.max_queue_size, "default_timeout_microseconds": q.timeout_us,
            "timeout_action": q.timeout_action, "allow_timeout_override": q.allow_timeout_override}


def with_settings(config: dict[str, Any], s: ModelSettings) -> dict[str, Any]:
    out = configured(config, instances=s.instances, max_batch_size=s.max_batch_size,
                     max_queue_delay_us=s.max_queue_delay_us)
    out["dynamic_batching"]["preferred_batch_size"] = [s.preferred_batch_size]
    if s.queue == UNBOUNDED:
        out["dynamic_batching"].pop("default_queue_policy", None)
    else:
        out["dynamic_batching"]["default_queue_policy"] = queue_policy_json(s.queue)
    return out


def describe(s: ModelSettings) -> str:
    queue = (", no queue policy" if s.queue == UNBOUNDED else
             f", queue <= {s.queue.max_queue_size or 'any'}, timeout {s.queue.timeout_us / 1000:g} ms")
    return (f"{s.instances} instance(s), batch {s.preferred_batch_size} (max {s.max_batch_size}), "
            f"queue delay {s.max_queue_delay_us} us{queue}")


def in_place(before: ModelSettings | None, after: ModelSettings) -> bool:
    """Whether Triton applies `after` over `before` without reloading the model: only the
    instance count differs (Triton then starts or stops instances and keeps the rest serving)."""
    return before is not None and replace(before, instances=after.instances) == after


def no_seconds(model: str, instances: int, before: int | None) -> float:
    return 0.0


def diff(desired: DesiredState, observed: ObservedState, managed: frozenset[str],
         seconds: Callable[[str, int, int | None], float] = no_seconds) -> list[Action]:
    """What to do, in a safe order, to go from observed to desired. `managed` are the variant
    models the adapter may unload (every variant of the pipeline); `seconds(model, instances,
    before)` the expected time of a load (`before`: the instances kept by an in-place update).

    Stage by stage, the quickest change first, each stage's step re-pointed as soon as its model
    is ready: stages are independent steps of the ensemble, so a 7 s load never holds back a
    quick change that restores capacity (shortest first also minimises the mean time until each
    stage serves its new plan). Variants no longer used are unloaded last."""
    changes = []  # (expected seconds, stage index, load or None, re-point needed)
    for i, model in enumerate(desired.steps):
        settings = desired.models[model]
        before = observed.settings.get(model) if model in observed.ready else None
        if before is not None and same_rule(before.queue, settings.queue):
            settings = replace(settings, queue=before.queue)  # not worth a reload on its own
        load = None
        if model not in observed.ready:
            load, cost = LoadModel(model, settings, "new"), seconds(model, settings.instances, None)
        elif before != settings:
            update = in_place(before, settings)
            load = LoadModel(model, settings, "update" if update else "reconfigure")
            cost = seconds(model, settings.instances, before.instances if update else None)
        repoint = i >= len(observed.ensemble_steps) or observed.ensemble_steps[i] != model
        if load or repoint:
            changes.append((cost if load else 0.0, i, load, repoint))
    actions: list[Action] = []
    steps = list(observed.ensemble_steps)
    for _, i, load, repoint in sorted(changes, key=lambda c: c[:2]):
        if load:
            actions.append(load)
        if repoint and len(steps) == len(desired.steps):
            steps[i] = desired.steps[i]
            actions.append(RepointEnsemble(desired.ensemble, tuple(steps)))
    if tuple(steps) != desired.steps:  # a different number of steps: one re-point after the loads
        actions.append(RepointEnsemble(desired.ensemble, desired.steps))
    for model in sorted((observed.ready & managed) - set(desired.models)):
        actions.append(UnloadModel(model))
    return actions


class TritonActuator:
    def __init__(self, repository: ModelRepository, ensemble: str, variants: list[str],
                 model_repository: Path, admission: Admission | str = DEFAULT,
                 profiles: Profiles | None = None, default_load_s: float = 2.0):
        self.repository = repository
        self.profiles, self.default_load_s = profiles, default_load_s  # to order changes
        self.admission = Admission(admission)  # each member's queue policy (core.admission)
        self.ensemble = ensemble
        self.variants = frozenset(variants)
        self.model_repository = model_repository  # config.pbtxt of variants not loaded yet
        self._base_configs: dict[str, dict[str, Any]] = {}

    def observe(self) -> ObservedState:
        states = self.repository.states()
        ready = frozenset(m for m, s in states.items() if s == "READY")
        if self.ensemble not in ready:
            raise ServerError(f"ensemble {self.ensemble} is not READY on Triton "
                              f"({states.get(self.ensemble, 'absent')})")
        ensemble_config = self.repository.config(self.ensemble)
        steps = tuple(step["model_name"] for step in
                      ensemble_config["ensemble_scheduling"]["step"])
        configs = {m: self.repository.config(m) for m in ready & self.variants}
        self._base_configs.update(configs)
        self._base_configs[self.ensemble] = ensemble_config
        return ObservedState(ensemble_steps=steps, ready=ready,
                             settings={m: settings_of(c) for m, c in configs.items()},
                             configs=configs)

    def ensemble_max_batch(self) -> int:
        if self.ensemble not in self._base_configs:
            self._base_configs[self.ensemble] = self.repository.config(self.ensemble)
        return int(self._base_configs[self.ensemble].get("max_batch_size", 0))

    def _config_for(self, model: str) -> dict[str, Any]:
        if model not in self._base_configs:  # not loaded yet: its config.pbtxt is the base
            self._base_configs[model] = read_config_pbtxt(
                self.model_repository / model / "config.pbtxt")
        return self._base_configs[model]

    def _repoint(self, steps: tuple[str, ...]) -> None:
        config = dict(self._base_configs[self.ensemble])
        scheduling = config["ensemble_scheduling"]
        new_steps = [dict(step, model_name=model) for step, model in zip(scheduling["step"], steps)]
        config["ensemble_scheduling"] = dict(scheduling, step=new_steps)
        self.repository.load(self.ensemble, config)
        self._base_configs[self.ensemble] = config

    def apply(self, actions: list[Action], observed: ObservedState) -> list[str]:
        """Apply in order. On a failure, undo what this call changed (reverse order) and raise
        ActuationError; the server is then serving the previous configuration again."""
        undo: list[tuple[str, Any]] = []
        done: list[str] = []
        for action in actions:
            start = time.perf_counter()
            try:
                if isinstance(action, LoadModel):
                    base = self._config_for(action.model)
                    previous = observed.configs.get(action.model)
                    self.repository.load(action.model, with_settings(base, action.settings))
                    undo.append(("restore", (action.model, previous)))
                    what = f"{action.reason} {action.model}: {describe(action.settings)}"
                elif isinstance(action, RepointEnsemble):
                    undo.append(("repoint", observed.ensemble_steps))
                    self._repoint(action.steps)
                    what = f"ensemble {action.ensemble} -> {' -> '.join(action.steps)}"
                else:
                    self.repository.unload(action.model)
                    self._base_configs.pop(action.model, None)
                    what = f"unloaded {action.model}"
            except AdapterError as exc:  # a server refusal, or a variant's unreadable config
                self._rollback(undo)
                raise ActuationError(f"{exc}; rolled back {len(undo)} earlier change(s), "
                                     f"the previous configuration is serving",
                                     model=action.model if isinstance(action, LoadModel) else None) from exc
            done.append(f"{what} ({(time.perf_counter() - start) * 1000:.0f} ms)")
            log.info("applied: %s", done[-1])
        return done

    def _rollback(self, undo: list[tuple[str, Any]]) -> None:
        for kind, arg in reversed(undo):
            try:
                if kind == "repoint":
                    self._repoint(arg)
                else:
                    model, previous = arg
                    if previous is None:
                        self.repository.unload(model)  # it was not loaded before this apply
                    else:
                        self.repository.load(model, previous)
                        self._base_configs[model] = previous
            except ServerError as exc:  # keep undoing the rest; report what could not be
                log.error("rollback step %s %s failed: %s", kind, arg, exc)

    def _seconds(self, model: str, instances: int, before: int | None) -> float:
        if self.profiles is None:
            return 0.0
        return reconfiguration_s(self.profiles, model, instances, before, self.default_load_s)

    def reconcile(self, plan: Plan, passes: int = 2) -> list[str]:
        """Observe, diff, apply; then check, since Triton may reload an ensemble's members from
        disk when the ensemble is loaded. Returns what was done ([] when nothing differed)."""
        desired = None
        done: list[str] = []
        for _ in range(passes):
            observed = self.observe()
            desired = desired or desired_state(plan, self.ensemble, self.ensemble_max_batch(),
                                               admission=self.admission)
            actions = diff(desired, observed, self.variants, self._seconds)
            if not actions:
                break
            done += self.apply(actions, observed)
        return done
