"""Retrain IPA's LSTM load predictor and export it to adapter/data/ipa_lstm.onnx (+ .json provenance).

    pip install -c requirements.lock -e '.[train]'     # PyTorch, CPU build; never needed to run or test
    python -m adapter.bench.train_lstm                 # IPA's setup: about 7-8 min on one core

Follows IPA's `prediction-modules/lstm-module/train.py` (reconfigurable-ml-pipeline/ipa), written
anew for PyTorch (the model: `adapter/core/predictor_lstm.py`'s docstring):
- data: the first 21 days of the Twitter trace, each second damped to `int(v / 8)`, the zero
  seconds dropped (the daily recording gaps, and the few seconds under 8 requests), the first
  14 days' worth of what is left for training and the rest (IPA's "test" week) for validation;
- samples: every 10 s, the max of each 10 s window of the next 120 s as input (12 values, raw,
  no scaling) and the max of the 20 s after that as target; all of them, no subsampling
  (`--stride` keeps every n-th sample if you need it faster, at a cost in fidelity);
- model: one LSTM layer of 25 units, ReLU as its activation (sigmoid gates), then a Dense(1);
  Keras' initialisation (Glorot-uniform input kernel, orthogonal recurrent kernel, forget-gate
  bias 1, the rest 0) and its L1 penalty of 1e-5 on the input kernel;
- training: Adam (lr 1e-3, Keras' eps 1e-7), MSE, 30 epochs, batch 64, shuffled each epoch,
  seed 7; the weights after the last epoch are kept (IPA keeps them too; validation is only
  reported).

The network is written into ONNX with the `onnx` package (a standard LSTM node with activations
Sigmoid/Relu/Relu, then Gemm), checked against the PyTorch model on the validation samples,
and described in a JSON file beside it (data, settings, losses, time, sha256, command).
Retraining gives the same weights on the same machine and thread count; elsewhere, floating
point summation order may change the last bits, hence the sha256 in the provenance file.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

from adapter.core.predictor_lstm import (
    HISTORY_S, INPUT_NAME, INPUT_WINDOWS, MODEL_PATH, OUTPUT_NAME, PROVENANCE_PATH, TRAIN_COMMAND, WINDOW_S,
    predict_window_maxima,
)
from adapter.errors import ConfigError
from adapter.workloads import IPA_DAMPING, TWITTER_TRACE_FILE, traces_dir, twitter_trace

DAY_S = 86_400
TRACE_DAYS = 21  # IPA reads days 0-21 of the trace
TRAIN_DAYS = 14  # ... and trains on the first 14 (of the series with the zeros dropped)
HORIZON_S = 20
HIDDEN = 25
L1_INPUT_KERNEL = 1e-5
IPA_SOURCES = [
    "prediction-modules/lstm-module/train.py",
    "prediction-modules/evaluation.py",
    "optimizer/adapter.py",
    "load_tester/barazmoon/twitter/loader.py",
    "data/configs/final/nlp-1.yaml",
]


def ipa_series(trace: np.ndarray, damping: float) -> tuple[np.ndarray, np.ndarray, int]:
    """IPA's training and validation series, and the raw second at which training data ends."""
    damped = np.floor(np.asarray(trace[: TRACE_DAYS * DAY_S], dtype=np.float64) / damping)
    kept = np.flatnonzero(damped != 0)
    train_end = TRAIN_DAYS * DAY_S
    return damped[kept[:train_end]], damped[kept[train_end:]], int(kept[train_end - 1]) + 1


