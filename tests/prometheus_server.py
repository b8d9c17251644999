"""A real Prometheus for tests: the Debian package's binary, run in a temp dir on a free
loopback port, scraping the given targets every second."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Mapping

from adapter.serving.launcher import LOOPBACK, free_port

PROMETHEUS_BINARY = Path("/usr/bin/prometheus")
INSTALL_HINT = ("install the Debian package: "
                "apt-get install -y --no-install-recommends prometheus")


class PrometheusMissing(RuntimeError):
    pass


def require_binary(binary: Path = PROMETHEUS_BINARY) -> Path:
    if not binary.exists():
        raise PrometheusMissing(f"{binary} not found: {INSTALL_HINT}")
    return binary


def scrape_config(jobs: Mapping[str, list[str]], interval_s: float) -> str:
    """prometheus.yml with one job per entry of `jobs` (job name -> host:port targets).
    JSON is valid YAML, so no YAML library is needed."""
    interval = f"{round(interval_s * 1000)}ms"
    return json.dumps({
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": [{"job_name": job, "static_configs": [{"targets": targets}]}
                           for job, targets in jobs.items()],
    }, indent=2)


class LocalPrometheus:
    """A prometheus child process; use as a context manager."""

    def __init__(self, workdir: Path, jobs: Mapping[str, list[str]],
                 scrape_interval_s: float = 1.0, binary: Path = PROMETHEUS_BINARY):
        self.workdir = workdir
        self.jobs = jobs
        self.scrape_interval_s = scrape_interval_s
        self.binary = binary
        self.port = free_port()
        self.log_path = workdir / "prometheus.log"
        self._proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self, timeout_s: float = 20.0) -> "LocalPrometheus":
        binary = require_binary(self.binary)
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "prometheus.yml"
        config.write_text(scrape_config(self.jobs, self.scrape_interval_s))
        with self.log_path.open("w") as log:
            self._proc = subprocess.Popen(
                [str(binary), f"--config.file={config}",
                 f"--storage.tsdb.path={self.workdir / 'data'}",
                 f"--web.listen-address={LOOPBACK}:{self.port}"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        self._wait_ready(timeout_s)
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"prometheus exited with code {self._proc.returncode}; "
                                   f"see {self.log_path}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"prometheus not ready after {timeout_s:g} s; see {self.log_path}:\n"
                           f"{self.log_tail()}")

    def query(self, promql: str) -> list[dict]:
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.load(response)["data"]["result"]

    def wait_for_series(self, promql: str, timeout_s: float = 20.0) -> list[dict]:
        """Poll until `promql` returns something: the first rate() needs two scrapes."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            result = self.query(promql)
            if result:
                return result
            time.sleep(0.2)
        raise TimeoutError(f"no result for {promql!r} after {timeout_s:g} s; "
                           f"see {self.log_path}:\n{self.log_tail()}")

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "  (no log written)"
        return "\n".join(f"  {line}" for line in text.splitlines()[-lines:])

    def stop(self) -> None:
        if self._proc is None or self._proc.poll() is not None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()

    def __enter__(self) -> "LocalPrometheus":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
