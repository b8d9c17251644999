"""Admission: reject at once what cannot be served within the SLA, instead of queueing it.

When the load exceeds what the plan serves, an unbounded queue answers every request, late:
the excess waits for seconds and every request behind it misses the SLA too. Triton's queue
policy (`dynamic_batching.default_queue_policy` of each member model) bounds the queue and
rejects what waited too long, so the requests it admits are answered in time and the excess is
refused at once with a clear error the client counts as *shed*.

The rule, per stage s of a plan (pure; applied when a plan is actuated):

    budget_s  = T_s + (sla_ms - sum of T_t over all stages t) / stages
                                               T_t = S_t + delay_t of t's slowest variant: each
                                               stage's own batch time plus an equal share of the
                                               slack the SLA leaves over them. The budgets add up
                                               to the SLA, so a request admitted at every stage
                                               is in time even when several stages are saturated
                                               at once; a slow stage is not starved by an equal
                                               split of the SLA. Configuration only (not the
                                               load); another stage's change moves the slack by
                                               1/stages of its batch time, which the 25 %
                                               tolerance of `same_rule` absorbs, so no reload
                                               cascades from stage to stage.
    S         = n * B * 1000 / (capacity / pods)
                                               service time of one batch of B on one of the n
                                               instances of a pod while all n are busy: the n
                                               instances serve n*B requests per S, which is the
                                               planned capacity (the rate they drain a queue at,
                                               as the planner's stage model defines it)
    wait      = max(budget_s - S, S + delay)   the longest a request may queue at the stage and
                                               still finish it within its budget; never less
                                               than one batch delay plus one service time (what
                                               any request may wait for a busy instance at the
                                               plan's own load, even when the plan's p99 exceeds
                                               the SLA: then the plan serves, late, rather than
                                               refusing everything)
    rounds    = floor(wait / S)                batches each instance completes within that wait
                                               counted from the worst moment (all instances just
                                               started a batch)
    max_queue_size             = rounds * n * B     (>= one batch: rounds >= 1; mode BOUNDED only)
    default_timeout_microseconds = wait
    timeout_action REJECT, allow_timeout_override true (a client may ask for a tighter timeout)

Why: a FIFO queue is drained n*B requests per S. A request that finds q requests queued starts
service within (floor(q / (n*B)) + 1) * S, so with q < rounds * n * B it starts within the wait
and finishes within the stage's budget; a request arriving to a full queue would wait longer
than the budget and miss the SLA, so Triton rejects it at once ("Exceeds maximum queue size").
The timeout catches what the bound cannot see: service slower than planned (a request that has
already waited `wait` can no longer finish in its budget). Triton rejects it when the batcher
reaches it ("Request timeout expired") and never computes it.

The bound is per pod (each pod's Triton has its own queue), hence capacity / pods. A stage
split across variants gives each variant the stage's budget and its own capacity.

Modes (`Admission`), because of what Triton 2.51 (the server here) does with a queue policy:
  OFF      no policy: unbounded queues, the excess is answered late.
  TIMEOUT  the timeout only (the default): a request that has waited `wait` is rejected.
  BOUNDED  the timeout and the queue bound: a burst is also rejected at once on arrival.
Any queue policy turns off Triton's payload prefetching (the batcher then forms a batch only for
an idle instance, and is told of one by the next arrival or its 500 ms poll), and an arrival
rejected by a full queue wakes nothing. Measured here (embed_l3 alone, 250 req/s offered,
interleaved runs; docs/experiments.md): no policy served 112-134 req/s, the timeout alone
104-117, the timeout with a 12-request bound 17-18: once the bound is reached the model is fed
about once per poll. So on Triton 2.51 the bound costs most of the capacity exactly when it
matters, and TIMEOUT sheds the excess instead, after at most `wait`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

from adapter.core.plan import Plan, VariantPlan

# What Triton answers when its queue policy rejects a request (checked on Triton 2.51, gRPC and
# HTTP; an ensemble prefixes "in ensemble '<name>', "). Anything else is a failure, not shed.
QUEUE_FULL = "Exceeds maximum queue size"
QUEUE_TIMEOUT = "Request timeout expired"


def is_shed(error: str) -> bool:
    """True when an error message is Triton's rejection at admission (full queue, or a queue
    timeout), as opposed to any other failure."""
    return QUEUE_FULL in error or QUEUE_TIMEOUT in error


@dataclass(frozen=True, order=True)
class QueuePolicy:
    """Triton's `dynamic_batching.default_queue_policy`. The defaults are Triton's own when a
    config has none: an unbounded queue and no timeout."""

    max_queue_size: int = 0  # requests waiting in the model's queue (0: unbounded)
    timeout_us: int = 0  # default_timeout_microseconds (0: none)
    timeout_action: str = "REJECT"  # REJECT | DELAY
    allow_timeout_override: bool = False

    @property
    def bounded(self) -> bool:
        return self.max_queue_size > 0 or (self.timeout_us > 0 and self.timeout_action == "REJECT")


UNBOUNDED = QueuePolicy()


def same_rule(a: QueuePolicy, b: QueuePolicy, tolerance: float = 0.25) -> bool:
    """Whether two policies are the same rule within `tolerance` (relative, on the bound and
    the timeout). Triton reloads a model whose queue policy changes, while a change of instances
    alone it applies in place; a timeout that moved a little with the plan is not worth that."""
    if (a.timeout_action, a.allow_timeout_override) != (b.timeout_action, b.allow_timeout_override):
        return False
    near = lambda x, y: x == y or (x > 0 and y > 0 and abs(x - y) <= tolerance * max(x, y))
    return near(a.max_queue_size, b.max_queue_size) and near(a.timeout_us, b.timeout_us)


class Admission(str, Enum):
    """How much of the rule a server gets (see the module docstring)."""

    OFF = "off"
    TIMEOUT = "timeout"
    BOUNDED = "bounded"


DEFAULT = Admission.TIMEOUT  # Triton 2.51: a bounded queue starves the model under overload


@dataclass(frozen=True)
class QueueSizing:
    """One model's queue policy and the figures it was derived from (for logs and tests)."""

    model: str
    stage: str
    budget_ms: float
    service_ms: float  # S: one batch of B while the pod's n instances are busy
    wait_ms: float
    bound: int  # rounds * n * B: the max_queue_size of mode BOUNDED
    policy: QueuePolicy  # what the mode applies


