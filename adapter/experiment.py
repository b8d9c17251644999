"""Experiments: one workload, one policy, the real local stack, a results folder.

    Triton (local) <- Locust trace replay (subprocess, open loop)
          ^
          +------- policy: the adapter's Sidecar, or a baseline built from the same core

Every policy is the same control loop over the same planner with a restriction, so a comparison
compares policies, not code paths:
  adapter          everything: quantile forecast, amortised switching costs, compute-time correction
  ipa              IPA's formulation: no switching cost, no correction, max of the last 120 s
  ipa-lstm         the same with IPA's LSTM load predictor (adapter/core/predictor_lstm.py)
  scale-only       the most accurate variant per stage, fixed; batch and instances follow load
                   (like IPA's FA2 baseline)
  switch-only      one instance per stage, fixed; variants and batch change (like IPA's RIM)
  static-accurate  the most accurate variants, sized once for the trace's peak, never changed
  static-cheapest  the fastest variants, sized once for the trace's peak, never changed
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from adapter import paths
from adapter.core.admission import is_shed
from adapter.core.plan import Plan
from adapter.core.policy import PolicyConfig
from adapter.core.predictor import LastValuePredictor, make_predictor
from adapter.core.profile import Profiles
from adapter.core.spec import Objective, PipelineSpec
from adapter.errors import ConfigError
from adapter.sidecar import LoopSettings, Sidecar, Tick

log = logging.getLogger(__name__)

POLICIES = ("adapter", "ipa", "ipa-lstm", "scale-only", "switch-only", "static-accurate", "static-cheapest")


def _restrict(spec: PipelineSpec, pick) -> PipelineSpec:
    stages = tuple(dataclasses.replace(s, variants=(pick(s),)) for s in spec.stages)
    return dataclasses.replace(spec, stages=stages)


def most_accurate(spec: PipelineSpec) -> PipelineSpec:
    return _restrict(spec, lambda s: max(s.variants, key=lambda v: v.accuracy))


def fastest(spec: PipelineSpec, profiles: Profiles) -> PipelineSpec:
    return _restrict(spec, lambda s: min(s.variants, key=lambda v: profiles[v.model].latency.p99_ms(1)))


@dataclass(frozen=True)
class PolicySetup:
    spec: PipelineSpec  # what the planner may choose from
    config: PolicyConfig
    predictor: object
    static_rps: float | None = None  # plan once for this load and never again


def policy_setup(name: str, spec: PipelineSpec, profiles: Profiles, peak_rps: float) -> PolicySetup:
    default = make_predictor()
    if name == "adapter":
        return PolicySetup(spec, PolicyConfig(), default)
    if name in ("ipa", "ipa-lstm"):
        no_switching = dataclasses.replace(spec.objective, switch_variant=0.0, switch_config=0.0)
        predictor = LastValuePredictor(window_s=120) if name == "ipa" else make_predictor("ipa-lstm")
        # IPA's formulation as published: its latency model (batch-fill wait), the spec's capacity
        # margin, no switching cost, no correction, no backlog or pool clamp; the stabilisation
        # window (60 s) the harness always gave it.
        ipa = PolicyConfig(max_latency_scale=1.0, headroom=None, plan_lifetime_s=None, drain_s=None,
                           clamp_to_pool=False, scale_down_hysteresis=0.0, latency_model="ipa",
                           overload_trigger=None, scale_down_window_s=60.0, release_horizon_s=None)
        return PolicySetup(dataclasses.replace(spec, objective=no_switching), ipa, predictor)
    if name == "scale-only":
        return PolicySetup(most_accurate(spec), PolicyConfig(), default)
    if name == "switch-only":
        fixed = dataclasses.replace(spec.limits, max_instances_per_stage=1)
        return PolicySetup(dataclasses.replace(spec, limits=fixed), PolicyConfig(), default)
    if name == "static-accurate":
        return PolicySetup(most_accurate(spec), PolicyConfig(), default, static_rps=peak_rps)
    if name == "static-cheapest":
        return PolicySetup(fastest(spec, profiles), PolicyConfig(), default, static_rps=peak_rps)
    raise ConfigError(f"policy: expected one of {', '.join(POLICIES)}, got {name!r}")


class StaticPolicy:
    """A plan made once (for the peak load) and kept: the sidecar only reconciles it."""

    def __init__(self, sidecar: Sidecar, plan: Plan):
        self.sidecar, self.plan = sidecar, plan

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            tick = Tick(time.monotonic(), held_decision(self.plan), tuple(self.sidecar.actuator.reconcile(self.plan)), None)
            if self.sidecar.on_tick:
                self.sidecar.on_tick(tick)
            stop.wait(self.sidecar.settings.interval_s)


def held_decision(plan: Plan):
    from adapter.core.policy import Decision, Reason

    return Decision(reason=Reason.UNCHANGED, message="static plan", plan=plan,
                    predicted_rps=plan.rps, planned_rps=plan.rps)


# -- per-second results --------------------------------------------------------------------------

def per_second_rows(sent_s: np.ndarray, latency_ms: np.ndarray, failed: np.ndarray,
                    ticks: list[tuple[float, Plan | None]], target: list[float], sla_ms: float,
                    accuracy_bounds: tuple[float, float], shed: np.ndarray | None = None) -> list[dict]:
    """One row per second of the run: load, latency, SLA misses, and the plan in force.

    Requests are given as arrays: when each was sent (s from the run's start), its latency,
    whether it failed, and whether it was shed (rejected at admission by Triton's queue policy;
    a shed request counts as shed, not failed, even when `failed` marks it too); `ticks` are
    (s from the start, plan in force from then). Per second, of the requests sent in it:
    `achieved_rps` all of them, `shed` those rejected at admission, `sla_misses` the admitted
    ones answered past the SLA or failed, `failed` those failed otherwise; p50/p99 over the
    admitted ones."""
    lo, hi = accuracy_bounds
    shed = np.zeros(len(sent_s), dtype=bool) if shed is None else np.asarray(shed, dtype=bool)
    order = np.argsort(sent_s, kind="stable")
    sent_s, latency_ms, shed = sent_s[order], latency_ms[order], shed[order]
    failed = np.asarray(failed, dtype=bool)[order] & ~shed
    bounds = np.searchsorted(sent_s, np.arange(len(target) + 1))
    missed = ~shed & (failed | (latency_ms > sla_ms))
    rows = []
    for second, target_rps in enumerate(target):
        a, b = bounds[second], bounds[second + 1]
        ms = latency_ms[a:b][~shed[a:b]]
        plan = next((p for when, p in reversed(ticks) if when <= second + 1), None)
        row = {"second": second, "target_rps": round(target_rps, 2), "achieved_rps": int(b - a),
               "p50_ms": round(float(np.percentile(ms, 50)), 2) if len(ms) else "",
               "p99_ms": round(float(np.percentile(ms, 99)), 2) if len(ms) else "",
               "sla_misses": int(missed[a:b].sum()), "failed": int(failed[a:b].sum()),
               "shed": int(shed[a:b].sum())}
        if plan is not None:
            for stage in plan.stages:
                row[f"{stage.stage}_variant"] = stage.model
                row[f"{stage.stage}_batch"] = stage.max_batch_size
                row[f"{stage.stage}_instances"] = stage.instances
            row["pods"] = plan.pods
            row["capacity_rps"] = round(min(s.capacity_rps for s in plan.stages), 2)
            row["accuracy"] = round(plan.accuracy, 4)
            row["normalised_accuracy"] = round((plan.accuracy - lo) / (hi - lo), 4) if hi > lo else 1.0
            row["cost_cores"] = plan.cost
        rows.append(row)
    return rows


def summarise_run(rows: list[dict], latency_ms: np.ndarray, failed: np.ndarray, meta: dict,
                  shed: np.ndarray | None = None) -> dict:
    """The run in figures (docs/experiments.md). Every request is one of: served within the
    SLA, late (answered past it), shed (rejected at admission), failed (any other error).
      served_within_sla_pct + shed_pct + late_pct = 100, late_pct counting late and failed;
      sla_miss_pct  late and failed among the admitted (not shed) requests: what the SLA
                    promise was to the requests the pipeline took on;
      failed, shed, late  counts; p50_ms / p99_ms over the admitted requests."""
    total = len(latency_ms)
    shed = np.zeros(total, dtype=bool) if shed is None else np.asarray(shed, dtype=bool)
    n_shed = int(shed.sum())
    n_failed = int((np.asarray(failed, dtype=bool) & ~shed).sum())
    misses = sum(row["sla_misses"] for row in rows)
    admitted = latency_ms[~shed] if total else latency_ms
    latencies = admitted if len(admitted) else np.zeros(1)
    weighted = [(row["achieved_rps"], row["normalised_accuracy"], row["accuracy"]) for row in rows
                if "accuracy" in row]
    weight = sum(w for w, _, _ in weighted) or 1

    def pct(n: int, of: int) -> float:
        return round(100 * n / max(of, 1), 3)

    return {
        **meta,
        "requests": total,
        "failed": n_failed,
        "shed": n_shed,
        "late": misses - sum(row["failed"] for row in rows),
        "served_within_sla_pct": pct(total - n_shed - misses, total),
        "shed_pct": pct(n_shed, total),
        "late_pct": pct(misses, total),
        "sla_miss_pct": pct(misses, total - n_shed),
        "p50_ms": round(float(np.percentile(latencies, 50)), 2),
        "p99_ms": round(float(np.percentile(latencies, 99)), 2),
        "normalised_accuracy": round(sum(w * n for w, n, _ in weighted) / weight, 4),
        "accuracy": round(sum(w * a for w, _, a in weighted) / weight, 4),
        "cost_core_seconds": round(sum(row.get("cost_cores", 0) for row in rows), 1),
    }


def accuracy_range(spec: PipelineSpec) -> tuple[float, float]:
    """The pipeline's least and most accurate variant combinations (normalised accuracy 0 and 1)."""
    accuracy = [[v.accuracy for v in s.variants] for s in spec.stages]
    return float(np.prod([min(a) for a in accuracy])), float(np.prod([max(a) for a in accuracy]))


def write_results(out: Path, rows: list[dict], summary: dict, stages: list[str]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with (out / "per_second.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return plot(out / "plot.png", rows, summary, stages)


def plot(path: Path, rows: list[dict], summary: dict, stages: list[str]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seconds = [r["second"] for r in rows]
    fig, axes = plt.subplots(3, 1, figsize=(11, 8.5), sharex=True,
                             gridspec_kw={"height_ratios": [2, 2, 1.6]})
    load, lat, var = axes
    load.plot(seconds, [r["target_rps"] for r in rows], color="0.6", label="target rps")
    load.plot(seconds, [r["achieved_rps"] for r in rows], color="tab:blue", lw=0.8, label="achieved rps")
    load.step(seconds, [r.get("capacity_rps", np.nan) for r in rows], where="post", color="tab:green",
              label="planned capacity (rps)")
    load.set_ylabel("requests/s")
    load.legend(loc="upper left", fontsize=8)
    load.set_title(f"{summary['policy']} on {summary['workload']}: SLA miss {summary['sla_miss_pct']}%, "
                   f"shed {summary.get('shed_pct', 0)}%, "
                   f"p99 {summary['p99_ms']} ms, accuracy {summary['normalised_accuracy']}, "
                   f"cost {summary['cost_core_seconds']} core-s", fontsize=10)
    p99 = [r["p99_ms"] if r["p99_ms"] != "" else np.nan for r in rows]
    lat.plot(seconds, p99, color="tab:orange", lw=0.8, label="p99 per second (ms)")
    lat.axhline(summary["sla_ms"], color="tab:red", ls="--", label=f"SLA {summary['sla_ms']:g} ms")
    lat.set_yscale("log")
    lat.set_ylabel("latency ms")
    lat.legend(loc="upper left", fontsize=8)
    for i, stage in enumerate(stages):
        names = [r.get(f"{stage}_variant", "") for r in rows]
        labels = sorted({n for n in names if n})
        ys = [labels.index(n) + i * (len(labels) + 1) if n else np.nan for n in names]
        var.step(seconds, ys, where="post", label=stage)
        for j, label in enumerate(labels):
            var.text(seconds[0], j + i * (len(labels) + 1), f" {label}", fontsize=7, va="bottom")
    var.set_yticks([])
    var.set_ylabel("variant")
    var.set_xlabel("seconds")
    var.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def traced_stage_p99(trace: Path, spec: PipelineSpec) -> dict[str, float | None]:
    """Each stage's server-side p99 over the run, from Triton's request trace: from when the
    ensemble handed the request to the stage's model until its output was ready."""
    from adapter.serving.tracing import stage_latencies

    times = stage_latencies(trace, spec.ensemble)
    out = {}
    for stage in spec.stages:
        ms = [times[v.model].response_ms for v in stage.variants if v.model in times]
        joined = np.concatenate(ms) if ms else np.array([])
        joined = joined[np.isfinite(joined)]  # a request rejected at admission was never computed
        out[stage.name] = round(float(np.percentile(joined, 99)), 2) if len(joined) else None
    return out


# -- the run ----------------------------------------------------------------------------------

def locust_command(host: str, protocol: str, model: str, out: Path, time_scale: float,
                   trace: Path | tuple[str, float]) -> list[str]:
    """Locust's open-loop trace replay of a trace file, or of a named workload at a damping."""
    cmd = [sys.executable, "-m", "locust", "-f", str(paths.ROOT / "loadtest" / "trace_replay.py"),
           "--headless", "--host", host, "--protocol", protocol, "--model", model,
           "--time-scale", str(time_scale), "--request-log", str(out / "requests.jsonl"),
           "--csv", str(out / "locust"), "--only-summary"]
    if isinstance(trace, tuple):
        return cmd + ["--workload", trace[0], "--damping", str(trace[1])]
    return cmd + ["--trace-file", str(trace)]


def run_experiment(spec: PipelineSpec, profiles: Profiles, workload: str, policy: str, out: Path,
                   time_scale: float = 1.0, interval_s: float = 10.0, trace_file: Path | None = None,
                   protocol: str = "http", on_tick=None, damping: float | None = None) -> dict:
    from adapter.commands.run import build_sidecar
    from adapter.core.planner import plan_pipeline
    from adapter.serving.launcher import LocalTriton
    from adapter.serving.tracing import trace_args
    from adapter.workloads import IPA_DAMPING, load_rps_file, named_workload, time_scale as scale

    damping = damping or IPA_DAMPING  # of a named workload
    series = load_rps_file(trace_file) if trace_file else named_workload(workload, damping)
    target = [float(v) for v in scale(series, time_scale)]
    setup = policy_setup(policy, spec, profiles, peak_rps=max(target))
    out.mkdir(parents=True, exist_ok=True)
    ticks: list[tuple[float, Plan | None]] = []
    decisions = []

    def record(tick: Tick) -> None:
        plan = tick.decision.plan
        ticks.append((time.time(), plan))
        decisions.append({"t": time.time(), "reason": tick.decision.reason.value,
                          "message": tick.decision.message, "actions": list(tick.actions),
                          "error": tick.error})
        if on_tick is not None:
            on_tick(tick)

    stop = threading.Event()
    trace = out / "trace" / "trace.json"  # every request's per-stage timestamps (Triton's trace)
    shutil.rmtree(trace.parent, ignore_errors=True)
    with LocalTriton(log_path=out / "triton.log", extra_args=trace_args(trace)) as triton:
        sidecar = build_sidecar(setup.spec, profiles, triton.endpoints, interval_s=interval_s,
                                on_tick=record)
        sidecar.predictor, sidecar.config = setup.predictor, setup.config
        if setup.static_rps is not None:
            plan = plan_pipeline(setup.spec, profiles, setup.static_rps)
            sidecar.actuator.reconcile(plan)
            runner = StaticPolicy(sidecar, plan).run
        else:
            runner = sidecar.run
        loop = threading.Thread(target=runner, args=(stop,), daemon=True)
        host = triton.endpoints.http if protocol == "http" else triton.endpoints.grpc
        cmd = locust_command(host, protocol, spec.ensemble, out, time_scale, trace_file or (workload, damping))
        loop.start()
        loop_started = t0 = time.time()
        with (out / "locust.log").open("w") as locust_log:
            result = subprocess.run(cmd, stdout=locust_log, stderr=subprocess.STDOUT)
        stop.set()
        loop.join(timeout=60)
    if result.returncode not in (0, 1):  # 1: Locust's "some requests failed", still a result
        raise ConfigError(f"locust exited with {result.returncode}; see {out / 'locust.log'}")
    requests = [json.loads(line) for line in (out / "requests.jsonl").read_text().splitlines()]
    if requests:  # second 0 is when the trace's first request was scheduled (Locust starts late)
        t0 = min(r["t"] for r in requests)
    sent_s = np.array([r["t"] - t0 for r in requests], dtype=float)
    latency_ms = np.array([r["ms"] for r in requests], dtype=float)
    failed = np.array([bool(r["error"]) for r in requests], dtype=bool)
    shed = np.array([bool(r.get("shed")) or is_shed(r["error"]) for r in requests], dtype=bool)
    rows = per_second_rows(sent_s, latency_ms, failed, [(when - t0, plan) for when, plan in ticks],
                           target, spec.sla_ms, accuracy_range(spec), shed=shed)
    summary = summarise_run(rows, latency_ms, failed, shed=shed, meta={
        "policy": policy, "workload": str(trace_file or workload), "time_scale": time_scale,
        **({} if trace_file else {"damping": damping}),
        "interval_s": interval_s, "sla_ms": spec.sla_ms, "seconds": len(target),
        "decisions": sum(1 for d in decisions if d["reason"] == "Apply")})
    summary["stage_p99_ms"] = traced_stage_p99(trace, spec)
    summary["adapter_lead_s"] = round(t0 - loop_started, 3)  # the loop ran this long before the load
    (out / "decisions.json").write_text(json.dumps(decisions, indent=1) + "\n")
    summary["plot"] = str(write_results(out, rows, summary, [s.name for s in spec.stages]))
    return summary
