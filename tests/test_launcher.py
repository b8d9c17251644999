"""The launcher against the real tritonserver binary: clear failures, clean shutdown."""

from __future__ import annotations

import importlib.util
import socket

import pytest

from adapter.errors import ServerError
from adapter.serving import launcher
from adapter.serving.launcher import Endpoints, LocalTriton, free_port, port_is_free

BROKEN_CONFIG = """
name: "broken"
backend: "python"
max_batch_size: 4
input [ { name: "TEXT" data_type: TYPE_STRING dims: [ 1 ] } ]
output [ { name: "OUT" data_type: TYPE_STRING dims: [ 1 ] } ]
instance_group [ { count: 1 kind: KIND_CPU } ]
"""
BROKEN_MODEL = """
class TritonPythonModel:
    def initialize(self, args):
        raise RuntimeError("weights file is corrupt (test)")
"""


def _repository_with_broken_model(root):
    (root / "broken" / "1").mkdir(parents=True)
    (root / "broken" / "config.pbtxt").write_text(BROKEN_CONFIG)
    (root / "broken" / "1" / "model.py").write_text(BROKEN_MODEL)
    return root


def test_a_model_that_fails_to_load_is_reported_with_its_log_lines(tmp_path):
    repo = _repository_with_broken_model(tmp_path / "repo")
    server = LocalTriton(repositories=[repo], log_path=tmp_path / "triton.log")
    with pytest.raises(ServerError) as failure:
        server.start(timeout_s=120)
    message = str(failure.value)
    headline = message.splitlines()[0]
    assert "model 'broken' failed to load" in headline
    assert "weights file is corrupt (test)" in headline and str(tmp_path / "triton.log") in headline
    assert "NVML" not in message  # harmless CPU-only noise is not shown as a cause
    assert not server.running


def test_a_taken_port_is_reported_before_starting(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = LocalTriton(repositories=[tmp_path], log_path=tmp_path / "t.log",
                             endpoints=Endpoints(free_port(), port, free_port()))
        with pytest.raises(ServerError, match=f"gRPC port {port} on 127.0.0.1 is already in use"):
            server.start()


def test_a_missing_binary_is_reported(monkeypatch, tmp_path):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(launcher.importlib.util, "find_spec",
                        lambda name: None if name == "pytriton" else real_find_spec(name))
    with pytest.raises(ServerError, match="tritonserver not found: the nvidia-pytriton==0.7.0"):
        LocalTriton(repositories=[tmp_path], log_path=tmp_path / "t.log").start()


def test_stop_shuts_down_cleanly_and_frees_the_ports(tmp_path):
    # An empty repository starts in a few seconds: the server itself is what is under test.
    server = LocalTriton(repositories=[tmp_path / "empty"], log_path=tmp_path / "t.log")
    (tmp_path / "empty").mkdir()
    server.start()
    assert server.running
    server.stop()
    assert not server.running
    for port in (server.endpoints.http_port, server.endpoints.grpc_port,
                 server.endpoints.metrics_port):
        assert port_is_free(port), port
    server.start()  # the same ports again: a restarted server must not find them taken
    assert server.running
    server.stop()
