"""The bundled example: LeNet on scikit-learn's digits, plain MXNet vs the TensorRT backend.

It trains a small LeNet (seconds on a CPU), saves a checkpoint, loads it back the way a user
would, and runs the test split through plain MXNet and through ``optimize_for('TensorRT')``,
printing accuracy, the largest output difference and the time per batch of each.
"""
from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

BATCH = 64
CLASSES = 10


def lenet():
    import mxnet as mx

    x = mx.sym.var("data")
    for i, filters in enumerate((16, 32)):
        x = mx.sym.Convolution(x, num_filter=filters, kernel=(3, 3), pad=(1, 1), name=f"conv{i}")
        x = mx.sym.Activation(x, act_type="relu", name=f"relu{i}")
        x = mx.sym.Pooling(x, kernel=(2, 2), stride=(2, 2), pool_type="max", name=f"pool{i}")
    x = mx.sym.Flatten(x, name="flatten")
    x = mx.sym.FullyConnected(x, num_hidden=64, name="fc0")
    x = mx.sym.Activation(x, act_type="relu", name="relu_fc0")
    x = mx.sym.FullyConnected(x, num_hidden=CLASSES, name="fc1")
    return mx.sym.SoftmaxOutput(x, name="softmax")


def digits(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 digits as NCHW float32 in [0, 1], split 75/25."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.images / 16.0).astype(np.float32)[:, None, :, :]
    y = data.target.astype(np.float32)
    order = np.random.RandomState(seed).permutation(len(x))
    cut = len(x) * 3 // 4
    return x[order[:cut]], y[order[:cut]], x[order[cut:]], y[order[cut:]]


def train_lenet_digits(folder: str, epochs: int = 8, seed: int = 0) -> tuple[str, int]:
    """Train LeNet on the digits, save a checkpoint in ``folder``; return (prefix, epoch)."""
    import mxnet as mx

    mx.random.seed(seed)
    np.random.seed(seed)
    x_train, y_train, _, _ = digits(seed)
    train = mx.io.NDArrayIter(x_train, y_train, BATCH, shuffle=True, label_name="softmax_label")
    module = mx.mod.Module(lenet(), context=mx.cpu())
    module.fit(train, num_epoch=epochs, optimizer="sgd",
               optimizer_params={"learning_rate": 0.1, "momentum": 0.9},
               initializer=mx.init.Xavier())
    prefix = os.path.join(folder, "lenet")
    module.save_checkpoint(prefix, epochs)
    return prefix, epochs


@dataclass
class Run:
    name: str
    accuracy: float
    ms_per_batch: float
    outputs: np.ndarray


def evaluate(name: str, forward: Callable[[np.ndarray], np.ndarray], x: np.ndarray,
             y: np.ndarray) -> Run:
    forward(x[:BATCH])  # warm-up: engine build or first MXNet run is not timed
    outs, start = [], time.perf_counter()
    for i in range(0, len(x), BATCH):
        outs.append(forward(x[i:i + BATCH]))
    elapsed = time.perf_counter() - start
    probs = np.concatenate(outs)
    batches = -(-len(x) // BATCH)
    return Run(name, float((probs.argmax(1) == y).mean()), elapsed / batches * 1e3, probs)


def executor_forward(sym, arg_params, aux_params) -> Callable[[np.ndarray], np.ndarray]:
    import mxnet as mx

    executors: dict[tuple[int, ...], mx.executor.Executor] = {}

    def run(batch: np.ndarray) -> np.ndarray:
        ex = executors.get(batch.shape)
        if ex is None:
            args = dict(arg_params, data=mx.nd.zeros(batch.shape))
            args["softmax_label"] = mx.nd.zeros(batch.shape[:1])
            ex = executors[batch.shape] = sym.bind(mx.cpu(), args, aux_states=dict(aux_params),
                                                   grad_req="null")
        ex.arg_dict["data"][:] = batch
        ex.forward(is_train=False)
        return ex.outputs[0].asnumpy()

    return run


def compare(prefix: str, epoch: int) -> tuple[Run, Run]:
    import mxnet as mx

    import mxtrt_backend  # noqa: F401  registers the TensorRT backend

    sym, arg_params, aux_params = mx.model.load_checkpoint(prefix, epoch)
    trt_sym = sym.optimize_for("TensorRT", arg_params, aux_params, ctx=mx.cpu())
    _, _, x_test, y_test = digits()
    plain = evaluate("MXNet", executor_forward(sym, arg_params, aux_params), x_test, y_test)
    backend = evaluate("TensorRT backend", executor_forward(trt_sym, arg_params, aux_params),
                       x_test, y_test)
    return plain, backend


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mxtrt demo", description=__doc__)
    parser.add_argument("--workdir", help="where to save the checkpoint (default: a temp folder)")
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("mxtrt").setLevel(logging.INFO)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.workdir or tmp
        os.makedirs(folder, exist_ok=True)
        prefix, epoch = train_lenet_digits(folder, args.epochs)
        plain, backend = compare(prefix, epoch)
    print(f"{'run':<18}{'accuracy':>10}{'ms/batch':>10}")
    for run in (plain, backend):
        print(f"{run.name:<18}{run.accuracy:>10.4f}{run.ms_per_batch:>10.3f}")
    print(f"max |difference| of the outputs: {np.abs(plain.outputs - backend.outputs).max():.3g}")
    print(f"speed-up: {plain.ms_per_batch / backend.ms_per_batch:.2f}x (batch {BATCH}, CPU, ONNX Runtime)")
    return 0 if plain.accuracy == backend.accuracy else 1


if __name__ == "__main__":
    raise SystemExit(main())
