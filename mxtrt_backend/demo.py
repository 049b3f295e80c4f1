"""The bundled example: plain MXNet vs the TensorRT backend, on a net too small to gain and on
one where the engines pay off.

1. It trains a small LeNet on scikit-learn's digits (seconds on a CPU), saves a checkpoint, and
   runs the classic comparison: the same inference loop (``simple_bind`` with ``shared_buffer``,
   ``force_rebind``) once with ``MXNET_USE_TENSORRT=0`` and once with ``=1``, printing accuracy,
   the largest output difference and the time per batch of each.
2. It exports a model-zoo network with random weights (resnet18_v1 by default) to a checkpoint
   and runs the ``bench`` command's comparison on it: latency, throughput, speed-up.
"""
from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from dataclasses import dataclass

import numpy as np

from . import cli
from .cli import CPU, Device
from .config import variable

BATCH = 64
CLASSES = 10
ZOO_SHAPE = (1, 3, 224, 224)


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


def run_flow(prefix: str, epoch: int, use_tensorrt: bool, device: Device = CPU) -> Run:
    """The classic MXNet-vs-TensorRT comparison, unchanged user code: only the flag differs."""
    import mxtrt_backend  # noqa: F401  registers the backend and the MXNET_USE_TENSORRT hooks

    with variable("MXNET_USE_TENSORRT", "1" if use_tensorrt else "0"):
        return _inference_loop(prefix, epoch, use_tensorrt, device)


def _inference_loop(prefix: str, epoch: int, use_tensorrt: bool, device: Device) -> Run:
    import mxnet as mx

    ctx = device.context()
    sym, arg_params, aux_params = mx.model.load_checkpoint(prefix, epoch)
    all_params = {name: v.as_in_context(ctx) for name, v in dict(arg_params, **aux_params).items()}
    _, _, x_test, y_test = digits()
    test_iter = mx.io.NDArrayIter(x_test, y_test, BATCH, label_name="softmax_label")
    executor = sym.simple_bind(ctx=ctx, data=(BATCH, *x_test.shape[1:]),
                               softmax_label=(BATCH,), grad_req="null",
                               shared_buffer=all_params, force_rebind=True)
    executor.copy_params_from(arg_params, aux_params, allow_extra_params=True)
    outputs, elapsed = [], 0.0
    for i, batch in enumerate(test_iter):
        executor.arg_dict["data"][:] = batch.data[0]
        start = time.perf_counter()
        executor.forward(is_train=False)
        preds = executor.outputs[0].asnumpy()
        if i:  # the first batch builds the engines: not timed
            elapsed += time.perf_counter() - start
        outputs.append(preds[:BATCH - batch.pad])
    probs = np.concatenate(outputs)
    name = "TensorRT backend" if use_tensorrt else "MXNet"
    return Run(name, float((probs.argmax(1) == y_test).mean()), elapsed / (i or 1) * 1e3, probs)


def compare(prefix: str, epoch: int, device: Device = CPU) -> tuple[Run, Run]:
    return run_flow(prefix, epoch, False, device), run_flow(prefix, epoch, True, device)


def zoo_checkpoint(folder: str, name: str, seed: int = 0) -> tuple[str, int]:
    """Export a model-zoo network with random weights as a checkpoint in ``folder``."""
    import mxnet as mx
    from mxnet.gluon.model_zoo import vision

    mx.random.seed(seed)
    net = vision.get_model(name, pretrained=False)
    net.initialize(mx.init.Xavier())
    net.hybridize()
    net(mx.nd.zeros(ZOO_SHAPE))
    prefix = os.path.join(folder, name)
    net.export(prefix, 0)
    return prefix, 0


# Why the first comparison shows no gain; printed under its figures.
WHY_LENET = (
    "LeNet on 8x8 digits is too small to gain: a batch is about {work:.2f} ms of work. Each forward\n"
    "of the backend also hands MXNet's buffers to an ONNX Runtime engine (MXNet's extension-op call,\n"
    "a C -> Python call, ONNX Runtime's run set-up: tens of microseconds), and on layers this small\n"
    "ONNX Runtime's kernels save little. The engines pay off where a forward does milliseconds of\n"
    "work, as in the network below.")


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", help="where to save the checkpoints (default: a temp folder)")
    parser.add_argument("--epochs", type=cli.positive_int, default=8,
                        help="training epochs (on the CPU) before the comparison")
    parser.add_argument("--net", default="resnet18_v1",
                        help="model-zoo network (random weights) for the second comparison, "
                             "e.g. resnet18_v1, mobilenet1.0, resnet50_v2; 'none' skips it")
    parser.add_argument("--repeat", type=cli.positive_int, default=20,
                        help="timed forwards of the second comparison, per side")
    cli.ctx_argument(parser)


def run(args: argparse.Namespace) -> int:
    from . import bench

    device = cli.device(args)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("mxtrt").setLevel(logging.INFO)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.workdir or tmp
        os.makedirs(folder, exist_ok=True)
        prefix, epoch = train_lenet_digits(folder, args.epochs)
        plain, backend = compare(prefix, epoch, device)
        print(f"1) LeNet trained here on scikit-learn's digits (batch {BATCH}, {device})")
        print(f"{'run':<18}{'accuracy':>10}{'ms/batch':>10}")
        for result in (plain, backend):
            print(f"{result.name:<18}{result.accuracy:>10.4f}{result.ms_per_batch:>10.3f}")
        print(f"max |difference| of the outputs: {np.abs(plain.outputs - backend.outputs).max():.3g}")
        print(f"speed-up: {plain.ms_per_batch / backend.ms_per_batch:.2f}x (batch {BATCH}, {device})")
        print(WHY_LENET.format(work=plain.ms_per_batch), flush=True)
        if args.net.lower() != "none":
            zoo_prefix, zoo_epoch = zoo_checkpoint(folder, args.net)
            shape = ",".join(map(str, ZOO_SHAPE[1:]))
            print(f"\n2) {args.net} from MXNet's model zoo, random weights (input {shape}, "
                  f"{device}): `mxtrt_backend bench`")
            rows = bench.bench(zoo_prefix, zoo_epoch, {"data": ZOO_SHAPE}, [ZOO_SHAPE[0]], {},
                               args.repeat, device)
            print(bench.format_rows(rows))
            print(f"speed-up: {rows[0].speedup:.2f}x (batch {ZOO_SHAPE[0]}, {device})")
    return 0 if plain.accuracy == backend.accuracy else 1
