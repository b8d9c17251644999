"""IPA's LSTM load predictor, retrained here and run through onnxruntime.

What IPA does (reconfigurable-ml-pipeline/ipa, read for this module):
- `prediction-modules/lstm-module/train.py`: the model is `LSTM(25, activation="relu")`
  (sigmoid gates, ReLU on the cell input and on the cell state read out, an L1 penalty of 1e-5 on
  the input kernel) followed by `Dense(1)`. Inputs are the max of each 10 s window over 120 s
  (12 values, shape 12x1), the target is the max of the next 20 s. Training data: days 0-21 of
  the Twitter trace damped with `int(v / 8)`, the zero seconds dropped (the daily recording gaps),
  the first 14 days for training, the rest for validation; Adam, MSE, 30 epochs, batch 64,
  seed 7. There is no input scaling: the network sees raw damped rps.
- `load_tester/barazmoon/twitter/loader.py`: the damping, `int(v / damping_factor)`.
- `optimizer/adapter.py`, class `Predictor`: at run time the last 2 min of per-second rps
  (`monitoring_duration: 2`) are reduced to 10 s window maxima and fed raw (float32) to the
  LSTM; with fewer than 12 windows (`backup_predictor_duration: 2` min) the backup predictor
  (`max` in the final configs) gives the max of the windows there are. The output is multiplied
  by `1 + predictor_margin / 100` and rounded; `predictor_margin` is 0 in the final configs.
- `data/configs/final/nlp-1.yaml` (and the other final IPA configs): `predictor_type: lstm`,
  `backup_predictor_type: max`, `monitoring_duration: 2`, `predictor_margin: 0`.

We retrain the same network with PyTorch (`python -m adapter.bench.train_lstm`, see
`adapter/data/ipa_lstm.json` for how the shipped weights were made) and ship it as ONNX, so
the adapter needs no deep-learning library at run time.

Differences from IPA, each small: the prediction is floored at 0 (IPA passes a negative network
output on); windows are aligned to the newest second (IPA aligns them to the oldest second of its
2 min series, which is the same thing when the history is a whole number of windows, as it is at
every decision of the adapter); and the fallback starts below 120 s of history, where IPA's
starts below 111 s (12 windows, the last one possibly partial).

Because the inputs are not scaled, the model only knows the damped Twitter range (0-48 rps):
fed undamped rates, it extrapolates. docs/predictor.md shows what that costs.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from adapter import paths
from adapter.errors import ConfigError

if TYPE_CHECKING:  # onnxruntime is imported only when a model is loaded
    import onnxruntime

WINDOW_S = 10  # IPA's aggregation step
INPUT_WINDOWS = 12  # LSTM_INPUT_SIZE: 120 s of history
HISTORY_S = WINDOW_S * INPUT_WINDOWS
MODEL_PATH = paths.DATA / "ipa_lstm.onnx"
PROVENANCE_PATH = paths.DATA / "ipa_lstm.json"
INPUT_NAME = "window_maxima"  # float32 [batch, 12], oldest window first
OUTPUT_NAME = "max_rps_next_20s"  # float32 [batch, 1]
TRAIN_COMMAND = "python -m adapter.bench.train_lstm"


@dataclass(frozen=True, slots=True, kw_only=True)
class LstmPredictor:
    """IPA's LSTM on the 12 window maxima of the last 120 s; the max of what there is before that.

    `margin_pct` is IPA's `predictor_margin` (0 in its final configs). `model_path` is the ONNX
    file; the default is the one shipped in `adapter/data`. The model is loaded once per process
    and path, when the first predictor for it is built, so a missing file fails there.
    """

    margin_pct: float = 0.0
    model_path: str = str(MODEL_PATH)

    def __post_init__(self) -> None:
        margin = self.margin_pct
        if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not math.isfinite(margin) or margin < 0:
            raise ConfigError(f"{type(self).__name__}: `margin_pct` must be a finite number >= 0, got {margin!r}")
        if not isinstance(self.model_path, str) or not self.model_path:
            raise ConfigError(f"{type(self).__name__}: `model_path` must be a path, got {self.model_path!r}")
        _session(self.model_path)

    def predict(self, history_rps: Sequence[float]) -> float:
        recent = np.asarray(history_rps, dtype=np.float64)[-HISTORY_S:]
        if recent.size == 0:
            return 0.0
        raw = float(recent.max())  # IPA's backup predictor, "max"
        if recent.size == HISTORY_S:
            output = float(predict_window_maxima(recent.reshape(INPUT_WINDOWS, WINDOW_S).max(axis=1)[None, :],
                                                 self.model_path)[0])
            # A ReLU LSTM fed rates far outside its training range can overflow float32; then
            # the backup predictor answers rather than an infinity reaching the planner.
            if math.isfinite(output):
                raw = output
        # IPA: round(output * (1 + margin / 100)); floored at 0 here, a rate cannot be negative.
        return float(max(0, round(raw * (1 + self.margin_pct / 100))))


def predict_window_maxima(maxima: np.ndarray, model_path: str = str(MODEL_PATH)) -> np.ndarray:
    """The network's raw output for each row of 12 window maxima (oldest first), no margin, no floor."""
    maxima = np.asarray(maxima, dtype=np.float32)
    if maxima.ndim != 2 or maxima.shape[1] != INPUT_WINDOWS:
        raise ValueError(f"expected window maxima of shape [n, {INPUT_WINDOWS}], got {maxima.shape}")
    (output,) = _session(model_path).run([OUTPUT_NAME], {INPUT_NAME: maxima})
    return output[:, 0].astype(np.float64)


@functools.lru_cache(maxsize=None)
def _session(model_path: str) -> "onnxruntime.InferenceSession":
    path = Path(model_path)
    if not path.is_file():
        raise ConfigError(f"{path}: IPA LSTM model missing; run `{TRAIN_COMMAND}` to train and export it")
    import onnxruntime

    options = onnxruntime.SessionOptions()
    # One 12-step LSTM per decision: threads would cost more than they save, and the adapter
    # shares its cores with Triton.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    try:
        return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own exception types for bad files
        raise ConfigError(f"{path}: cannot load the IPA LSTM model ({error}); run `{TRAIN_COMMAND}` "
                          f"to rebuild it") from None
