"""The control loop against the real Triton: it converges, exports its metrics, and keeps
running when Triton is stopped, restarted, or handed a variant that cannot load."""

from __future__ import annotations

import dataclasses
import math
import time
import urllib.request

import pytest

from adapter import paths
from adapter.commands.run import build_sidecar
from adapter.core.policy import Reason
from adapter.core.profile import Profiles, load_profiles
from adapter.core.spec import parse_spec
from adapter.loadgen import start_schedule
from adapter.serving.client import TextClient, decode_strings
from adapter.serving.launcher import free_port
from tests.conftest import small_spec


def _spec(embed_variants):
    return parse_spec(small_spec(embed_variants))


SPEC = _spec([("embed_l3_int8", 0.36), ("embed_l3", 0.38)])
PROFILES = load_profiles(paths.ENSEMBLES / "text_search" / "profiles.json")


def _sidecar(small_triton, spec=SPEC, profiles=PROFILES):
    server, models = small_triton
    return build_sidecar(spec, profiles, server.endpoints, interval_s=1.0, model_repository=models)


def _warm_up(sidecar, server, seconds=4):
    """Some real traffic, observed every second, so the policy has fresh metrics."""
    load = start_schedule(server.endpoints.http, "text_search", [10] * seconds, "/dev/null")
    for _ in range(seconds + 1):
        sidecar.observe()
        time.sleep(1)
    load.join()
    sidecar.observe()


def _steps(sidecar):
    return sidecar.actuator.observe().ensemble_steps


def test_the_loop_converges_and_exports_its_metrics(small_triton):
    server, _ = small_triton
    sidecar = _sidecar(small_triton)
    _warm_up(sidecar, server)
    tick = sidecar.decide_and_apply()
    assert tick.decision.reason is Reason.APPLY and tick.error is None
    plan = sidecar.state.current
    assert _steps(sidecar) == tuple(s.model for s in plan.stages)
    assert sidecar.decide_and_apply().actions == ()  # converged: nothing more to do

    port = free_port()
    sidecar.metrics.serve(port)
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    embed = plan.stage("embed")
    assert f'tpa_plan_instances{{model="{embed.model}",stage="embed"}} {embed.instances}.0' in text
    assert 'tpa_decisions_total{reason="Apply"} 1.0' in text
    assert "tpa_plan_applied 1.0" in text
    age = float(next(line.split()[1] for line in text.splitlines() if line.startswith("tpa_observation_age_seconds ")))
    assert 0 <= age < 60  # the metrics the last decision read were observed just before it
    assert "tpa_observed_rps" in text and "tpa_solve_seconds_count" in text


def test_triton_stopped_holds_the_plan_and_a_restart_converges(small_triton):
    server, _ = small_triton
    sidecar = _sidecar(small_triton)
    _warm_up(sidecar, server)
    sidecar.decide_and_apply()
    plan = sidecar.state.current

    server.stop()
    sidecar.observe()  # metrics unreachable: counted, not raised
    assert sidecar.metrics.metrics_failures._value.get() == 1
    assert math.isnan(sidecar.metrics.observed_rps._value.get())  # unknown, not the last value
    tick = sidecar.decide_and_apply()
    assert tick.error and "127.0.0.1" in tick.error
    assert sidecar.state.current is plan  # held
    assert sidecar.metrics.triton_unreachable._value.get() == 1

    server.start()  # same ports; every model back to its config.pbtxt
    time.sleep(sidecar.settings.interval_s)  # past the backoff
    tick = sidecar.decide_and_apply()
    assert tick.error is None and tick.actions  # level-triggered: re-applied without a new plan
    assert _steps(sidecar) == tuple(s.model for s in plan.stages)


def _with_a_broken_variant():
    """A spec and profiles where embed_broken claims to be the most accurate, so the planner
    picks it; its load fails (its initialize raises: conftest.BROKEN_MODEL)."""
    spec = _spec([("embed_l3_int8", 0.36), ("embed_broken", 0.9)])
    profiles = Profiles(variants={**PROFILES.variants,
                                  "embed_broken": dataclasses.replace(PROFILES["embed_l3"], model="embed_broken")},
                        provenance=PROFILES.provenance)
    return spec, profiles


def test_a_variant_that_cannot_load_is_rolled_back_and_the_loop_goes_on(small_triton):
    server, _ = small_triton
    sidecar = _sidecar(small_triton, *_with_a_broken_variant())
    _warm_up(sidecar, server)
    before = _steps(sidecar)
    tick = sidecar.decide_and_apply()
    assert tick.decision.plan.stage("embed").model == "embed_broken"
    assert "embed_broken" in tick.error and "rolled back" in tick.error
    assert sidecar.state.current is None  # nothing applied
    assert sidecar.metrics.actuation_failures._value.get() == 1
    assert sidecar.metrics.plan_applied._value.get() == 0  # the plan wanted is not in force
    assert _steps(sidecar) == before
    # The plan gauges show what is in force (nothing applied yet), not the plan that failed.
    assert not any(s.labels.get("model") == "embed_broken" for m in sidecar.metrics.registry.collect()
                   if m.name == "tpa_plan_instances" for s in m.samples)
    client = TextClient(server.endpoints, "grpc")
    assert decode_strings(client.infer("text_search", ["Der Zug fährt ab."], ["LANG"])["LANG"]) == ["de"]
    client.close()


def test_a_variant_that_cannot_load_sits_out_and_is_tried_again_after_a_growing_backoff(small_triton):
    server, models = small_triton
    sidecar = build_sidecar(*_with_a_broken_variant(), server.endpoints, interval_s=60.0, model_repository=models)
    _warm_up(sidecar, server)
    assert "embed_broken" in sidecar.decide_and_apply().error
    tick = sidecar.decide_and_apply()  # within the back-off: planned without it, and applied
    assert tick.error is None and "without embed_broken (failed to load" in tick.decision.message
    assert sidecar.state.current.stage("embed").model == "embed_l3_int8"
    assert _steps(sidecar)[-1] == "embed_l3_int8"
    assert sidecar.state.failed["embed_broken"][1] == 60.0
    clock = sidecar.clock
    sidecar.clock = lambda: clock() + 61.0  # past the back-off: tried again, fails again
    sidecar.config = dataclasses.replace(sidecar.config, stale_after_s=3600)  # the metrics, 61 s "old"
    tick = sidecar.decide_and_apply()
    assert tick.decision.plan.stage("embed").model == "embed_broken" and "embed_broken" in tick.error
    assert sidecar.state.failed["embed_broken"][1] == 120.0  # doubled
    assert _steps(sidecar)[-1] == "embed_l3_int8"  # rolled back to what served


def test_a_solver_error_keeps_the_loop_running(small_triton):
    server, _ = small_triton
    missing = Profiles(variants={k: v for k, v in PROFILES.variants.items() if k != "embed_l3"},
                       provenance=PROFILES.provenance)
    sidecar = _sidecar(small_triton, SPEC, missing)
    _warm_up(sidecar, server, seconds=2)
    tick = sidecar.decide_and_apply()
    assert tick.decision.reason is Reason.SOLVER_ERROR and "embed_l3" in tick.decision.message
    assert tick.actions == () and tick.error is None
