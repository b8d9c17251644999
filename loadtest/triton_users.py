"""What the Locust files share: Triton clients that report to Locust's stats, real input texts,
and an optional log of every request (for the experiment harness's per-second figures).

A request Triton rejects at admission (its queue policy: a full queue, or a queue timeout) is
*shed*: reported to Locust as a `Shed` failure (its own row in the failures table, apart from
other errors) and logged with "shed": true."""

from __future__ import annotations

import json
import random
import time

import gevent
import numpy as np
from locust import events

from adapter.core.admission import is_shed


def init_gevent_grpc() -> None:
    """gRPC under gevent needs its gevent integration before any channel exists."""
    import grpc.experimental.gevent as grpc_gevent

    grpc_gevent.init_gevent()


def real_texts() -> list[str]:
    """The pipeline's inputs: the project's evaluation sentences (30 languages)."""
    from adapter.models.scoring import load_langid_eval

    return [item["text"] for item in load_langid_eval()]


@events.init_command_line_parser.add_listener
def _add_arguments(parser) -> None:
    parser.add_argument("--model", default="text_search", help="Triton model to call")
    parser.add_argument("--protocol", choices=["http", "grpc"], default="http",
                        help="Triton protocol; --host is HOST:PORT of that protocol's endpoint")
    parser.add_argument("--request-log", default="",
                        help="write every request (scheduled time, latency, error) as JSON lines")


HTTP_CONNECTIONS = 256


class Shed(Exception):
    """Triton rejected the request at admission (queue full or queue timeout): not served, on
    purpose, at once."""


class TritonCaller:
    """One Triton client; `call()` sends one text and fires Locust's request event."""

    def __init__(self, environment, host: str):
        options = environment.parsed_options
        self.environment = environment
        self.model = options.model
        self.protocol = options.protocol
        host = host.removeprefix("http://").removeprefix("https://").rstrip("/")
        if self.protocol == "grpc":
            import tritonclient.grpc as module

            self.client = module.InferenceServerClient(host)  # one channel multiplexes every call
        else:
            import tritonclient.http as module  # geventhttpclient: gevent-native

            # One connection per request in flight: the client's default (1) would queue an
            # open-loop load in the client, one request at a time, so Triton could never batch.
            self.client = module.InferenceServerClient(host, concurrency=HTTP_CONNECTIONS)
        self.module = module
        self.texts = real_texts()

    def call(self, scheduled_at: float | None = None) -> None:
        text = random.choice(self.texts)
        tensor = self.module.InferInput("TEXT", [1, 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[text.encode()]], dtype=np.object_))
        started = time.time()
        # Open-loop callers pass the scheduled time: latency counts from when the request
        # should have left, so a stalled client cannot hide queueing (coordinated omission).
        since = scheduled_at if scheduled_at is not None else started
        exception = None
        try:
            self.client.infer(self.model, [tensor])
        except Exception as exc:  # reported to Locust as a failure (shed ones as Shed)
            exception = Shed(str(exc)) if is_shed(str(exc)) else exc
        except gevent.GreenletExit:  # the run ended first: recorded, not lost
            self._report(since, text, RuntimeError("unfinished when the run ended"))
            raise
        self._report(since, text, exception)

    def _report(self, since: float, text: str, exception: Exception | None) -> None:
        self.environment.events.request.fire(
            request_type=self.protocol, name=self.model, response_time=(time.time() - since) * 1000,
            response_length=len(text), exception=exception, context={}, start_time=since)


_log_file = None


@events.test_start.add_listener
def _open_request_log(environment, **_) -> None:
    global _log_file
    path = environment.parsed_options.request_log if environment.parsed_options else ""
    if path:
        _log_file = open(path, "w")


@events.request.add_listener
def _log_request(start_time=None, response_time=None, exception=None, **_) -> None:
    if _log_file is not None:
        _log_file.write(json.dumps({"t": start_time, "ms": round(response_time, 3),
                                    "error": str(exception)[:200] if exception else "",
                                    "shed": isinstance(exception, Shed)}) + "\n")


@events.test_stop.add_listener
def _close_request_log(**_) -> None:
    global _log_file
    if _log_file is not None:
        _log_file.close()
        _log_file = None
