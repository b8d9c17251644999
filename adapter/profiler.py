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

Saturation sweep (`sweep_variant`, `tpa profile --saturation`): per (batch size B, instances n)
the model is reloaded with max batch size B and no delay, then sent open-loop
Poisson arrivals of one text each (a child process, latency from the scheduled send time) at a
geometric ladder of rates: from a tenth of the stage model's capacity at (B, n) (the model may be
optimistic several times over, so the ladder starts well below it) upwards by 30 % a step, up to
what the load generator sends reliably (`SweepSettings.max_rps`). Each rate runs long enough for
a p99 from `min_requests` requests (5-20 s); Triton's statistics give its mean batch and compute
time. The ladder stops at a rate that fails requests or falls behind its arrivals, or at the
second rate in a row over the latency budget (past saturation nothing more is learnt; one rate
over and the next within is noise, see `core.saturation.measured_max_rps`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import os
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from adapter.core.profile import Measurement, Profiles, SaturationPoint, VariantProfile, fit
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


@dataclass(frozen=True)
class SweepSettings:
    configs: tuple[tuple[int, int], ...] = ((1, 1), (4, 2))  # (batch size, instances)
    start_share: float = 0.1  # the ladder's first rate, a share of the model's predicted capacity
    step: float = 1.3  # each rate is this times the one before
    max_share: float = 1.5  # the ladder's last rate at most, a share of the predicted capacity
    budget_ms: float = 150.0  # the latency one stage may take: two rates in a row over it end the ladder
    min_requests: int = 200  # per rate, for its p99 ...
    seconds: int = 5  # ... in at least this many seconds per rate (the first is left out) ...
    max_seconds: int = 20  # ... and at most this many
    seed: int = 0  # of the Poisson arrivals
    # What one Python load generator sends reliably beside Triton on a small machine: a faster
    # variant is swept up to this rate only (its curve then bounds its max rps from below).
    max_rps: float = 300.0


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


def rate_seconds(rate: float, settings: SweepSettings) -> int:
    """How long one rate of the ladder runs: enough for `min_requests` after the first second."""
    return int(min(max(settings.seconds, 1 + math.ceil(settings.min_requests / rate)), settings.max_seconds))


def ladder(capacity: float, settings: SweepSettings) -> list[float]:
    """The sweep's rates for a stage the model gives `capacity` requests/s (see the module docstring)."""
    top = min(settings.max_share * capacity, settings.max_rps)
    rates = [min(settings.start_share * capacity, top / settings.step ** 4)]  # at least five rates
    while rates[-1] * settings.step <= top * (1 + 1e-9):
        rates.append(rates[-1] * settings.step)
    return rates


def _open_loop_point(endpoints: Endpoints, repository: ModelRepository, model: str, batch: int,
                     instances: int, rate: float, texts: list[str], settings: SweepSettings,
                     records_path: Path) -> SaturationPoint:
    from adapter.loadgen import load_records, start_schedule

    seconds = rate_seconds(rate, settings)
    before = repository.counters(model)
    process = start_schedule(endpoints.http, model, [rate] * seconds, str(records_path),
                             texts=texts, max_workers=64, poisson_seed=settings.seed)
    process.join()
    after = repository.counters(model)
    records = [r for r in load_records(str(records_path)) if r.scheduled_s >= 1.0]  # first second: warm-up
    window = seconds - 1.0
    served = any(not r.error for r in records)
    # Answered within the window (sent in it and done by its end): below sent once the queue grows.
    answered = sum(1 for r in records if not r.error and r.scheduled_s + r.latency_ms / 1000 <= seconds)
    latencies = np.array([r.latency_ms if not r.error else np.inf for r in records])
    inferences, executions, compute_ns = (a - b for a, b in zip(after, before))
    return SaturationPoint(
        batch_size=batch, instances=instances, offered_rps=round(rate, 3),
        sent_rps=round(len(records) / window, 3), achieved_rps=round(answered / window, 3),
        p50_ms=round(float(np.percentile(latencies, 50)), 3) if served else math.inf,
        p99_ms=round(float(np.percentile(latencies, 99)), 3) if served else math.inf,
        requests=len(records), failures=sum(1 for r in records if r.error),
        mean_batch=round(inferences / executions, 3) if executions else None,
        compute_ms=round(compute_ns / executions / 1e6, 3) if executions else None,
        host_load_1m=round(os.getloadavg()[0], 2))


def sweep_variant(endpoints: Endpoints, model: str, profile: VariantProfile, texts: list[str],
                  settings: SweepSettings, progress: Callable[[str], None] = lambda _: None,
                  workdir: Path = Path("/tmp")) -> list[SaturationPoint]:
    """The model's saturation curves (see the module docstring), the model left as found."""
    from adapter.core.saturation import keeps_up, predicted, within

    repository = ModelRepository(endpoints)
    base = repository.config(model)
    points: list[SaturationPoint] = []
    try:
        for batch, instances in settings.configs:
            repository.load(model, configured(base, instances=instances, max_batch_size=batch,
                                              max_queue_delay_us=0))
            _, capacity = predicted(profile, batch, instances, 1.0)
            over = 0
            for rate in ladder(capacity, settings):
                progress(f"{model} b={batch} n={instances} {rate:.0f} req/s")
                point = _open_loop_point(endpoints, repository, model, batch, instances, rate,
                                         texts, settings, workdir / f"sweep-{model}.json")
                points.append(point)
                over = 0 if within(point, settings.budget_ms, side="client") else over + 1
                if not keeps_up(point) or over == 2:  # saturated: nothing more to learn
                    break
    finally:
        repository.load(model, base)
        repository.close()
    return points
