"""Live profiler: measures each variant on a running Triton, per batch size and instance count.

For every operating point (model, batch size b, instances n) the model is reloaded through the
repository API with `max_batch_size = b`, n instances and no batching delay, then:
- latency: one client sends requests of b texts back to back (concurrency 1), so each request
  is exactly one batch of b; p50/p99 of those requests is the service latency of a batch;
- throughput: 2n clients keep every instance busy; requests x b / elapsed seconds;
- reconfiguration delay: the wall time of that repository load call (it returns once the model
  is ready or has failed), kept as the point's `load_s`; the fit keeps the model's median.
The first requests of each run warm caches and are discarded. The edge only measures; the
latency model is fitted by `adapter.core.profile.fit`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from adapter.core.profile import Measurement, Profiles, fit
from adapter.serving.client import TextClient
from adapter.serving.launcher import Endpoints
from adapter.serving.repository import ModelRepository, configured

OUTPUTS = {"langid": ["LANG"], "embed": ["EMBEDDING"]}


@dataclass(frozen=True)
class ProfileSettings:
    batch_sizes: tuple[int, ...] = (1, 2, 4, 8, 16)
    instances: tuple[int, ...] = (1, 2)
    warmup_requests: int = 5
    min_requests: int = 40  # latency run: at least this many measured requests ...
    min_seconds: float = 3.0  # ... and at least this long
    max_requests: int = 400
    throughput_seconds: float = 2.0


def _latency_run(client: TextClient, model: str, outputs: list[str], batches: list[list[str]],
                 settings: ProfileSettings) -> list[float]:
    samples: list[float] = []
    start = time.perf_counter()
    i = 0
    while i < settings.warmup_requests + settings.max_requests:
        t0 = time.perf_counter()
        client.infer(model, batches[i % len(batches)], outputs)
        if i >= settings.warmup_requests:
            samples.append((time.perf_counter() - t0) * 1000)
        i += 1
        if (len(samples) >= settings.min_requests
                and time.perf_counter() - start >= settings.min_seconds):
            break
    return samples


def _throughput_run(endpoints: Endpoints, model: str, outputs: list[str],
                    batches: list[list[str]], concurrency: int, seconds: float) -> float:
    counts = [0] * concurrency
    warm = threading.Barrier(concurrency + 1)
    stop = threading.Event()
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        client = TextClient(endpoints, "grpc")
        try:
            for j in range(3):  # warm-up, not counted
                client.infer(model, batches[(k + j) % len(batches)], outputs)
            warm.wait()
            j = 0
            while not stop.is_set():
                client.infer(model, batches[(k * 7 + j) % len(batches)], outputs)
                counts[k] += len(batches[(k * 7 + j) % len(batches)])
                j += 1
        except BaseException as exc:  # reported by the caller
            errors.append(exc)
            warm.abort()
        finally:
            client.close()

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(concurrency)]
    for t in threads:
        t.start()
    try:
        warm.wait()
    except threading.BrokenBarrierError:
        pass
    counted_from = sum(counts)
    t0 = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    done = sum(counts) - counted_from
    elapsed = time.perf_counter() - t0
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return done / elapsed


def measure_variant(endpoints: Endpoints, model: str, stage: str, texts: list[str],
                    settings: ProfileSettings,
                    progress: Callable[[str], None] = lambda _: None,
                    windows: dict | None = None) -> list[Measurement]:
    """`windows`, when given, gets each point's latency run as (model, b, n) -> (start, end) on
    the monotonic clock, which is Triton's trace clock (see `with_server_latency`)."""
    repository = ModelRepository(endpoints)
    client = TextClient(endpoints, "grpc")
    outputs = OUTPUTS[stage]
    base = repository.config(model)
    measurements = []
    try:
        for n in settings.instances:
            for b in settings.batch_sizes:
                progress(f"{model} b={b} n={n}")
                t0 = time.perf_counter()
                repository.load(model, configured(base, instances=n, max_batch_size=b,
                                                  max_queue_delay_us=0))
                load_s = time.perf_counter() - t0
                # Every request a different draw of texts: the p99 comes from the length tail
                # (the longest 1% of texts are 3-4x the median), which a few reused texts miss.
                batches = [[texts[(i * b + j) % len(texts)] for j in range(b)]
                           for i in range(settings.warmup_requests + settings.max_requests)]
                started = time.monotonic()
                latencies = _latency_run(client, model, outputs, batches, settings)
                if windows is not None:
                    windows[(model, b, n)] = (started, time.monotonic())
                throughput = _throughput_run(endpoints, model, outputs, batches, 2 * n,
                                             settings.throughput_seconds)
                measurements.append(Measurement(
                    model=model, batch_size=b, instances=n,
                    p50_ms=round(float(np.percentile(latencies, 50)), 3),
                    p99_ms=round(float(np.percentile(latencies, 99)), 3),
                    throughput_rps=round(throughput, 2), requests=len(latencies),
                    load_s=round(load_s, 4)))
    finally:
        repository.load(model, base)  # leave the model as it was found
        repository.close()
        client.close()
    return measurements


def profile_variants(endpoints: Endpoints, variants: dict[str, str], texts: list[str],
                     settings: ProfileSettings, previous: Profiles | None = None,
                     progress=None, windows: dict | None = None) -> Profiles:
    """Measure the variants (model -> stage) and merge them into `previous`."""
    kept = dict(previous.variants) if previous else {}
    repository = ModelRepository(endpoints)
    version = repository.server_version()
    repository.close()
    # A fixed random sample across every language: the evaluation file is sorted by language,
    # and its first texts alone (one language, longer than average) would bias the profile.
    texts = random.Random(0).sample(list(texts), len(texts))
    for model, stage in variants.items():
        kept[model] = fit(measure_variant(endpoints, model, stage, texts, settings,
                                          progress or (lambda _: None), windows))
    provenance = {
        "command": "tpa profile",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "host_cores": os.cpu_count(),
        "triton_version": version,
        "batch_sizes": list(settings.batch_sizes),
        "instances": list(settings.instances),
        "method": "latency: concurrency 1, one batch per request, warm-up discarded; "
                  "throughput: 2 x instances concurrent gRPC clients; "
                  "load_s: wall time of the repository load (reload in place) of each point, "
                  "median over the model's points; server_p50/p99_ms: the same requests in "
                  "Triton's request trace, from arrival to output ready",
    }
    return Profiles(variants=kept, provenance=provenance)


def with_server_latency(profiles: Profiles, trace: Path, windows: dict, warmup: int) -> Profiles:
    """Each measured point's server-side p50/p99: its latency run's requests in Triton's
    request trace (read once Triton has stopped and written all of it), warm-up left out."""
    from adapter.serving.tracing import stage_latencies

    served = stage_latencies(trace, None)
    variants = dict(profiles.variants)
    for model, vp in profiles.variants.items():
        times = served.get(model)
        if times is None:
            continue
        updated = []
        for m in vp.measurements:
            window = windows.get((model, m.batch_size, m.instances))
            ms = times.response_ms[(times.start_s >= window[0]) & (times.start_s <= window[1])][warmup:] \
                if window else np.array([])
            if len(ms):
                m = dataclasses.replace(m, server_p50_ms=round(float(np.percentile(ms, 50)), 3),
                                        server_p99_ms=round(float(np.percentile(ms, 99)), 3))
            updated.append(m)
        variants[model] = fit(updated)
    return dataclasses.replace(profiles, variants=variants)
