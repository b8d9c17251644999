"""Language identification variants. Contract (every variant):
input TEXT (string, [1]) -> LANG (ISO 639-1 code or 'und', [1]), CONFIDENCE (fp32 in [0, 1],
the engine's own estimate, [1]), NORMALIZED_TEXT (whitespace-collapsed text, [1], fed to the
next stage)."""

from __future__ import annotations

import numpy as np

from adapter.models.scoring import normalise_lang_code
from adapter.serving.backends.text_model import TextModel


class LangIdModel(TextModel):
    def detect(self, texts: list[str]) -> tuple[list[str], list[float]]:
        raise NotImplementedError

    def run(self, texts: list[str]) -> dict[str, np.ndarray]:
        langs, confidences = self.detect(texts)
        return {
            "LANG": np.array([[normalise_lang_code(c).encode()] for c in langs], dtype=np.object_),
            "CONFIDENCE": np.array(confidences, dtype=np.float32).reshape(-1, 1),
            "NORMALIZED_TEXT": np.array([[t.encode()] for t in texts], dtype=np.object_),
        }


class Cld2(LangIdModel):
    def load(self) -> None:
        import pycld2

        self.cld2 = pycld2

    def detect(self, texts):
        # CLD2 has no batch call: one C call per text.
        langs, confidences = [], []
        for text in texts:
            try:
                _, _, details = self.cld2.detect(text)
            except self.cld2.error:  # e.g. control characters CLD2 refuses: no answer, not a failure
                details = (("Unknown", "un", 0, 0.0),)
            langs.append(details[0][1])
            confidences.append(details[0][2] / 100.0)
        return langs, confidences


class FastText(LangIdModel):
    def load(self) -> None:
        import fasttext

        self.model = fasttext.load_model(str(self.weights / "lid.176.ftz"))

    def detect(self, texts):
        # fasttext-predict's multi-line call drops the probabilities, so one call per text.
        results = [self.model.predict(t, k=1) for t in texts]
        return [labels[0] for labels, _ in results], [float(probs[0]) for _, probs in results]


class Lingua(LangIdModel):
    low_accuracy = False

    def load(self) -> None:
        from lingua import LanguageDetectorBuilder

        builder = LanguageDetectorBuilder.from_all_languages().with_preloaded_language_models()
        if self.low_accuracy:
            builder = builder.with_low_accuracy_mode()
        self.detector = builder.build()

    def detect(self, texts):
        # One call for the batch; lingua spreads it over its own thread pool.
        ranked = self.detector.compute_language_confidence_values_in_parallel(texts)
        langs = [r[0].language.iso_code_639_1.name if r else "und" for r in ranked]
        return langs, [float(r[0].value) if r else 0.0 for r in ranked]


class LinguaLow(Lingua):
    low_accuracy = True


class LangidPy(LangIdModel):
    def load(self) -> None:
        from langid.langid import LanguageIdentifier, model

        self.identifier = LanguageIdentifier.from_modelstring(model, norm_probs=True)

    def detect(self, texts):
        results = [self.identifier.classify(t) for t in texts]  # no batch call in langid.py
        return [r[0] for r in results], [float(r[1]) for r in results]
