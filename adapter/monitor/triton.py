"""Read one Triton's /metrics directly: the embedded default, no Prometheus needed."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from typing import Callable

from adapter.core.observation import Observation
from adapter.errors import ServerError
from adapter.monitor.metrics import Sample, observation_from_samples, parse_exposition


class TritonMetricsSource:
    """Rates from the difference between consecutive scrapes of Triton's /metrics.

    The first `observe()` has nothing to difference against: it primes and returns None
    ("nothing observed yet"), never a zero-traffic observation a planner could act on.
    Each later call returns the window since the call before.
    """

    source = "triton"

    def __init__(self, metrics_url: str, clock: Callable[[], float] = time.monotonic,
                 timeout_s: float = 2.0):
        self.metrics_url = metrics_url
        self.clock = clock
        self.timeout_s = timeout_s
        self._previous: Sample | None = None

    def observe(self) -> Observation | None:
        current = self.sample()
        previous, self._previous = self._previous, current
        if previous is None:
            return None
        return observation_from_samples(previous, current, source=self.source)

    def sample(self) -> Sample:
        text = self._fetch()
        try:
            models = parse_exposition(text)
        except ValueError as exc:
            raise ServerError(f"Triton metrics at {self.metrics_url} are not Prometheus "
                              f"text: {exc}") from exc
        return Sample(time_s=self.clock(), models=models)

    def _fetch(self) -> str:
        url = self.metrics_url
        try:
            with urllib.request.urlopen(url, timeout=self.timeout_s) as response:
                return response.read().decode("utf-8", errors="replace")
        except urllib.error.HTTPError as exc:  # before URLError: it is one
            raise ServerError(f"Triton metrics at {url} answered HTTP {exc.code}") from exc
        except urllib.error.URLError as exc:
            raise ServerError(f"Triton metrics at {url} unreachable: {exc.reason}") from exc
        except TimeoutError as exc:
            raise ServerError(f"Triton metrics at {url} did not answer within "
                              f"{self.timeout_s:g} s") from exc
        except ConnectionError as exc:
            raise ServerError(f"Triton metrics at {url} unreachable: {exc}") from exc
