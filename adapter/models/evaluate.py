"""`tpa models evaluate`: measure every variant's accuracy through the running Triton on the
shipped evaluation sets, and its client-side latency at batch 1 and 8. The accuracies go to the
pipeline's accuracy.yaml, where the planner reads them."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import yaml
from tqdm import tqdm

from adapter import paths
from adapter.models import catalog, scoring
from adapter.serving.client import TextClient, decode_strings

LATENCY_BATCHES = (1, 8)
LATENCY_REPEATS = 40


@dataclass(frozen=True)
class VariantScore:
    model: str
    stage: str
    accuracy: float  # the figure the planner uses: langid accuracy, embed Recall@1
    metric: str
    n: int
    mrr: float | None
    latency_ms: dict[int, float]  # batch size -> median client-side latency


def _latency(client: TextClient, model: str, texts: list[str], output: str) -> dict[int, float]:
    result = {}
    for batch in LATENCY_BATCHES:
        samples = []
        for i in range(LATENCY_REPEATS + 3):
            chunk = [texts[(i * batch + j) % len(texts)] for j in range(batch)]
            start = time.perf_counter()
            client.infer(model, chunk, [output])
            if i >= 3:  # the first calls warm caches and are discarded
                samples.append((time.perf_counter() - start) * 1000)
        result[batch] = statistics.median(samples)
    return result


def score_variant(client: TextClient, variant: catalog.Variant) -> VariantScore:
    if variant.stage == "langid":
        items = scoring.load_langid_eval()
        texts = [item["text"] for item in items]
        got = decode_strings(client.infer_batched(variant.model, texts, ["LANG"])["LANG"])
        accuracy = scoring.langid_accuracy(got, [item["lang"] for item in items])
        return VariantScore(variant.model, variant.stage, accuracy, "accuracy", len(items), None,
                            _latency(client, variant.model, texts, "LANG"))
    pairs = scoring.load_retrieval_eval()
    queries = client.infer_batched(variant.model, [p["query"] for p in pairs], ["EMBEDDING"])
    passages = client.infer_batched(variant.model, [p["passage"] for p in pairs], ["EMBEDDING"])
    metrics = scoring.retrieval_metrics(queries["EMBEDDING"], passages["EMBEDDING"])
    return VariantScore(variant.model, variant.stage, metrics["recall_at_1"], "recall_at_1",
                        len(pairs), metrics["mrr"],
                        _latency(client, variant.model, [p["query"] for p in pairs], "EMBEDDING"))


def evaluate(client: TextClient, models: list[str] | None = None) -> list[VariantScore]:
    variants = [v for v in catalog.VARIANTS if models is None or v.model in models]
    return [score_variant(client, v) for v in tqdm(variants, desc="evaluate", unit="variant",
                                                    disable=None)]


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_accuracy(scores: list[VariantScore], path: Path, triton_version: str) -> None:
    """Merge the scores into the pipeline's accuracy file (variants not evaluated are kept)."""
    existing = yaml.safe_load(path.read_text()) if path.exists() else None
    models = (existing or {}).get("models", {})
    for s in scores:
        entry = {"accuracy": round(s.accuracy, 4), "metric": s.metric, "n": s.n}
        if s.mrr is not None:
            entry["mrr"] = round(s.mrr, 4)
        entry["latency_ms_b1"] = round(s.latency_ms[1], 2)
        entry["latency_ms_b8"] = round(s.latency_ms[8], 2)
        models[s.model] = entry
    document = {
        "provenance": {
            "command": "tpa models evaluate",
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "host_cores": os.cpu_count(),
            "python": platform.python_version(),
            "triton_version": triton_version,
            "langid_eval_sha256": _file_sha256(paths.DATA / "langid_eval.jsonl"),
            "retrieval_eval_sha256": _file_sha256(paths.DATA / "retrieval_eval.jsonl"),
            "latency": "client-side median over HTTP, one request of 1 or 8 texts",
        },
        "models": dict(sorted(models.items())),
    }
    path.write_text("# Written by `tpa models evaluate`; measured, not copied. Re-run to refresh.\n"
                    + yaml.safe_dump(document, sort_keys=False))


def markdown_table(scores: list[VariantScore]) -> str:
    rows = ["| stage | variant | metric | accuracy | MRR | ms b1 | ms b8 |",
            "|---|---|---|---|---|---|---|"]
    for s in scores:
        mrr = f"{s.mrr:.3f}" if s.mrr is not None else ""
        rows.append(f"| {s.stage} | {s.model} | {s.metric} | {s.accuracy:.3f} | {mrr} | "
                    f"{s.latency_ms[1]:.1f} | {s.latency_ms[8]:.1f} |")
    return "\n".join(rows)

