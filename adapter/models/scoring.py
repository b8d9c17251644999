"""Pure scoring functions for the stage variants, plus loaders for the shipped evaluation sets."""

import json

import numpy as np

from adapter.paths import DATA

LANGID_EVAL = DATA / "langid_eval.jsonl"
RETRIEVAL_EVAL = DATA / "retrieval_eval.jsonl"

UNKNOWN = "und"
# Codes the detectors use for "no answer" (cld2 'un', its 'xx-…' scripts, ISO 'zxx').
_UNKNOWN_CODES = {"", "un", "und", "unknown", "xx", "zxx", "none"}
# Withdrawn ISO 639-1 codes some detectors still emit (cld2: 'iw' for Hebrew, 'jw' for Javanese).
_RENAMED = {"iw": "he", "jw": "jv", "in": "id", "ji": "yi", "mo": "ro"}


def normalise_lang_code(code) -> str:
    """Map a detector's language code to lowercase ISO 639-1; 'und' when there is no answer.

    Accepts cld2 ('de', 'zh-Hant', 'iw', 'un'), fastText ('__label__de'), langid.py ('de') and
    lingua (IsoCode639_1 names such as 'DE', or the IsoCode639_1 / Language objects, or None).
    Languages without a two-letter code keep the code the detector gave (e.g. fastText 'ceb').
    """
    if code is None:
        return UNKNOWN
    if hasattr(code, "iso_code_639_1"):  # a lingua Language
        code = code.iso_code_639_1
    text = getattr(code, "name", code)  # a lingua IsoCode639_1 enum member
    text = str(text).strip().lower().removeprefix("__label__")
    primary = text.replace("_", "-").split("-")[0]  # drop script/region: 'zh-hant' -> 'zh'
    if primary in _UNKNOWN_CODES:
        return UNKNOWN
    return _RENAMED.get(primary, primary)


def langid_accuracy(predicted: list[str], expected: list[str]) -> float:
    """Share of items whose (normalised) predicted language equals the expected one."""
    if len(predicted) != len(expected):
        raise ValueError(f"{len(predicted)} predictions for {len(expected)} expected labels")
    if not expected:
        raise ValueError("accuracy of an empty set is undefined")
    hits = sum(normalise_lang_code(p) == normalise_lang_code(e) for p, e in zip(predicted, expected))
    return hits / len(expected)


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.maximum(norms, 1e-12)  # a zero row stays zero instead of becoming NaN


def retrieval_metrics(query_emb: np.ndarray, passage_emb: np.ndarray) -> dict:
    """Recall@1 and MRR by cosine similarity, where query i's correct passage is passage i.

    Ties count against the correct passage, so a model that gives every passage the same score
    ranks last rather than first.
    """
    query_emb = np.asarray(query_emb, dtype=np.float64)
    passage_emb = np.asarray(passage_emb, dtype=np.float64)
    if query_emb.ndim != 2 or query_emb.shape != passage_emb.shape or len(query_emb) == 0:
        raise ValueError(f"need two equal non-empty [n, dim] arrays, got {query_emb.shape} and {passage_emb.shape}")
    sims = _unit_rows(query_emb) @ _unit_rows(passage_emb).T
    correct = np.diag(sims)[:, None]
    ranks = (sims >= correct).sum(axis=1)  # includes the correct passage itself, so rank >= 1
    return {"recall_at_1": float(np.mean(ranks == 1)), "mrr": float(np.mean(1.0 / ranks))}


def _read_jsonl(path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def load_langid_eval() -> list[dict]:
    """Items {'text', 'lang', 'source'} of the shipped language-identification set."""
    return _read_jsonl(LANGID_EVAL)


def load_retrieval_eval() -> list[dict]:
    """Items {'query', 'passage', 'source'} of the shipped retrieval set."""
    return _read_jsonl(RETRIEVAL_EVAL)