def samples(series: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every 10 s: the 12 window maxima of the next 120 s, and the max of the 20 s after them.

    As IPA's `get_x_y`: starts 0, 10, ... while a full 120 s fits with at least one second after
    it; the last targets may cover fewer than 20 s.
    """
    starts = np.arange(0, series.size - HISTORY_S, WINDOW_S)
    blocks = -(-series.size // WINDOW_S)
    padded = np.concatenate((series, np.full(blocks * WINDOW_S - series.size, -np.inf)))
    block_max = padded.reshape(blocks, WINDOW_S).max(axis=1)
    first = starts // WINDOW_S
    x = block_max[first[:, None] + np.arange(INPUT_WINDOWS)]
    after = np.concatenate((block_max, [-np.inf] * (HORIZON_S // WINDOW_S)))
    y = np.max([after[first + INPUT_WINDOWS + k] for k in range(HORIZON_S // WINDOW_S)], axis=0)
    return x.astype(np.float32), y.astype(np.float32)


def train(args: argparse.Namespace) -> dict:
    import torch  # only here: the adapter itself never needs it

    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    torch.set_num_threads(args.threads)

    train_series, val_series, train_end_raw_s = ipa_series(twitter_trace(), args.damping)
    train_x, train_y = samples(train_series)
    train_x, train_y = train_x[:: args.stride], train_y[:: args.stride]
    val_x, val_y = samples(val_series)
    print(f"training samples {len(train_x)} (stride {args.stride}), validation samples {len(val_x)}; "
          f"training data ends at raw second {train_end_raw_s}", flush=True)

    model = _keras_like_lstm(torch)
    optimiser = torch.optim.Adam(model.parameters(), lr=args.lr, eps=1e-7)
    tx, ty = torch.from_numpy(train_x), torch.from_numpy(train_y)
    vx, vy = torch.from_numpy(val_x), torch.from_numpy(val_y)
    generator = torch.Generator().manual_seed(args.seed)
    history = []
    started = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        order = torch.randperm(len(tx), generator=generator)
        total, count = 0.0, 0
        for batch in order.split(args.batch_size):
            mse = torch.mean((model(tx[batch]) - ty[batch]) ** 2)
            loss = mse + L1_INPUT_KERNEL * model.input_kernel.abs().sum()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += float(mse.detach()) * len(batch)
            count += len(batch)
        with torch.no_grad():
            val_mse = float(torch.mean((model(vx) - vy) ** 2))
        history.append({"epoch": epoch, "train_mse": round(total / count, 4), "val_mse": round(val_mse, 4)})
        print(f"epoch {epoch:2d}/{args.epochs}  train mse {total / count:8.3f}  val mse {val_mse:8.3f}  "
              f"{time.perf_counter() - started:6.0f} s", flush=True)
    seconds = time.perf_counter() - started

    with torch.no_grad():
        torch_val = model(vx).numpy().astype(np.float64)
    weights = {name: value.detach().numpy().copy() for name, value in model.named_parameters()}
    return {
        "weights": weights, "torch_val": torch_val, "val_x": val_x, "val_y": val_y,
        "train_end_raw_s": train_end_raw_s, "train_samples": len(train_x), "val_samples": len(val_x),
        "history": history, "seconds": seconds, "torch_version": torch.__version__,
    }


def _keras_like_lstm(torch):
    """Keras' LSTM(25, activation="relu") + Dense(1), gates in Keras' order i, f, c, o."""
    nn = torch.nn

    class KerasLikeLstm(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.input_kernel = nn.Parameter(torch.empty(1, 4 * HIDDEN))
            self.recurrent_kernel = nn.Parameter(torch.empty(HIDDEN, 4 * HIDDEN))
            self.bias = nn.Parameter(torch.zeros(4 * HIDDEN))
            self.dense_kernel = nn.Parameter(torch.empty(HIDDEN, 1))
            self.dense_bias = nn.Parameter(torch.zeros(1))
            with torch.no_grad():
                _glorot_uniform(torch, self.input_kernel)
                nn.init.orthogonal_(self.recurrent_kernel)  # as Keras: orthonormal rows over all 4 gates
                self.bias[HIDDEN : 2 * HIDDEN] = 1.0  # Keras' unit_forget_bias
                _glorot_uniform(torch, self.dense_kernel)

        def forward(self, x):
            h = x.new_zeros(x.shape[0], HIDDEN)
            c = x.new_zeros(x.shape[0], HIDDEN)
            projected = x.unsqueeze(-1) * self.input_kernel + self.bias  # [batch, 12, 100]
            for step in range(x.shape[1]):
                gates = torch.addmm(projected[:, step], h, self.recurrent_kernel)
                i, f, g, o = gates.chunk(4, dim=1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.relu(g)
                h = torch.sigmoid(o) * torch.relu(c)
            return (h @ self.dense_kernel + self.dense_bias)[:, 0]

    return KerasLikeLstm()


def _glorot_uniform(torch, tensor) -> None:
    fan_in, fan_out = tensor.shape
    limit = (6.0 / (fan_in + fan_out)) ** 0.5
    torch.nn.init.uniform_(tensor, -limit, limit)


def onnx_model(weights: dict[str, np.ndarray]) -> bytes:
    """The trained network as ONNX: [batch, 12] -> Transpose/Unsqueeze -> LSTM -> Gemm -> [batch, 1]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def keras_to_onnx_gates(matrix: np.ndarray) -> np.ndarray:
        # Keras concatenates gates i, f, c, o along the last axis; ONNX wants i, o, f, c rows.
        i, f, c, o = np.split(matrix, 4, axis=-1)
        return np.concatenate((i, o, f, c), axis=-1).T

    w = keras_to_onnx_gates(weights["input_kernel"])[None].astype(np.float32)  # [1, 100, 1]
    r = keras_to_onnx_gates(weights["recurrent_kernel"])[None].astype(np.float32)  # [1, 100, 25]
    b = np.concatenate((keras_to_onnx_gates(weights["bias"][None])[:, 0], np.zeros(4 * HIDDEN)))
    initialisers = [
        numpy_helper.from_array(w, "W"),
        numpy_helper.from_array(r, "R"),
        numpy_helper.from_array(b[None].astype(np.float32), "B"),
        numpy_helper.from_array(weights["dense_kernel"].astype(np.float32), "dense_kernel"),
        numpy_helper.from_array(weights["dense_bias"].astype(np.float32), "dense_bias"),
        numpy_helper.from_array(np.array([2], dtype=np.int64), "axis_2"),
        numpy_helper.from_array(np.array([0], dtype=np.int64), "axis_0"),
    ]
    nodes = [
        helper.make_node("Transpose", [INPUT_NAME], ["time_major"], perm=[1, 0]),
        helper.make_node("Unsqueeze", ["time_major", "axis_2"], ["sequence"]),
        helper.make_node("LSTM", ["sequence", "W", "R", "B"], ["", "last_hidden"], hidden_size=HIDDEN,
                         activations=["Sigmoid", "Relu", "Relu"]),
        helper.make_node("Squeeze", ["last_hidden", "axis_0"], ["hidden"]),
        helper.make_node("Gemm", ["hidden", "dense_kernel", "dense_bias"], [OUTPUT_NAME]),
    ]
    graph = helper.make_graph(
        nodes, "ipa_lstm",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", INPUT_WINDOWS])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", 1])],
        initialisers,
    )
    model = helper.make_model(graph, producer_name="adapter.bench.train_lstm",
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by any onnxruntime of the last few years
    model.doc_string = ("IPA's load predictor: LSTM(25, relu) + Dense(1) on the max of each 10 s window of the last "
                        "120 s (raw rps, oldest first); predicts the max rps of the next 20 s. See ipa_lstm.json.")
    onnx.checker.check_model(model)
    return model.SerializeToString()


def mae_table(val_x: np.ndarray, val_y: np.ndarray, lstm: np.ndarray) -> dict[str, float]:
    """MAE on IPA's validation samples for the LSTM and IPA's two non-learned predictors."""
    return {
        "ipa-lstm": round(float(np.abs(np.maximum(0, np.round(lstm)) - val_y).mean()), 3),
        "last window max (IPA reactive)": round(float(np.abs(val_x[:, -1] - val_y).mean()), 3),
        "max of 120 s (IPA max)": round(float(np.abs(val_x.max(axis=1) - val_y).mean()), 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m adapter.bench.train_lstm", description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30, help="IPA: 30")
    parser.add_argument("--batch-size", type=int, default=64, help="IPA: 64")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam's learning rate (Keras' default, IPA's)")
    parser.add_argument("--seed", type=int, default=7, help="IPA: tf.random.set_seed(7)")
    parser.add_argument("--damping", type=float, default=IPA_DAMPING, help="IPA: 8")
    parser.add_argument("--stride", type=int, default=1, help="keep every n-th training sample (IPA: 1, all)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (more do not help this small model)")
    parser.add_argument("--out", type=Path, default=MODEL_PATH, help="the ONNX file; the .json goes beside it")
    args = parser.parse_args(argv)
    for name in ("epochs", "batch_size", "stride", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    try:
        import torch  # noqa: F401
    except ImportError:
        parser.error("PyTorch is not installed: pip install -c requirements.lock -e '.[train]'")

    try:
        result = train(args)
    except ConfigError as error:
        parser.error(str(error))
    blob = onnx_model(result["weights"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(blob)

    onnx_val = predict_window_maxima(result["val_x"], str(args.out))
    agreement = float(np.abs(onnx_val - result["torch_val"]).max())
    if agreement > 1e-3 * max(1.0, float(np.abs(result["torch_val"]).max())):
        raise SystemExit(f"ONNX export disagrees with the PyTorch model by {agreement}")

    final = result["history"][-1]
    command = " ".join([TRAIN_COMMAND, *(argv if argv is not None else sys.argv[1:])])
    provenance = {
        "model": args.out.name,
        "sha256": hashlib.sha256(blob).hexdigest(),
        "bytes": len(blob),
        "command": command,
        "date": datetime.datetime.now(datetime.timezone.utc).date().isoformat(),
        "what": "IPA's LSTM load predictor: input the max of each 10 s window of the last 120 s (12 raw rps "
                "values, oldest first), output the max rps of the next 20 s",
        "ipa_sources": {"repository": "reconfigurable-ml-pipeline/ipa", "files": IPA_SOURCES},
        "trace": {
            "file": TWITTER_TRACE_FILE,
            "sha256": hashlib.sha256((traces_dir() / TWITTER_TRACE_FILE).read_bytes()).hexdigest(),
        },
        "data": {
            "damping": args.damping,
            "read": f"raw seconds 0-{TRACE_DAYS * DAY_S}, each int(v / damping), zero seconds dropped",
            "training": f"the first {TRAIN_DAYS * DAY_S} kept seconds (raw seconds 0-{result['train_end_raw_s']})",
            "validation": f"the kept seconds after those, to raw second {TRACE_DAYS * DAY_S}",
            "training_samples": result["train_samples"],
            "validation_samples": result["val_samples"],
            "sample_stride": args.stride,
        },
        "model_shape": {"lstm_units": HIDDEN, "activation": "relu", "recurrent_activation": "sigmoid",
                        "dense": 1, "l1_input_kernel": L1_INPUT_KERNEL, "input_scaling": "none"},
        "training": {"optimizer": "adam", "lr": args.lr, "loss": "mse", "epochs": args.epochs,
                     "batch_size": args.batch_size, "seed": args.seed, "threads": args.threads,
                     "seconds": round(result["seconds"], 1), "torch": result["torch_version"],
                     "python": platform.python_version(), "machine": platform.machine()},
        "final_train_mse": final["train_mse"],
        "final_val_mse": final["val_mse"],
        "validation_mae_rps": mae_table(result["val_x"], result["val_y"], onnx_val),
        "onnx_vs_torch_max_abs_diff": agreement,
        "epochs": result["history"],
    }
    provenance_path = args.out.with_suffix(".json") if args.out != MODEL_PATH else PROVENANCE_PATH
    provenance_path.write_text(json.dumps(provenance, indent=2) + "\n")
    print(f"wrote {args.out} ({len(blob)} bytes, sha256 {provenance['sha256'][:12]}) and {provenance_path}")
    print(f"trained {args.epochs} epochs in {result['seconds']:.0f} s; final train mse {final['train_mse']}, "
          f"validation mse {final['val_mse']}; validation MAE rps {provenance['validation_mae_rps']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
