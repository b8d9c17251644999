"""Triton's model repository API, over gRPC.

Control calls go over gRPC on purpose: over HTTP a load holds an HTTP worker thread for the whole
load, and inference requests served by that worker stall (measured: 1-2.6 s), while over gRPC
in-flight inference is not disturbed."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import tritonclient.grpc as grpcclient
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2
from tritonclient.utils import InferenceServerException

from adapter.errors import ConfigError, ServerError
from adapter.serving.launcher import Endpoints


def read_config_pbtxt(path: Path) -> dict[str, Any]:
    """A config.pbtxt in the JSON form the repository API takes as a config override."""
    try:
        message = text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
    except (OSError, text_format.ParseError) as exc:
        raise ConfigError(f"{path}: not a readable Triton model config: {exc}") from None
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def configured(config: dict[str, Any], *, instances: int | None = None,
               max_batch_size: int | None = None,
               max_queue_delay_us: int | None = None) -> dict[str, Any]:
    """A copy of a model config (Triton's JSON form) with the given knobs changed."""
    out = copy.deepcopy(config)
    if instances is not None:
        groups = out.get("instance_group") or [{"kind": "KIND_CPU"}]
        out["instance_group"] = [dict(groups[0], count=instances)]
    batching = dict(out.get("dynamic_batching") or {})
    if max_batch_size is not None:
        out["max_batch_size"] = max_batch_size
        # Triton fills preferred sizes in (e.g. [16]) and rejects any above max_batch_size.
        preferred = [int(p) for p in batching.get("preferred_batch_size", [])]
        batching["preferred_batch_size"] = [p for p in preferred if p <= max_batch_size]
    if max_queue_delay_us is not None:
        batching["max_queue_delay_microseconds"] = max_queue_delay_us
    if "dynamic_batching" in out or batching:
        out["dynamic_batching"] = batching
    return out


class ModelRepository:
    def __init__(self, endpoints: Endpoints, headers: dict[str, str] | None = None):
        self.url = endpoints.grpc
        self.headers = headers  # the repository-API key, when the server restricts the API
        self.client = grpcclient.InferenceServerClient(self.url)

    def _call(self, what: str, method: str, *args, **kwargs):
        try:
            return getattr(self.client, method)(*args, headers=self.headers, **kwargs)
        except InferenceServerException as exc:
            if "UNAVAILABLE" in str(exc.status()):
                # A gRPC channel that failed to connect waits out a growing reconnect backoff;
                # a fresh channel lets the next call reach a restarted server at once.
                self.client.close()
                self.client = grpcclient.InferenceServerClient(self.url)
            # Triton appends the python traceback; its first line says what went wrong.
            reason = (exc.message() or str(exc)).strip().splitlines()[0]
            raise ServerError(f"Triton at {self.url}: {what} failed: {reason}") from None

    def config(self, model: str) -> dict[str, Any]:
        return self._call(f"get config of {model}", "get_model_config", model,
                          as_json=True)["config"]

    def load(self, model: str, config: dict[str, Any] | None = None) -> None:
        """Load (or reload in place) a model, optionally with a config override."""
        self._call(f"load {model}", "load_model", model,
                   config=json.dumps(config) if config is not None else None)

    def unload(self, model: str) -> None:
        self._call(f"unload {model}", "unload_model", model)

    def states(self) -> dict[str, str]:
        """Model name -> state (READY, UNAVAILABLE, ...) for every model in the repository."""
        index = self._call("read the repository index", "get_model_repository_index",
                           as_json=True)
        return {m["name"]: m.get("state", "") for m in index.get("models", [])}

    def counters(self, model: str) -> tuple[int, int, int]:
        """(inferences, executions, compute ns) Triton has counted for the model so far, over
        its versions: per window, their differences give the mean batch and compute time."""
        stats = self._call(f"read statistics of {model}", "get_inference_statistics", model,
                           as_json=True).get("model_stats", [])
        return (sum(int(m.get("inference_count", 0)) for m in stats),
                sum(int(m.get("execution_count", 0)) for m in stats),
                sum(int(m.get("inference_stats", {}).get("compute_infer", {}).get("ns", 0)) for m in stats))

    def server_version(self) -> str:
        return self._call("read server metadata", "get_server_metadata",
                          as_json=True)["version"]

    def close(self) -> None:
        self.client.close()
