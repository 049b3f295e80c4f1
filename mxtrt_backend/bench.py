"""`bench`: plain MXNet and the backend on the same input, side by side, per batch size.

Both run through the executor API on the same parameters and the same random input; each
timing is the median (and 90th percentile) of repeated forwards after warm-up, each forward
waited for, so the figures are latencies.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from .convert import parse_options, parse_shape


@dataclass(frozen=True)
class Timing:
    median_ms: float
    p90_ms: float

    def throughput(self, batch: int) -> float:
        return batch / self.median_ms * 1e3


def time_calls(call: Callable[[], object], repeat: int = 30, warmup: int = 3) -> Timing:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1e3)
    return Timing(float(np.median(times)), float(np.percentile(times, 90)))


@dataclass(frozen=True)
class Row:
    batch: int
    mxnet: Timing
    backend: Timing
    max_abs_diff: float

    @property
    def speedup(self) -> float:
        return self.mxnet.median_ms / self.backend.median_ms


def _executor(sym, args, aux, shape: tuple[int, ...], x: np.ndarray):
    import mxnet as mx

    inputs = {name: mx.nd.zeros(s) for name, s in zip(sym.list_arguments(), sym.infer_shape(
        data=shape)[0]) if name not in args}
    inputs["data"] = mx.nd.array(x)
    return sym.bind(mx.cpu(), dict(args, **inputs), aux_states=aux, grad_req="null")


def _forward(ex) -> Callable[[], np.ndarray]:
    def call() -> np.ndarray:
        ex.forward(is_train=False)
        return ex.outputs[0].asnumpy()

    return call


def bench(prefix: str, epoch: int, shape: tuple[int, ...], batches: Sequence[int],
          options: dict[str, str], repeat: int = 30) -> list[Row]:
    import mxnet as mx

    import mxtrt_backend  # noqa: F401

    sym, args, aux = mx.model.load_checkpoint(prefix, epoch)
    trt_sym = sym.optimize_for("TensorRT", args, aux, ctx=mx.cpu(), **options)
    rows = []
    for batch in batches:
        batch_shape = (batch, *shape[1:])
        x = np.random.RandomState(0).uniform(-1, 1, batch_shape).astype(np.float32)
        plain = _forward(_executor(sym, args, aux, batch_shape, x))
        backend = _forward(_executor(trt_sym, args, aux, batch_shape, x))
        diff = float(np.abs(plain() - backend()).max())
        rows.append(Row(batch, time_calls(plain, repeat), time_calls(backend, repeat), diff))
    return rows


def format_rows(rows: Sequence[Row]) -> str:
    lines = [f"{'batch':>5} {'MXNet ms (p90)':>16} {'backend ms (p90)':>18} {'img/s MXNet':>12} "
             f"{'img/s backend':>14} {'speedup':>8} {'max|diff|':>10}"]
    for r in rows:
        lines.append(
            f"{r.batch:>5} {r.mxnet.median_ms:>8.2f} ({r.mxnet.p90_ms:>5.2f}) "
            f"{r.backend.median_ms:>10.2f} ({r.backend.p90_ms:>5.2f}) "
            f"{r.mxnet.throughput(r.batch):>12.1f} {r.backend.throughput(r.batch):>14.1f} "
            f"{r.speedup:>7.2f}x {r.max_abs_diff:>10.2g}")
    return "\n".join(lines)


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prefix", help="checkpoint prefix")
    parser.add_argument("epoch", type=int)
    parser.add_argument("--shape", type=parse_shape, required=True,
                        help="input shape of 'data', e.g. 1,3,224,224")
    parser.add_argument("--batch", default=None,
                        help="comma-separated batch sizes (default: the batch of --shape)")
    parser.add_argument("--repeat", type=int, default=30, help="timed forwards per measurement")
    parser.add_argument("-o", "--option", action="append", default=[], metavar="NAME=VALUE",
                        help="backend option; repeatable")


def run(args: argparse.Namespace) -> int:
    import sys

    from .config import OptionError

    try:
        options = parse_options(args.option)
        batches = [int(b) for b in args.batch.split(",")] if args.batch else [args.shape[0]]
    except (argparse.ArgumentTypeError, OptionError, ValueError) as err:
        print(f"mxtrt bench: error: {err}", file=sys.stderr)
        return 2
    print(format_rows(bench(args.prefix, args.epoch, args.shape, batches, options, args.repeat)))
    return 0
