"""Constant load from another process: a fixed request rate to a model over HTTP, recording
every request's latency and failure. Used by tests that must prove zero failed requests."""

from __future__ import annotations

import json
import multiprocessing
import sys
import threading
import time

TEXTS = ["Der Zug nach Berlin fährt um zwölf Uhr ab.", "The weather is lovely today.",
         "Le chat dort sur le canapé.", "El tren sale a las doce."]


def run_load(http_url: str, model: str, rps: float, seconds: float, out_path: str,
             threads: int = 4) -> None:
    import numpy as np
    import tritonclient.http as httpclient

    interval = threads / rps
    records: list[tuple[float, float, str]] = []  # (start offset s, latency ms, error or "")
    lock = threading.Lock()
    t0 = time.perf_counter()

    def worker(k: int) -> None:
        client = httpclient.InferenceServerClient(http_url, network_timeout=30)
        next_at = t0 + k * interval / threads
        i = 0
        while next_at - t0 < seconds:
            time.sleep(max(0.0, next_at - time.perf_counter()))
            text = TEXTS[(k + i) % len(TEXTS)]
            tensor = httpclient.InferInput("TEXT", [1, 1], "BYTES")
            tensor.set_data_from_numpy(np.array([[text.encode()]], dtype=np.object_))
            start = time.perf_counter()
            error = ""
            try:
                client.infer(model, [tensor])
            except Exception as exc:  # every failure is recorded, none ends the load
                error = str(exc)[:200]
            with lock:
                records.append((start - t0, (time.perf_counter() - start) * 1000, error))
            next_at += interval
            i += 1
        client.close()

    workers = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    with open(out_path, "w") as f:
        json.dump(records, f)


def start_load(http_url: str, model: str, rps: float, seconds: float,
               out_path: str) -> multiprocessing.Process:
    process = multiprocessing.get_context("spawn").Process(
        target=run_load, args=(http_url, model, rps, seconds, out_path), daemon=True)
    process.start()
    return process


def summary(out_path: str) -> dict:
    import numpy as np

    with open(out_path) as f:
        records = json.load(f)
    latencies = np.array([r[1] for r in records])
    failures = [r for r in records if r[2]]
    return {"requests": len(records), "failed": len(failures),
            "first_errors": sorted({r[2] for r in failures})[:3],
            "p50_ms": float(np.percentile(latencies, 50)),
            "p99_ms": float(np.percentile(latencies, 99)), "max_ms": float(latencies.max())}


if __name__ == "__main__":
    run_load(sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), sys.argv[5])
