"""Shedding at admission on the real Triton: the actuator writes the admission rule's queue policy,
a burst far above capacity is rejected (at once with a bounded queue, after the timeout with the
timeout alone) and counted as shed, a request that waited past its timeout is rejected and never
computed, and the ensemble passes both rejections on.

The models here sleep for a fixed time per batch (a python-backend model on the real server), so
capacity does not depend on how busy this machine is; every count is asserted with a margin
derived from the queue policy, not from timing.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from adapter.core.admission import QUEUE_FULL, QUEUE_TIMEOUT, Admission, admission, is_shed
from adapter.core.plan import Mode, Plan, Reason, StagePlan, VariantPlan
from adapter.serving.actuator import TritonActuator
from adapter.serving.launcher import LocalTriton
from adapter.serving.repository import ModelRepository

SLEEPER_PY = '''
import json
import time

import triton_python_backend_utils as pb


class TritonPythonModel:
    """Sleeps a fixed time per batch (config parameter sleep_ms) and echoes TEXT."""

    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.sleep_s = float(config["parameters"]["sleep_ms"]["string_value"]) / 1000.0

    def execute(self, requests):
        time.sleep(self.sleep_s)
        return [pb.InferenceResponse([pb.Tensor("OUT", pb.get_input_tensor_by_name(r, "TEXT").as_numpy())])
                for r in requests]
'''

SLEEPER_CONFIG = '''
name: "{name}"
backend: "python"
max_batch_size: 4
input [ {{ name: "TEXT" data_type: TYPE_STRING dims: [ 1 ] }} ]
output [ {{ name: "OUT" data_type: TYPE_STRING dims: [ 1 ] }} ]
instance_group [ {{ count: 1 kind: KIND_CPU }} ]
parameters {{ key: "sleep_ms" value: {{ string_value: "{sleep_ms}" }} }}
dynamic_batching {{ }}
'''

ENSEMBLE_CONFIG = '''
name: "sleepy"
platform: "ensemble"
max_batch_size: 1
input [ { name: "TEXT" data_type: TYPE_STRING dims: [ 1 ] } ]
output [ { name: "OUT" data_type: TYPE_STRING dims: [ 1 ] } ]
ensemble_scheduling { step [ { model_name: "sleeper" model_version: -1
  input_map { key: "TEXT" value: "TEXT" } output_map { key: "OUT" value: "OUT" } } ] }
'''

SLEEP_MS = {"sleeper": 300, "sleeper_slow": 4000}


@pytest.fixture(scope="module")
def sleepy(tmp_path_factory):
    """A Triton serving the sleeping models and a one-step ensemble `sleepy`, and the adapter's
    actuator for it."""
    root = tmp_path_factory.mktemp("shedding")
    for name, ms in SLEEP_MS.items():
        (root / "models" / name / "1").mkdir(parents=True)
        (root / "models" / name / "config.pbtxt").write_text(SLEEPER_CONFIG.format(name=name, sleep_ms=ms))
        (root / "models" / name / "1" / "model.py").write_text(SLEEPER_PY)
    (root / "ensembles" / "sleepy" / "1").mkdir(parents=True)
    (root / "ensembles" / "sleepy" / "config.pbtxt").write_text(ENSEMBLE_CONFIG)
    server = LocalTriton(repositories=[root / "models", root / "ensembles"], log_path=root / "triton.log",
                         models=["sleeper", "sleepy"])
    server.start()
    repository = ModelRepository(server.endpoints)
    yield server, lambda mode: TritonActuator(repository, "sleepy", list(SLEEP_MS), root / "models", admission=mode)
    repository.close()
    server.stop()


def sleep_plan(model: str, planned_service_ms: float, sla_ms: float) -> Plan:
    """One stage, one instance, batch 1, planned to serve one request per `planned_service_ms`."""
    capacity = 1000.0 / planned_service_ms
    v = VariantPlan(model=model, share=1.0, max_batch_size=1, max_queue_delay_us=0, instances=1, rps=1.0,
                    predicted_p99_ms=planned_service_ms, capacity_rps=capacity)
    stage = StagePlan(stage="sleep", variants=(v,), predicted_p99_ms=planned_service_ms, capacity_rps=capacity,
                      accuracy=1.0, accuracy_score=1.0, cost=1.0)
    return Plan(pipeline="sleepy", mode=Mode.SINGLE, rps=1.0, sla_ms=sla_ms, pods=1, stages=(stage,),
                objective=0.0, predicted_p99_ms=planned_service_ms, accuracy=1.0, accuracy_score=1.0, cost=1.0,
                feasible=True, reason=Reason.OPTIMAL, message="", solver="test")


def _text(module):
    tensor = module.InferInput("TEXT", [1, 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[b"hello"]], dtype=np.object_))
    return tensor


class Requests:
    """Asynchronous gRPC requests; each result is (latency s, error message or "")."""

    def __init__(self, server):
        self.client = grpcclient.InferenceServerClient(server.endpoints.grpc)
        self.results: list[tuple[float, str]] = []
        self._lock = threading.Lock()

    def send(self, model: str, n: int = 1) -> None:
        for _ in range(n):
            sent = time.monotonic()

            def done(result, error, sent=sent):
                with self._lock:
                    self.results.append((time.monotonic() - sent, "" if error is None else error.message()))

            self.client.async_infer(model, [_text(grpcclient)], callback=done)

    def wait(self, n: int, timeout_s: float = 60.0) -> list[tuple[float, str]]:
        deadline = time.monotonic() + timeout_s
        while len(self.results) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(self.results) >= n, f"{len(self.results)} of {n} answered in {timeout_s} s"
        return list(self.results)

    def computed(self, model: str) -> int:
        stats = self.client.get_inference_statistics(model, as_json=True)["model_stats"]
        return sum(int(s.get("inference_count", 0)) for s in stats)


def test_the_actuator_writes_the_queue_policy_and_reloads_only_when_it_changes(sleepy):
    server, actuator_for = sleepy
    actuator = actuator_for(Admission.BOUNDED)
    plan = sleep_plan("sleeper", planned_service_ms=350, sla_ms=1700)
    done = actuator.reconcile(plan)
    assert any("queue <= 3, timeout 1350 ms" in d for d in done), done
    observed = actuator.observe().settings["sleeper"].queue
    assert observed == admission(plan, Admission.BOUNDED)["sleeper"].policy  # as Triton reports it
    assert actuator.reconcile(plan) == []  # nothing changed: no reload
    tighter = sleep_plan("sleeper", planned_service_ms=350, sla_ms=1000)
    assert [d.split(":")[0] for d in actuator.reconcile(tighter)] == ["reconfigure sleeper"]
    assert actuator.observe().settings["sleeper"].queue.max_queue_size == 1
    default = actuator_for(Admission.TIMEOUT)  # a restarted adapter in the default mode
    assert [d.split(":")[0] for d in default.reconcile(tighter)] == ["reconfigure sleeper"]
    assert default.observe().settings["sleeper"].queue == admission(tighter)["sleeper"].policy
    assert default.reconcile(tighter) == []
    off = actuator_for(Admission.OFF)
    assert any("no queue policy" in d for d in off.reconcile(tighter))
    assert not off.observe().settings["sleeper"].queue.bounded


def test_a_burst_far_above_capacity_is_shed_at_once_by_a_bounded_queue(sleepy, capsys):
    server, actuator_for = sleepy
    # Planned: 350 ms per request (the model sleeps 300), SLA 1700 ms: the rule lets a request
    # wait 1350 ms, i.e. 3 whole service rounds: max_queue_size 3, timeout 1350 ms.
    plan = sleep_plan("sleeper", planned_service_ms=350, sla_ms=1700)
    actuator_for(Admission.BOUNDED).reconcile(plan)
    policy = admission(plan, Admission.BOUNDED)["sleeper"].policy
    assert (policy.max_queue_size, policy.timeout_us) == (3, 1_350_000)
    burst = 60
    requests = Requests(server)
    computed_before = requests.computed("sleeper")
    start = time.monotonic()
    requests.send("sleepy", burst)
    send_s = time.monotonic() - start
    results = requests.wait(burst)

    ok = [ms for ms, error in results if not error]
    full = [s for s, error in results if QUEUE_FULL in error]
    timed_out = [s for s, error in results if QUEUE_TIMEOUT in error]
    late = [s for s in ok if s * 1000 > plan.sla_ms]
    with capsys.disabled():
        print(f"\n  burst of {burst} (sent in {send_s * 1000:.0f} ms) at a queue of {policy.max_queue_size}: "
              f"{len(ok)} served ({len(late)} late), {len(full)} rejected at once (queue full), "
              f"{len(timed_out)} rejected after the timeout; slowest rejection at once "
              f"{max(full) * 1000:.0f} ms")
    assert len(ok) + len(full) + len(timed_out) == burst  # no other failure
    assert all(error.startswith("in ensemble 'sleepy'") for _, error in results if error)
    # Admitted: the queue plus what the instance took while the burst was being sent (one
    # request per 300 ms of sending, one more if the batcher had not yet taken the first).
    admitted = len(ok) + len(timed_out)
    assert policy.max_queue_size <= admitted <= policy.max_queue_size + 2 + int(send_s / 0.3)
    assert len(full) >= burst - policy.max_queue_size - 2 - int(send_s / 0.3)
    assert max(full) < 0.3  # at once: before the request in service finished
    assert len(ok) >= 1 and requests.computed("sleeper") - computed_before == len(ok)  # shed: never computed
    # A served request started within its timeout, so it was answered within that plus its service.
    assert all(s <= policy.timeout_us / 1e6 + 2 * 0.3 for s in ok)


def test_a_burst_is_shed_after_the_timeout_by_the_timeout_alone(sleepy, capsys):
    server, actuator_for = sleepy
    plan = sleep_plan("sleeper", planned_service_ms=350, sla_ms=1700)
    actuator_for(Admission.TIMEOUT).reconcile(plan)
    policy = admission(plan)["sleeper"].policy
    assert (policy.max_queue_size, policy.timeout_us) == (0, 1_350_000)
    burst = 30
    requests = Requests(server)
    computed_before = requests.computed("sleeper")
    requests.send("sleepy", burst)
    results = requests.wait(burst)
    ok = [s for s, error in results if not error]
    timed_out = [s for s, error in results if QUEUE_TIMEOUT in error]
    with capsys.disabled():
        print(f"\n  burst of {burst}, timeout only: {len(ok)} served, {len(timed_out)} rejected after the "
              f"timeout (the last after {max(timed_out):.2f} s)")
    assert len(ok) + len(timed_out) == burst  # all admitted; the excess is rejected, nothing fails
    # The instance serves one request per 300 ms: within the 1.35 s wait at most 5 start.
    assert 1 <= len(ok) <= 1 + int(1.35 / 0.3) and requests.computed("sleeper") - computed_before == len(ok)
    # Rejected for having waited the timeout, and not much later: Triton sweeps expired requests
    # out of the queue every 500 ms while the instance is busy, and at the latest when it is free.
    assert all(policy.timeout_us / 1e6 <= s <= policy.timeout_us / 1e6 + 0.5 + 0.3 + 0.5 for s in timed_out)


def test_a_request_that_waits_past_its_timeout_is_rejected_and_not_computed(sleepy):
    server, actuator_for = sleepy
    # The plan expects 250 ms per request but the model takes 4 s (service slower than planned):
    # the queue bound (4) admits requests that the timeout (1.1 s) then rejects.
    plan = sleep_plan("sleeper_slow", planned_service_ms=250, sla_ms=1350)
    actuator_for(Admission.BOUNDED).reconcile(plan)
    policy = admission(plan, Admission.BOUNDED)["sleeper_slow"].policy
    assert (policy.max_queue_size, policy.timeout_us) == (4, 1_100_000)
    requests = Requests(server)
    computed_before = requests.computed("sleeper_slow")
    requests.send("sleepy", 1)  # taken by the idle instance: 4 s
    time.sleep(0.3)
    requests.send("sleepy", 5)  # 4 queue behind it (each waits past 1.1 s); the 5th finds it full
    requests.wait(1)  # the rejection at once; the 4 are still queued
    http = httpclient.InferenceServerClient(server.endpoints.http)
    with pytest.raises(Exception) as over_http:  # the same rejection over HTTP
        http.infer("sleepy", [_text(httpclient)])
    http.close()
    results = requests.wait(6)

    served = [s for s, error in results if not error]
    timed_out = [s for s, error in results if QUEUE_TIMEOUT in error]
    full = [s for s, error in results if QUEUE_FULL in error]
    assert len(served) == 1 and served[0] >= 4.0
    assert len(timed_out) == 4 and min(timed_out) >= policy.timeout_us / 1e6  # rejected for waiting
    assert len(full) == 1 and is_shed(str(over_http.value)) and QUEUE_FULL in str(over_http.value)
    assert requests.computed("sleeper_slow") - computed_before == 1  # the timed-out were never computed
