"""Open-loop load for demos and tests: a per-second rate schedule sent to one Triton model.

Arrivals follow the schedule whatever the server does (a dispatcher hands each request to a
worker pool at its scheduled time), and latency is measured from the scheduled time, so a slow
server cannot hide its slowness by slowing the arrivals down (no coordinated omission).
The Locust users in loadtest/ are the tool for real load tests and experiments; this is the
small equivalent the integration tests run in a child process, without Locust's gevent.
"""

from __future__ import annotations

import json
import multiprocessing
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from adapter.workloads import arrival_times

DEFAULT_TEXTS = ("Der Zug nach Berlin fährt um zwölf Uhr ab.", "The weather is lovely today.",
                 "Le chat dort sur le canapé.", "El tren sale a las doce.")


@dataclass(frozen=True)
class Record:
    scheduled_s: float  # offset from the start of the run
    latency_ms: float  # from the scheduled time to the answer
    error: str  # "" when the request succeeded


def run_schedule(http_url: str, model: str, schedule_rps: Sequence[float], out_path: str,
                 texts: Sequence[str] = DEFAULT_TEXTS, max_workers: int = 32,
                 poisson_seed: int | None = None) -> None:
    import tritonclient.http as httpclient

    local = threading.local()
    records: list[Record] = []
    lock = threading.Lock()
    t0 = time.perf_counter()

    def send(scheduled: float, text: str) -> None:
        if not hasattr(local, "client"):
            local.client = httpclient.InferenceServerClient(http_url, network_timeout=60)
        tensor = httpclient.InferInput("TEXT", [1, 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[text.encode()]], dtype=np.object_))
        error = ""
        try:
            local.client.infer(model, [tensor])
        except Exception as exc:  # every failure is recorded; none stops the load
            error = str(exc)[:200] or type(exc).__name__
        with lock:
            records.append(Record(scheduled, (time.perf_counter() - t0 - scheduled) * 1000, error))

    with ThreadPoolExecutor(max_workers=max_workers) as pool:
        times = arrival_times(np.asarray(schedule_rps, dtype=float), poisson=poisson_seed is not None,
                              seed=poisson_seed or 0)
        for n, scheduled in enumerate(float(t) for t in times):
            time.sleep(max(0.0, t0 + scheduled - time.perf_counter()))
            pool.submit(send, scheduled, texts[n % len(texts)])
    with open(out_path, "w") as f:
        json.dump([[r.scheduled_s, r.latency_ms, r.error] for r in records], f)


def start_schedule(http_url: str, model: str, schedule_rps: Sequence[float], out_path: str,
                   texts: Sequence[str] = DEFAULT_TEXTS, max_workers: int = 32,
                   poisson_seed: int | None = None) -> multiprocessing.Process:
    """Run the schedule in a child process (its own GIL, like a real client)."""
    process = multiprocessing.get_context("spawn").Process(
        target=run_schedule, args=(http_url, model, list(schedule_rps), out_path, list(texts), max_workers,
                                   poisson_seed), daemon=True)
    process.start()
    return process


def load_records(out_path: str) -> list[Record]:
    with open(out_path) as f:
        return [Record(*row) for row in json.load(f)]


def summarise(records: Sequence[Record]) -> dict:
    latencies = np.array([r.latency_ms for r in records]) if records else np.zeros(1)
    errors = sorted({r.error for r in records if r.error})
    return {"requests": len(records), "failed": sum(1 for r in records if r.error),
            "first_errors": errors[:3],
            "p50_ms": round(float(np.percentile(latencies, 50)), 2),
            "p99_ms": round(float(np.percentile(latencies, 99)), 2),
            "max_ms": round(float(latencies.max()), 2)}
