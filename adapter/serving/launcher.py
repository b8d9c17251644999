"""Start and stop a local Triton: the `tritonserver` binary shipped in the nvidia-pytriton wheel,
with the python backend, on loopback ports, in explicit model-control mode."""

from __future__ import annotations

import compileall
import importlib.util
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from adapter import paths
from adapter.errors import ServerError

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
# Triton's glog lines start with a severity letter and a date (E1123 20:22:30.1 ...).
_ERROR_LINE = re.compile(r"^E\d{4} |error|failed|Traceback|Exception", re.IGNORECASE)
# Printed on every CPU-only start; never the cause of a failure.
_HARMLESS = re.compile(r"CudaDriverHelper|NVML|DCGM|CUDA driver")
_FAILED_LOAD = re.compile(r"failed to load '([^']+)' version \d+: (.+?)(?:\\n|\"|$)")


@dataclass(frozen=True)
class Endpoints:
    http_port: int
    grpc_port: int
    metrics_port: int
    host: str = LOOPBACK

    @property
    def http(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def grpc(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"


@dataclass(frozen=True)
class TritonInstall:
    binary: Path
    python_backend: Path
    python_stub: Path
    libraries: Path

    @classmethod
    def find(cls) -> "TritonInstall":
        spec = importlib.util.find_spec("pytriton")
        if spec is None or not spec.submodule_search_locations:
            raise ServerError("tritonserver not found: the nvidia-pytriton==0.7.0 package is not "
                              "installed in this Python (run `make setup`)")
        root = Path(list(spec.submodule_search_locations)[0]) / "tritonserver"
        pyver = f"{sys.version_info.major}.{sys.version_info.minor}"
        install = cls(
            binary=root / "bin" / "tritonserver",
            python_backend=root / "backends" / "python",
            python_stub=root / "python_backend_stubs" / pyver / "triton_python_backend_stub",
            libraries=root.parent.parent / "nvidia_pytriton.libs",
        )
        for name, path in vars(install).items():
            if not path.exists():
                raise ServerError(f"tritonserver install incomplete: {name} missing at {path}")
        return install

    def backend_directory(self) -> Path:
        """A writable backends/ with the python backend and the stub for this Python beside it
        (the wheel keeps the stubs apart, one per Python version)."""
        target = paths.CACHE / "triton-backends"
        python_dir = target / "python"
        stub = python_dir / "triton_python_backend_stub"
        if not stub.exists():
            shutil.copytree(self.python_backend, python_dir, dirs_exist_ok=True)
            shutil.copy2(self.python_stub, stub)
        return target


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        # As servers do: a port whose last connections sit in TIME_WAIT is free to listen on.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((LOOPBACK, port))
        except OSError:
            return False
        return True


def _check_port_free(port: int, role: str) -> None:
    if not port_is_free(port):
        raise ServerError(f"{role} port {port} on {LOOPBACK} is already in use")



class LocalTriton:
    """A tritonserver child process. Use as a context manager, or call start()/stop()."""

    def __init__(
        self,
        repositories: list[Path] | None = None,
        models: list[str] | None = None,
        log_path: Path | None = None,
        endpoints: Endpoints | None = None,
        exit_timeout_s: int = 5,
        extra_args: list[str] | None = None,
    ):
        self.repositories = repositories or [paths.MODEL_REPOSITORY, paths.ENSEMBLES]
        self.models = models  # None: every model in the repositories
        self.log_path = log_path or paths.RUNS / "triton.log"
        self.endpoints = endpoints or Endpoints(free_port(), free_port(), free_port())
        self.exit_timeout_s = exit_timeout_s
        self.extra_args = extra_args or []
        self._proc: subprocess.Popen | None = None
        self._log_file = None

    # -- lifecycle -------------------------------------------------------------------------

    def command(self, install: TritonInstall) -> list[str]:
        e = self.endpoints
        cmd = [str(install.binary)]
        cmd += [f"--model-repository={r}" for r in self.repositories]
        cmd += [
            f"--backend-directory={install.backend_directory()}",
            "--model-control-mode=explicit",
            f"--http-address={e.host}", f"--http-port={e.http_port}",
            f"--grpc-address={e.host}", f"--grpc-port={e.grpc_port}",
            f"--metrics-address={e.host}", f"--metrics-port={e.metrics_port}",
            "--metrics-config=summary_latencies=true",
            f"--exit-timeout-secs={self.exit_timeout_s}",
            "--log-verbose=0",
        ]
        cmd += [f"--load-model={m}" for m in (self.models or ["*"])]
        return cmd + self.extra_args

    def environment(self, install: TritonInstall) -> dict[str, str]:
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            p for p in (str(install.libraries), env.get("LD_LIBRARY_PATH", "")) if p)
        # The python-backend stub embeds Python and imports packages from the first python
        # on PATH, so this venv's bin/ must come first.
        env["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), env.get("PATH", "")))
        # One thread per model instance: instances must not fight over the cores.
        env.setdefault("OMP_NUM_THREADS", "1")
        return env

    def precompile_models(self) -> None:
        """Write each model.py's bytecode before Triton loads it. Otherwise the python-backend
        stub writes __pycache__ into the version folder on first load; the folder's mtime
        changes, Triton takes the model for modified, and the next load of an ensemble using
        it reloads it from disk, dropping the adapter's config override. (The stub ignores
        PYTHONDONTWRITEBYTECODE.)"""
        for repository in self.repositories:
            for model_py in sorted(Path(repository).glob("*/[0-9]*/model.py")):
                compileall.compile_file(str(model_py), quiet=2)

    def start(self, timeout_s: float = 180.0) -> "LocalTriton":
        install = TritonInstall.find()
        self.precompile_models()
        e = self.endpoints
        for port, role in ((e.http_port, "HTTP"), (e.grpc_port, "gRPC"), (e.metrics_port, "metrics")):
            _check_port_free(port, role)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = self.log_path.open("w")
        log.info("starting tritonserver (HTTP %s, gRPC %s, metrics %s), log %s",
                 e.http, e.grpc, e.metrics_port, self.log_path)
        self._proc = subprocess.Popen(
            self.command(install), env=self.environment(install), stdout=self._log_file,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        self._wait_ready(timeout_s)
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        url = f"http://{self.endpoints.http}/v2/health/ready"
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self._close_log()
                raise ServerError(f"tritonserver exited with code {self._proc.returncode} while "
                                  f"starting: {self._failure_reason()}; see {self.log_path}:\n"
                                  f"{self.error_lines()}")
            try:
                with urllib.request.urlopen(url, timeout=1) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        self.stop()
        raise ServerError(f"tritonserver not ready after {timeout_s:.0f} s; see {self.log_path}:\n"
                          f"{self.error_lines()}")

    def _log_lines(self) -> list[str]:
        try:
            return self.log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return []

    def _failure_reason(self) -> str:
        """One line saying why the server did not start."""
        lines = self._log_lines()
        for line in lines:
            if match := _FAILED_LOAD.search(line):
                return f"model '{match[1]}' failed to load ({match[2]})"
        for line in lines:
            if "already in use" in line.lower():
                return "a port is already in use"
        errors = [line for line in lines if line.startswith("E") and not _HARMLESS.search(line)]
        return errors[-1] if errors else "no error in the log"

    def error_lines(self, limit: int = 15) -> str:
        """The log lines that explain a failure (errors, failed loads, tracebacks)."""
        lines = self._log_lines()
        if not lines:
            return "  (no log written)"
        hits = [line for line in lines if _ERROR_LINE.search(line) and not _HARMLESS.search(line)]
        return "\n".join(f"  {line}" for line in (hits or lines)[-limit:])

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=self.exit_timeout_s + 10)
            except subprocess.TimeoutExpired:
                log.warning("tritonserver did not exit in time; killing its process group")
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait()
        # The python-backend stubs are Triton's children; none may outlive it.
        try:
            os.killpg(self._proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._close_log()

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> "LocalTriton":
        return self.start() if not self.running else self

    def __exit__(self, *exc) -> None:
        self.stop()