def service_ms(variant: VariantPlan, pods: int) -> float:
    """S = n * B / (capacity per pod): one batch of the planned size while all n instances of a
    pod are busy."""
    per_pod = variant.capacity_rps / max(pods, 1)
    if not (per_pod > 0 and math.isfinite(per_pod)) or variant.instances < 1 or variant.max_batch_size < 1:
        raise ValueError(f"variant {variant.model}: capacity_rps {variant.capacity_rps}, instances "
                         f"{variant.instances}, batch {variant.max_batch_size}: expected a positive "
                         f"finite capacity and at least one instance and batch slot to size its queue")
    return variant.instances * variant.max_batch_size * 1000.0 / per_pod


def stage_budgets_ms(plan: Plan) -> tuple[float, ...]:
    """Each stage's budget: its own batch time (S + delay of its slowest variant) plus an equal
    share of the slack the SLA leaves over all stages' batch times; they add up to the SLA."""
    times = [max(service_ms(v, plan.pods) + v.max_queue_delay_us / 1000.0 for v in s.variants)
             for s in plan.stages]
    slack = (plan.sla_ms - sum(times)) / len(times)
    return tuple(t + slack for t in times)


def admission(plan: Plan, mode: Admission | str = DEFAULT) -> dict[str, QueueSizing]:
    """Every model of the plan -> its queue policy under `mode` (see the module docstring)."""
    try:
        mode = Admission(mode)
    except ValueError:
        raise ValueError(f"admission: expected one of {', '.join(m.value for m in Admission)}, "
                         f"got {mode!r}") from None
    out: dict[str, QueueSizing] = {}
    for stage, budget in zip(plan.stages, stage_budgets_ms(plan)):
        for v in stage.variants:
            s = service_ms(v, plan.pods)
            wait = max(budget - s, s + v.max_queue_delay_us / 1000.0)
            rounds = max(1, math.floor(wait / s + 1e-9))
            bound = rounds * v.instances * v.max_batch_size
            policy = UNBOUNDED if mode is Admission.OFF else QueuePolicy(
                max_queue_size=bound if mode is Admission.BOUNDED else 0,
                timeout_us=max(1, round(wait * 1000.0)), timeout_action="REJECT", allow_timeout_override=True)
            out[v.model] = QueueSizing(v.model, stage.stage, budget, s, wait, bound, policy)
    return out


def queue_policies(plan: Plan, mode: Admission | str = DEFAULT) -> dict[str, QueuePolicy]:
    """Model -> the queue policy the rule gives it for this plan under `mode`."""
    return {model: a.policy for model, a in admission(plan, mode).items()}
