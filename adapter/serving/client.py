"""Send texts to a Triton text model (a variant or the ensemble) over HTTP or gRPC."""

from __future__ import annotations

from typing import Literal

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from adapter.errors import ServerError
from adapter.serving.launcher import Endpoints

Protocol = Literal["http", "grpc"]


def text_input(module, texts: list[str]):
    """The TEXT input tensor: one row per text, shape [batch, 1]."""
    tensor = module.InferInput("TEXT", [len(texts), 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[t.encode()] for t in texts], dtype=np.object_))
    return tensor


class TextClient:
    def __init__(self, endpoints: Endpoints, protocol: Protocol = "http"):
        self.protocol = protocol
        self.module = httpclient if protocol == "http" else grpcclient
        url = endpoints.http if protocol == "http" else endpoints.grpc
        self.client = self.module.InferenceServerClient(url)

    def infer(self, model: str, texts: list[str], outputs: list[str]) -> dict[str, np.ndarray]:
        result = self.client.infer(
            model, [text_input(self.module, texts)],
            outputs=[self.module.InferRequestedOutput(name) for name in outputs])
        return {name: result.as_numpy(name) for name in outputs}

    def infer_batched(self, model: str, texts: list[str], outputs: list[str],
                      batch_size: int = 8) -> dict[str, np.ndarray]:
        """Many texts in requests of `batch_size`, results concatenated in order."""
        parts = [self.infer(model, texts[i:i + batch_size], outputs)
                 for i in range(0, len(texts), batch_size)]
        if not parts:
            raise ServerError(f"no texts to send to {model}")
        return {name: np.concatenate([p[name] for p in parts]) for name in outputs}

    def close(self) -> None:
        self.client.close()


def decode_strings(column: np.ndarray) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in column.reshape(-1)]
