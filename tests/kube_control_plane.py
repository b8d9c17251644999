"""A real Kubernetes control plane for tests: etcd (Debian's `etcd-server`), kube-apiserver and
kube-controller-manager v1.20.2, on free loopback ports in a temp dir. No kubelet: Pods stay
Pending, which is all the adapter's tests need (Deployments, ReplicaSets, scale, Leases,
ConfigMaps, ServiceAccount tokens, RBAC).

Binaries come from `../shared/tools/kube-control-plane-v1.20.2-linux-amd64.tar.zst` (sha256
verified, extracted once into `.cache/`), built from Debian's own `kubernetes` source package as
platform.md describes. When the tarball is missing the tests skip with the reason and the build
recipe; they do not build it themselves (a cold build takes ~5 min on 2 cores).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import ssl
import subprocess
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from adapter import paths
from adapter.models.fetch import sha256_of
from adapter.serving.launcher import LOOPBACK, free_port

VERSION = "v1.20.2"
TARBALL = paths.ROOT.parent / "shared" / "tools" / f"kube-control-plane-{VERSION}-linux-amd64.tar.zst"
CACHE_DIR = paths.CACHE / f"kube-control-plane-{VERSION}"
ETCD = Path("/usr/bin/etcd")
BINARIES = ("kube-apiserver", "kube-controller-manager")
ADMIN_TOKEN = "tpa-test-admin-token"
BUILD_RECIPE = (
    "build kube-apiserver and kube-controller-manager from Debian's source package "
    "kubernetes=1.20.5+really1.20.2-1.1+deb12u1 (platform.md, 'Kubernetes API server') and pack "
    f"them as {TARBALL.name}")


class ControlPlaneUnavailable(RuntimeError):
    """The binaries are not here and cannot be had: the caller fails, quoting this reason."""


def binaries(tarball: Path = TARBALL, cache_dir: Path = CACHE_DIR) -> dict[str, Path]:
    """name -> path of etcd, kube-apiserver, kube-controller-manager; extracts once."""
    if not ETCD.exists():
        raise ControlPlaneUnavailable(
            f"{ETCD} not found: apt-get install -y --no-install-recommends etcd-server")
    found = {name: cache_dir / name for name in BINARIES}
    marker = cache_dir / ".sha256"
    if all(p.exists() for p in found.values()) and marker.exists():
        return {"etcd": ETCD, **found}
    if not tarball.exists():
        raise ControlPlaneUnavailable(f"{tarball} is missing; {BUILD_RECIPE}")
    expected = (tarball.parent / (tarball.name + ".sha256")).read_text().split()[0]
    actual = sha256_of(tarball)
    if actual != expected:
        raise ControlPlaneUnavailable(f"{tarball}: sha256 {actual} != {expected} (.sha256 file)")
    if shutil.which("zstd") is None:
        raise ControlPlaneUnavailable("zstd not found: apt-get install -y --no-install-recommends zstd")
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        tar_path = Path(tmp) / "cp.tar"
        with tar_path.open("wb") as out:
            subprocess.run(["zstd", "-dc", str(tarball)], stdout=out, check=True)
        with tarfile.open(tar_path) as tar:
            for name in BINARIES:
                member = tar.getmember(f"./{name}")
                tar.extract(member, tmp, filter="data")
                os.replace(Path(tmp) / name, found[name])
                found[name].chmod(0o755)
    marker.write_text(actual + "\n")
    return {"etcd": ETCD, **found}


@dataclass
class ControlPlane:
    workdir: Path
    host: str  # https://127.0.0.1:PORT
    ca_file: Path  # the apiserver's self-signed serving certificate

    def api_client(self, token: str = ADMIN_TOKEN):
        """A kubernetes.client.ApiClient authenticating with a bearer token."""
        from kubernetes import client

        config = client.Configuration()
        config.host = self.host
        config.ssl_ca_cert = str(self.ca_file)
        config.api_key = {"authorization": f"Bearer {token}"}
        return client.ApiClient(config)

    def kubeconfig(self, token: str, path: Path, namespace: str = "default") -> Path:
        """A kubeconfig file for a subprocess (the adapter), JSON (valid YAML)."""
        import json

        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "test",
            "clusters": [{"name": "test", "cluster": {
                "server": self.host, "certificate-authority": str(self.ca_file)}}],
            "users": [{"name": "test", "user": {"token": token}}],
            "contexts": [{"name": "test", "context": {
                "cluster": "test", "user": "test", "namespace": namespace}}],
        }))
        return path


class _Process:
    def __init__(self, name: str, cmd: list[str], log_path: Path):
        self.name, self.log_path = name, log_path
        self._log = log_path.open("w")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)

    def check(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with code {self.proc.returncode}; "
                               f"see {self.log_path}:\n{tail(self.log_path)}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return "  (no log)"
    return "\n".join(f"  {line}" for line in text[-lines:])


def _wait(url: str, ctx: ssl.SSLContext | None, procs: list[_Process], timeout_s: float,
          headers: dict[str, str] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        for p in procs:
            p.check()
        try:
            request = urllib.request.Request(url, headers=headers or {})
            with urllib.request.urlopen(request, timeout=2, context=ctx) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError, ssl.SSLError) as exc:
            last = str(exc)
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout_s:g} s ({last})")


@contextlib.contextmanager
def control_plane(workdir: Path, timeout_s: float = 60.0):
    """Start etcd + kube-apiserver + kube-controller-manager; yield a ControlPlane."""
    bins = binaries()
    workdir.mkdir(parents=True, exist_ok=True)
    sa_key = workdir / "sa.key"
    subprocess.run(["openssl", "genrsa", "-out", str(sa_key), "2048"], check=True,
                   capture_output=True)
    tokens = workdir / "tokens.csv"
    tokens.write_text(f'{ADMIN_TOKEN},admin,admin,"system:masters"\n')
    cert_dir = workdir / "certs"
    etcd_port, etcd_peer, api_port = free_port(), free_port(), free_port()
    procs: list[_Process] = []
    try:
        procs.append(_Process("etcd", [
            str(bins["etcd"]), f"--data-dir={workdir / 'etcd'}", "--name=test",
            f"--listen-client-urls=http://{LOOPBACK}:{etcd_port}",
            f"--advertise-client-urls=http://{LOOPBACK}:{etcd_port}",
            f"--listen-peer-urls=http://{LOOPBACK}:{etcd_peer}",
            f"--initial-advertise-peer-urls=http://{LOOPBACK}:{etcd_peer}",
            f"--initial-cluster=test=http://{LOOPBACK}:{etcd_peer}",
            "--log-level=warn"], workdir / "etcd.log"))
        _wait(f"http://{LOOPBACK}:{etcd_port}/health", None, procs, timeout_s)
        procs.append(_Process("kube-apiserver", [
            str(bins["kube-apiserver"]), f"--etcd-servers=http://{LOOPBACK}:{etcd_port}",
            f"--bind-address={LOOPBACK}", f"--advertise-address={LOOPBACK}",
            f"--secure-port={api_port}", "--insecure-port=0", f"--cert-dir={cert_dir}",
            f"--token-auth-file={tokens}", "--authorization-mode=RBAC",
            f"--service-account-key-file={sa_key}",
            f"--service-account-signing-key-file={sa_key}",
            "--service-account-issuer=https://kubernetes.default.svc",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--disable-admission-plugins=ServiceAccount", "--v=0"], workdir / "apiserver.log"))
        ca_file = cert_dir / "apiserver.crt"
        deadline = time.monotonic() + timeout_s
        while not ca_file.exists() and time.monotonic() < deadline:
            procs[-1].check()
            time.sleep(0.1)
        ctx = ssl.create_default_context(cafile=str(ca_file))
        host = f"https://{LOOPBACK}:{api_port}"
        _wait(f"{host}/readyz", ctx, procs, timeout_s,
              headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        plane = ControlPlane(workdir=workdir, host=host, ca_file=ca_file)
        kubeconfig = plane.kubeconfig(ADMIN_TOKEN, workdir / "admin.kubeconfig")
        procs.append(_Process("kube-controller-manager", [
            str(bins["kube-controller-manager"]), f"--kubeconfig={kubeconfig}",
            "--leader-elect=false", "--controllers=*", "--port=0", "--secure-port=0",
            f"--service-account-private-key-file={sa_key}", f"--root-ca-file={ca_file}",
            "--v=0"], workdir / "controller-manager.log"))
        yield plane
    finally:
        for p in reversed(procs):
            p.stop()
