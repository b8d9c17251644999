"""Replay a requests-per-second trace against Triton, open loop.

    locust -f loadtest/trace_replay.py --host 127.0.0.1:8000 --workload bursty --time-scale 4 \
        --headless --csv runs/bursty/locust
    locust -f loadtest/trace_replay.py --host 127.0.0.1:8000 --trace-file my_rps.txt   # web UI

Arrivals follow the trace whatever the server does: one dispatcher user spawns a greenlet per
request at its scheduled time, and latency counts from that time. The shape ends the test when
the trace ends. Traces: a file with one rps value per line, or one of IPA's named workloads
(bursty, steady-low, steady-high, fluctuating) built from the Twitter trace.
"""

from __future__ import annotations

import time

import gevent
import gevent.pool
import numpy as np
from locust import LoadTestShape, User, events, task

from triton_users import TritonCaller, init_gevent_grpc

init_gevent_grpc()


@events.init_command_line_parser.add_listener
def _add_arguments(parser) -> None:
    parser.add_argument("--workload", default="bursty",
                        help="IPA workload: bursty, steady-low, steady-high, fluctuating")
    parser.add_argument("--trace-file", default="", help="one rps value per line (overrides --workload)")
    parser.add_argument("--time-scale", type=float, default=1.0,
                        help="compress time by this factor (4: a 1200 s trace runs in 300 s)")
    parser.add_argument("--damping", type=float, default=8.0, help="IPA's damping of the Twitter trace")
    parser.add_argument("--drain", type=float, default=10.0,
                        help="seconds to wait for requests in flight after the trace ends (default: 10)")


def load_schedule(options) -> list[float]:
    from adapter.workloads import load_rps_file, named_workload, time_scale

    series = (load_rps_file(options.trace_file) if options.trace_file
              else named_workload(options.workload, damping=options.damping))
    return [float(v) for v in time_scale(series, options.time_scale)]


class TraceReplayUser(User):
    """The single arrival process: sends each second's requests evenly spread over the second."""

    fixed_count = 1

    def on_start(self) -> None:
        self.caller = TritonCaller(self.environment, self.host)
        self.schedule = load_schedule(self.environment.parsed_options)

    @task
    def replay(self) -> None:
        from adapter.workloads import arrival_times

        options = self.environment.parsed_options
        t0 = time.time()
        # The same schedule the simulator replays: each second's requests evenly spread.
        sends = arrival_times(np.asarray(self.schedule))
        requests = gevent.pool.Group()
        for second in range(len(self.schedule)):
            for at in sends[np.searchsorted(sends, second):np.searchsorted(sends, second + 1)]:
                requests.add(gevent.spawn_later(max(0.0, t0 + at - time.time()), self.caller.call, t0 + at))
            gevent.sleep(max(0.0, t0 + second + 1 - time.time()))
        # Let the last requests finish; those still queued after the drain are killed, and
        # each is recorded as a failure ("unfinished"), so none is lost from the results.
        requests.join(timeout=options.drain)
        requests.kill(block=True, timeout=5)
        self.environment.runner.quit()


class TraceShape(LoadTestShape):
    """One user (the dispatcher) for the length of the trace (the dispatcher quits the run
    itself; this bound only stops a run whose dispatcher died)."""

    schedule_s: int | None = None

    def tick(self):
        if self.schedule_s is None:
            self.schedule_s = len(load_schedule(self.runner.environment.parsed_options))
        if self.get_run_time() > self.schedule_s + self.runner.environment.parsed_options.drain + 60:
            return None
        return (1, 1)
