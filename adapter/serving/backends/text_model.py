"""Base class for text models in Triton's python backend: one engine call per batch.

The dynamic batcher hands `execute` several requests at once; each request may itself carry
several texts (batch dimension). All valid texts go through the engine in one call and are
split back per request. A bad request gets its own Triton error; the others still succeed.
"""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import numpy as np

# The limit keeps one request from pinning a CPU core for seconds; 64 KiB is far beyond any
# search query or sentence this pipeline serves.
MAX_TEXT_BYTES = 64 * 1024


class BadText(ValueError):
    pass


def decode_text(raw: object) -> str:
    data = raw if isinstance(raw, bytes) else str(raw).encode()
    if len(data) > MAX_TEXT_BYTES:
        raise BadText(f"TEXT is {len(data)} bytes; the limit is {MAX_TEXT_BYTES}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadText(f"TEXT is not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    text = " ".join(text.split())
    if not text:
        raise BadText("TEXT is empty")
    if not any(unicodedata.category(c)[0] != "C" for c in text):
        raise BadText("TEXT has only control characters")
    return text


class TextModel:
    """Subclasses set `input_name` and implement `load()` and `run(texts) -> {output: array}`
    where every array has one row per text."""

    input_name = "TEXT"

    def initialize(self, args: dict) -> None:
        self.model_config = json.loads(args["model_config"])
        self.model_name = args["model_name"]
        self.weights = Path(args["model_repository"]) / args["model_version"] / "weights"
        self.load()

    def load(self) -> None:
        raise NotImplementedError

    def run(self, texts: list[str]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def execute(self, requests: list) -> list:
        import triton_python_backend_utils as pb_utils

        texts: list[str] = []
        spans: dict[int, tuple[int, int]] = {}
        errors: dict[int, str] = {}
        for i, request in enumerate(requests):
            raw = pb_utils.get_input_tensor_by_name(request, self.input_name).as_numpy()
            try:
                decoded = [decode_text(x) for x in raw.reshape(-1)]
            except BadText as exc:
                errors[i] = f"{self.model_name}: {exc}"
                continue
            spans[i] = (len(texts), len(texts) + len(decoded))
            texts.extend(decoded)

        outputs = self.run(texts) if texts else {}
        responses = []
        for i in range(len(requests)):
            if i in errors:
                # INVALID_ARG: the client's mistake (HTTP 400, gRPC INVALID_ARGUMENT), not a 500.
                error = pb_utils.TritonError(errors[i], pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(error=error))
                continue
            start, end = spans[i]
            tensors = [pb_utils.Tensor(name, values[start:end]) for name, values in outputs.items()]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses

    def finalize(self) -> None:
        pass
