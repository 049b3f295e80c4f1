"""`bench`: plain MXNet and the backend on the same input and device, side by side, per batch
size and, when asked, per TensorRT precision.

Both run through the executor API on the same parameters and the same random input, on one
context (``--ctx``). Latency: one forward, waited for until its outputs are ready (MXNet marks
an op done after its device work finished), with nothing else queued; the two executors take
turns, so a noisy machine disturbs both alike. Throughput: ``repeat`` forwards queued back to
back, waited for once, as a serving loop keeps the device busy.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from . import cli, config
from .cli import CPU, Checkpoint, Device, Shape

WARMUP = 3
# Throughput is measured in this many alternating rounds; the median round counts.
ROUNDS = 3


@dataclass(frozen=True)
class Timing:
    median_ms: float
    p90_ms: float


@dataclass(frozen=True)
class Row:
    precision: str
    batch: int
    mxnet: Timing
    backend: Timing
    mxnet_per_s: float  # samples per second, forwards queued back to back
    backend_per_s: float
    max_abs_diff: float

    @property
    def speedup(self) -> float:
        return self.mxnet.median_ms / self.backend.median_ms


class _Executor:
    """One bound executor and the two ways it is timed."""

    def __init__(self, ex: Any) -> None:
        self._ex = ex

    def forward(self) -> None:
        self._ex.forward(is_train=False)

    def wait(self) -> None:
        for out in self._ex.outputs:
            out.wait_to_read()

    def output(self) -> np.ndarray:
        self.forward()
        return np.asarray(self._ex.outputs[0].asnumpy())

    def latency_ms(self) -> float:
        import mxnet as mx

        mx.nd.waitall()  # nothing earlier is counted
        start = time.perf_counter()
        self.forward()
        self.wait()
        return (time.perf_counter() - start) * 1e3

    def per_second(self, batch: int, repeat: int) -> float:
        import mxnet as mx

        mx.nd.waitall()
        start = time.perf_counter()
        for _ in range(repeat):
            self.forward()
        self.wait()
        return batch * repeat / (time.perf_counter() - start)


def _timing(samples: Sequence[float]) -> Timing:
    return Timing(float(np.median(samples)), float(np.percentile(samples, 90)))


def side_by_side(a: Callable[[], float], b: Callable[[], float], repeat: int, warmup: int
                 ) -> tuple[list[float], list[float]]:
    """``repeat`` measurements of each, taking turns, after ``warmup`` unrecorded turns."""
    firsts: list[float] = []
    seconds: list[float] = []
    for i in range(warmup + repeat):
        first, second = a(), b()
        if i >= warmup:
            firsts.append(first)
            seconds.append(second)
    return firsts, seconds


def _bind(symbol: Any, model: Checkpoint, inputs: Mapping[str, np.ndarray], ctx: Any) -> _Executor:
    import mxnet as mx

    values = {name: v.as_in_context(ctx) for name, v in model.args.items()}
    values.update({name: mx.nd.array(x, ctx=ctx) for name, x in inputs.items()})
    return _Executor(symbol.bind(ctx, values, grad_req="null",
                                 aux_states={n: v.as_in_context(ctx) for n, v in model.aux.items()}))


def _inputs(model: Checkpoint, shapes: Mapping[str, Shape], batch: int) -> dict[str, np.ndarray]:
    """Random values for the inputs given a shape, zeros for those inferred (labels); dim 0 of
    the given ones is the batch."""
    rng = np.random.RandomState(0)
    given = {name: (batch, *shape[1:]) for name, shape in shapes.items()}
    return {name: rng.uniform(-1, 1, shape).astype(np.float32) if name in given
            else np.zeros(shape, np.float32)
            for name, shape in cli.input_shapes(model, given).items()}


def _precision_options(precision: str, options: Mapping[str, str],
                       calibration: Mapping[str, np.ndarray]) -> dict[str, str]:
    """The options of one precision row. int8 without calibration options calibrates on the
    benchmark's own random input (the given inputs): fine for timing, not for accuracy
    (max|diff| shows it)."""
    from .engine.calibration import register

    chosen = dict(options, precision=precision)
    if config.uses_int8(precision) and not (options.get("calibration_data")
                                            or options.get("calibration_cache")
                                            or options.get("calibration_iters")):
        batch: Any = next(iter(calibration.values())) if len(calibration) == 1 else dict(calibration)
        chosen["calibration_data"] = register([batch])
    return chosen


def bench(prefix: str, epoch: int, shapes: Mapping[str, Shape], batches: Sequence[int],
          options: Mapping[str, str], repeat: int = 30, device: Device = CPU,
          precisions: Sequence[str] = ()) -> list[Row]:
    """One row per (precision, batch): ``precisions`` empty means the options' own precision."""
    model = cli.load_checkpoint(prefix, epoch)
    ctx = device.context()
    rows = []
    for precision in precisions or [config.resolve(options).precision]:
        partitioned = None
        for batch in batches:
            inputs = _inputs(model, shapes, batch)
            if partitioned is None:
                chosen = _precision_options(precision, options,
                                            {name: inputs[name] for name in shapes})
                partitioned = model.symbol.optimize_for("TensorRT", model.args, model.aux,
                                                        ctx=ctx, **chosen)
            plain = _bind(model.symbol, model, inputs, ctx)
            backend = _bind(partitioned, model, inputs, ctx)
            diff = float(np.abs(plain.output() - backend.output()).max())
            latency = side_by_side(plain.latency_ms, backend.latency_ms, repeat, WARMUP)
            rates = side_by_side(lambda: plain.per_second(batch, repeat),
                                 lambda: backend.per_second(batch, repeat), ROUNDS, 0)
            rows.append(Row(precision, batch, _timing(latency[0]), _timing(latency[1]),
                            float(np.median(rates[0])), float(np.median(rates[1])), diff))
    return rows


