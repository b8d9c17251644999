"""Sentence-embedding variants (MiniLM ONNX models run by onnxruntime). Contract:
input TEXT (string, [1]) -> EMBEDDING (fp32, [384], mean-pooled, L2-normalised)."""

from __future__ import annotations

import numpy as np

from adapter.serving.backends.text_model import TextModel

MAX_TOKENS = 128  # both MiniLM models were trained with 128-token inputs


class OnnxEmbedding(TextModel):
    def load(self) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        options = ort.SessionOptions()
        # One thread per Triton instance: instances scale across cores, not inside one call.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(self.weights / "model.onnx"), options,
                                            providers=["CPUExecutionProvider"])
        self.input_names = {i.name for i in self.session.get_inputs()}
        # Token embeddings are the 3-D [batch, seq, 384] output; the exports differ in naming.
        self.token_output = next(o.name for o in self.session.get_outputs()
                                 if len(o.shape) == 3 and o.shape[-1] == 384)
        self.tokenizer = Tokenizer.from_file(str(self.weights / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=MAX_TOKENS)
        self.tokenizer.enable_padding()

    def run(self, texts: list[str]) -> dict[str, np.ndarray]:
        encodings = self.tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self.input_names:
            feeds["token_type_ids"] = np.zeros_like(ids)
        (tokens,) = self.session.run([self.token_output], feeds)  # one call per batch
        weights = mask[..., None].astype(np.float32)
        pooled = (tokens * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return {"EMBEDDING": pooled.astype(np.float32)}
