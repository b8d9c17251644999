"""`tpa demo`: start the local Triton, send real sentences through the text_search pipeline over
gRPC and HTTP, and print what came back with the latencies."""

from __future__ import annotations

import argparse
import time

import numpy as np

from adapter import paths
from adapter.models.scoring import load_langid_eval
from adapter.serving.client import TextClient, decode_strings
from adapter.serving.launcher import LocalTriton

PIPELINE = "text_search"
DEMO_LANGUAGES = ["de", "fr", "es", "it", "pt", "nl", "pl", "ru", "ja", "zh"]
PARAPHRASE = ("How do I reset my password?", "What is the way to change my forgotten password?",
              "The train to Berlin leaves at noon.")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="serve text_search locally and send it real requests")
    parser.add_argument("--per-language", type=int, default=2, help="sentences per language")
    parser.set_defaults(func=run)


def _sentences(per_language: int) -> list[dict]:
    items = load_langid_eval()
    picked = []
    for lang in DEMO_LANGUAGES:
        picked += [item for item in items if item["lang"] == lang][:per_language]
    return picked


def _timed(client: TextClient, texts: list[str]) -> tuple[dict, float]:
    start = time.perf_counter()
    result = client.infer(PIPELINE, texts, ["LANG", "CONFIDENCE", "EMBEDDING"])
    return result, (time.perf_counter() - start) * 1000


def run(args: argparse.Namespace) -> int:
    sentences = _sentences(args.per_language)
    with LocalTriton(log_path=paths.RUNS / "demo" / "triton.log") as triton:
        print(f"Triton ready (HTTP {triton.endpoints.http}, gRPC {triton.endpoints.grpc})\n")
        for protocol in ("grpc", "http"):
            client = TextClient(triton.endpoints, protocol)
            _timed(client, ["warm-up request"])
            print(f"{protocol.upper()}: one request per sentence through {PIPELINE}")
            print(f"  {'expected':8} {'got':4} {'conf':>5} {'ms':>6}  text")
            latencies, correct = [], 0
            for item in sentences:
                result, ms = _timed(client, [item["text"]])
                lang = decode_strings(result["LANG"])[0]
                correct += lang == item["lang"]
                latencies.append(ms)
                print(f"  {item['lang']:8} {lang:4} {result['CONFIDENCE'][0, 0]:5.2f} {ms:6.1f}  "
                      f"{item['text'][:60]}")
            print(f"  {correct}/{len(sentences)} languages right; latency p50 "
                  f"{np.percentile(latencies, 50):.1f} ms, max {max(latencies):.1f} ms\n")
            client.close()

        client = TextClient(triton.endpoints, "grpc")
        result, ms = _timed(client, list(PARAPHRASE))
        emb = result["EMBEDDING"]
        print(f"One batched request of {len(PARAPHRASE)} texts in {ms:.1f} ms; cosine similarity:")
        print(f"  paraphrase: {float(emb[0] @ emb[1]):.3f}   unrelated: {float(emb[0] @ emb[2]):.3f}")
        client.close()
    return 0