def format_rows(rows: Sequence[Row]) -> str:
    lines = [f"{'precision':>9} {'batch':>5} {'MXNet ms (p90)':>16} {'backend ms (p90)':>18} "
             f"{'MXNet /s':>10} {'backend /s':>11} {'speedup':>8} {'max|diff|':>10}"]
    for r in rows:
        lines.append(
            f"{r.precision:>9} {r.batch:>5} {r.mxnet.median_ms:>8.2f} ({r.mxnet.p90_ms:>5.2f}) "
            f"{r.backend.median_ms:>10.2f} ({r.backend.p90_ms:>5.2f}) "
            f"{r.mxnet_per_s:>10.1f} {r.backend_per_s:>11.1f} {r.speedup:>7.2f}x "
            f"{r.max_abs_diff:>10.2g}")
    return "\n".join(lines)


def _precisions(text: str) -> tuple[str, ...]:
    chosen = tuple(p.strip().lower() for p in text.split(","))
    wrong = [p for p in chosen if p not in config.PRECISIONS]
    if wrong:
        raise argparse.ArgumentTypeError(f"unknown precision {wrong[0]!r}: give some of "
                                         f"{','.join(config.PRECISIONS)}")
    return chosen


def arguments(parser: argparse.ArgumentParser) -> None:
    cli.checkpoint_arguments(parser)
    cli.shape_argument(parser, required=True)
    parser.add_argument("--batch", type=cli.positive_ints, default=None, metavar="B1,B2,...",
                        help="batch sizes to measure (dim 0 of every --shape); default: the batch "
                             "of --shape")
    parser.add_argument("--repeat", type=cli.positive_int, default=30,
                        help="timed forwards per measurement")
    parser.add_argument("--precision", type=_precisions, default=(), metavar="P1,P2,...",
                        help="one row per TensorRT precision, e.g. fp32,fp16,int8 (int8 without "
                             "a calibration option calibrates on the random input: timing only); "
                             "default: the precision option's")
    cli.option_argument(parser)
    cli.ctx_argument(parser)


def run(args: argparse.Namespace) -> int:
    options = cli.options(args)
    shapes = dict(args.shape)
    device = cli.device(args)
    if device.kind == "cpu" and len(set(args.precision)) > 1:
        print("mxtrt bench: on cpu, ONNX Runtime runs every precision in fp32: the rows differ "
              "by noise only", file=sys.stderr)
    batches = args.batch or (next(iter(shapes.values()))[0],)
    print(format_rows(bench(args.prefix, args.epoch, shapes, batches, options, args.repeat,
                            device, args.precision)))
    return 0
