"""The real local Triton serving text_search: every variant, both protocols, bad requests."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from adapter.models import catalog
from adapter.serving.client import TextClient, decode_strings

KNOWN = [
    ("The weather is lovely today and we are going to the beach.", "en"),
    ("Le chat dort sur le canapé pendant que la pluie tombe dehors.", "fr"),
    ("Der Zug nach Berlin fährt um zwölf Uhr vom Hauptbahnhof ab.", "de"),
    ("El tren sale de la estación a las doce del mediodía.", "es"),
    ("Поезд отправляется с центрального вокзала в полдень.", "ru"),
    ("電車は正午に中央駅を出発します。", "ja"),
]
PARAPHRASE = ("How do I reset my password?", "What is the way to change a forgotten password?",
              "The train to Berlin leaves at noon.")
LANGID = [v.model for v in catalog.VARIANTS if v.stage == "langid"]
EMBED = [v.model for v in catalog.VARIANTS if v.stage == "embed"]


@pytest.fixture(scope="module", params=["http", "grpc"])
def client(request, triton):
    c = TextClient(triton.endpoints, request.param)
    yield c
    c.close()


def test_every_variant_and_the_ensemble_is_ready(triton):
    index = httpclient.InferenceServerClient(triton.endpoints.http).get_model_repository_index()
    states = {m["name"]: m.get("state") for m in index}
    for model in [v.model for v in catalog.VARIANTS] + ["text_search"]:
        assert states.get(model) == "READY", (model, states)


def test_ensemble_returns_the_right_language_and_an_embedding(client):
    texts = [t for t, _ in KNOWN]
    result = client.infer("text_search", texts, ["LANG", "CONFIDENCE", "EMBEDDING"])
    assert decode_strings(result["LANG"]) == [lang for _, lang in KNOWN]
    assert result["EMBEDDING"].shape == (len(texts), 384)
    assert np.allclose(np.linalg.norm(result["EMBEDDING"], axis=1), 1.0, atol=1e-4)
    assert ((result["CONFIDENCE"] > 0) & (result["CONFIDENCE"] <= 1)).all()


def test_ensemble_paraphrase_is_closer_than_unrelated(client):
    emb = client.infer("text_search", list(PARAPHRASE), ["EMBEDDING"])["EMBEDDING"]
    assert emb[0] @ emb[1] > emb[0] @ emb[2] + 0.3


@pytest.mark.parametrize("model", LANGID)
def test_each_langid_variant_identifies_clear_sentences(client, model):
    result = client.infer(model, [t for t, _ in KNOWN], ["LANG", "CONFIDENCE", "NORMALIZED_TEXT"])
    assert decode_strings(result["LANG"]) == [lang for _, lang in KNOWN]
    assert result["CONFIDENCE"].dtype == np.float32 and result["CONFIDENCE"].shape == (6, 1)
    assert decode_strings(result["NORMALIZED_TEXT"]) == [t for t, _ in KNOWN]


@pytest.mark.parametrize("model", EMBED)
def test_each_embed_variant_ranks_the_paraphrase_first(client, model):
    emb = client.infer(model, list(PARAPHRASE), ["EMBEDDING"])["EMBEDDING"]
    assert emb.dtype == np.float32 and emb.shape == (3, 384)
    assert emb[0] @ emb[1] > emb[0] @ emb[2] + 0.2


@pytest.mark.parametrize("model", ["text_search", *LANGID, *EMBED])
def test_batched_request_gives_the_same_answers_as_single_ones(client, model):
    texts = [t for t, _ in KNOWN] + list(PARAPHRASE)[:2]
    outputs = ["LANG", "EMBEDDING"] if model == "text_search" else (
        ["LANG"] if model in LANGID else ["EMBEDDING"])
    batched = client.infer(model, texts, outputs)
    singles = [client.infer(model, [t], outputs) for t in texts]
    for name in outputs:
        one_by_one = np.concatenate([s[name] for s in singles])
        if name == "LANG":
            assert decode_strings(batched[name]) == decode_strings(one_by_one)
        elif model.endswith("_int8"):
            # Dynamic int8 quantisation picks its activation scale per call, so a batch is
            # quantised a little differently from each text alone: same direction, not bits.
            cosine = (batched[name] * one_by_one).sum(axis=1)
            assert cosine.min() > 0.99, cosine
        else:  # padding to the longest text in a batch changes float rounding only
            np.testing.assert_allclose(batched[name], one_by_one, atol=2e-5)


def _raw_infer(client: TextClient, model: str, tensor):
    return client.client.infer(model, [tensor])


def _typed_input(client: TextClient, shape, datatype, data):
    tensor = client.module.InferInput("TEXT", shape, datatype)
    tensor.set_data_from_numpy(data)
    return tensor


BAD_REQUESTS = {
    "wrong dtype": (lambda c: _typed_input(c, [1, 1], "FP32", np.ones((1, 1), np.float32)),
                    "text_search", "data-type is .FP32., but model .text_search. expects .BYTES."),
    "wrong shape": (lambda c: _typed_input(c, [1, 2], "BYTES", np.array([[b"a", b"b"]], object)),
                    "text_search", "(?i)shape"),
    "empty text": (lambda c: _typed_input(c, [1, 1], "BYTES", np.array([[b"   "]], object)),
                   "text_search", "TEXT is empty"),
    "1 MB text": (lambda c: _typed_input(c, [1, 1], "BYTES", np.array([[b"a" * 1_000_000]], object)),
                  "text_search", "TEXT is 1000000 bytes; the limit is 65536"),
    "invalid utf-8": (lambda c: _typed_input(c, [1, 1], "BYTES", np.array([[b"\xff\xfe"]], object)),
                      "langid_cld2", "not valid UTF-8"),
    "control characters only": (lambda c: _typed_input(c, [1, 1], "BYTES", np.array([[b"\x00\x01\x1b"]], object)),
                                "text_search", "TEXT has only control characters"),
    "unknown model": (lambda c: _typed_input(c, [1, 1], "BYTES", np.array([[b"hello"]], object)),
                      "no_such_model", "(?i)unknown model|not found"),
}


@pytest.mark.parametrize("case", BAD_REQUESTS)
def test_bad_request_gets_a_triton_error_and_the_server_keeps_serving(client, case):
    make_tensor, model, message = BAD_REQUESTS[case]
    with pytest.raises(InferenceServerException, match=message) as raised:
        _raw_infer(client, model, make_tensor(client))
    if case != "unknown model":  # the client's mistake: 400 / INVALID_ARGUMENT, not a server error
        assert raised.value.status() in ("400", "StatusCode.INVALID_ARGUMENT"), raised.value.status()
    result = client.infer("text_search", [KNOWN[2][0]], ["LANG"])
    assert decode_strings(result["LANG"]) == ["de"]


def test_grpc_and_http_give_the_same_embedding(triton):
    http, grpc = TextClient(triton.endpoints, "http"), TextClient(triton.endpoints, "grpc")
    a = http.infer("text_search", [PARAPHRASE[0]], ["EMBEDDING"])["EMBEDDING"]
    b = grpc.infer("text_search", [PARAPHRASE[0]], ["EMBEDDING"])["EMBEDDING"]
    np.testing.assert_array_equal(a, b)
    assert grpcclient and http.client.is_server_live()
