"""Locust users for Triton (closed loop: each user sends, waits for the answer, sends again).
For the web UI and classic user-count tests:

    locust -f loadtest/locustfile.py --host 127.0.0.1:8000                    # HTTP, web UI
    locust -f loadtest/locustfile.py --host 127.0.0.1:8001 --protocol grpc --headless -u 8 -r 2 -t 1m

For replaying a requests-per-second trace (open loop), use loadtest/trace_replay.py.
"""

from __future__ import annotations

from locust import User, between, task

from triton_users import TritonCaller, init_gevent_grpc

init_gevent_grpc()


class TritonUser(User):
    wait_time = between(0.05, 0.2)

    def on_start(self) -> None:
        self.caller = TritonCaller(self.environment, self.host)

    @task
    def infer(self) -> None:
        self.caller.call()
