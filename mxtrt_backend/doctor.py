"""`python -m mxtrt_backend doctor`: what this machine has, and whether each runtime works.

Components are looked up one by one (a missing one is reported with how to install it); then a
tiny network goes through the real pipeline (optimize_for('TensorRT'), bind, forward) on the
context of every runtime that is present, and is compared with plain MXNet.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import dataclass
from typing import Callable, TextIO

import numpy as np

from .engine import cuda, gpu

# Largest relative error accepted against plain MXNet (fp32 engines; TensorRT may use TF32).
TOLERANCE = 1e-2


@dataclass(frozen=True)
class Finding:
    name: str
    found: bool
    detail: str  # the version, or why it is missing and how to install it


def _mxnet() -> Finding:
    import mxnet as mx

    build = "CUDA build" if gpu.mxnet_has_cuda() else \
        "CPU build; for GPUs: pip install mxnet-cu112"
    return Finding("MXNet", True, f"{mx.__version__} ({build})")


def _cuda() -> Finding:
    try:
        runtime = cuda.runtime_version()
    except cuda.CudaError as err:
        return Finding("CUDA", False, f"not found: {err}")
    driver = cuda.driver_version()
    driver_text = "not found (install the NVIDIA driver)" if driver == "0.0" else driver
    return Finding("CUDA", True, f"runtime {runtime}, driver {driver_text}")


def _gpu() -> Finding:
    found = gpu.probe()
    if found.cuda_problem is not None:
        return Finding("GPU", False, f"not found: {found.cuda_problem}")
    return Finding("GPU", True, ", ".join(f"{i}: {cuda.device_key(i)}" for i in range(found.gpus)))


def _tensorrt() -> Finding:
    version = gpu.tensorrt_version()
    return Finding("TensorRT", version is not None,
                   version or f"not found: {gpu.INSTALL_HINT}")


def _onnxruntime() -> Finding:
    try:
        import onnxruntime
    except ImportError:
        return Finding("ONNX Runtime", False, "not found: pip install onnxruntime")
    return Finding("ONNX Runtime", True, onnxruntime.__version__)


def _onnx() -> Finding:
    import onnx

    return Finding("ONNX", True, onnx.__version__)


COMPONENTS: tuple[Callable[[], Finding], ...] = (_mxnet, _cuda, _gpu, _tensorrt, _onnxruntime, _onnx)


@dataclass(frozen=True)
class RuntimeCheck:
    name: str
    device: str
    present: Callable[[], str | None]  # None when usable here, else why not


def _ort_missing() -> str | None:
    return None if _onnxruntime().found else "ONNX Runtime not found (pip install onnxruntime)"


def _trt_missing() -> str | None:
    missing = [f.detail for f in (_tensorrt(), _gpu()) if not f.found]
    if not gpu.mxnet_has_cuda():
        missing.append(gpu.MXNET_CUDA_HINT)
    return "; ".join(missing) or None


RUNTIME_CHECKS = (RuntimeCheck("ONNX Runtime", "cpu", _ort_missing),
                  RuntimeCheck("TensorRT", "gpu", _trt_missing))


def tiny_network_error(device: str) -> float:
    """Build and run a tiny conv net through optimize_for('TensorRT') on this device; the largest
    relative difference to plain MXNet. Raises when it does not build or run."""
    import mxnet as mx

    ctx = mx.cpu() if device == "cpu" else mx.gpu(0)
    x = mx.sym.Convolution(mx.sym.var("data"), num_filter=4, kernel=(3, 3), pad=(1, 1), name="conv")
    x = mx.sym.Activation(x, act_type="relu", name="relu")
    sym = mx.sym.FullyConnected(x, num_hidden=3, name="fc")
    rng = np.random.RandomState(0)
    shapes = {"conv_weight": (4, 3, 3, 3), "conv_bias": (4,), "fc_weight": (3, 64), "fc_bias": (3,)}
    args = {n: mx.nd.array(rng.uniform(-0.5, 0.5, s), ctx=ctx) for n, s in shapes.items()}
    data = mx.nd.array(rng.uniform(-1, 1, (2, 3, 4, 4)), ctx=ctx)

    def run(net: mx.sym.Symbol) -> np.ndarray:
        ex = net.bind(ctx, dict(args, data=data), grad_req="null")
        ex.forward(is_train=False)
        return ex.outputs[0].asnumpy()

    with tempfile.TemporaryDirectory(prefix="mxtrt-doctor-") as cache_dir:
        part = sym.optimize_for("TensorRT", args, {}, ctx=ctx, cache_dir=cache_dir)
        if not any(n["op"] == "_TensorRT" for n in json.loads(part.tojson())["nodes"]):
            raise RuntimeError("optimize_for('TensorRT') made no _TensorRT subgraph")
        out = run(part)
    ref = run(sym)
    return float(np.abs(out - ref).max() / max(float(np.abs(ref).max()), 1e-12))


def _one_line(err: Exception) -> str:
    # MXNet's errors carry a C++ backtrace and end with "MXNetError: <message>".
    lines = str(err).strip().splitlines()
    last = lines[-1] if lines else ""
    prefix = f"{type(err).__name__}: "
    return last if last.startswith(prefix) else prefix + last


def _commands(out: TextIO) -> None:
    """Which runtime each command uses here, with and without --ctx."""
    from . import cli

    out.write(f"Commands ({', '.join(cli.commands_with('--ctx'))} take --ctx):\n")
    device, why = cli.default_device()
    out.write(f"  {'default':<20} --ctx {device} ({why})\n")
    out.write(f"  {'--ctx cpu':<20} {cli.describe(cli.CPU)}\n")
    problem = cli.gpu_problem(cli.Device("gpu", 0))
    gpus = f"not available: {problem}" if problem else cli.describe(cli.Device("gpu", 0))
    out.write(f"  {'--ctx gpu:N':<20} {gpus}\n")


def doctor(out: TextIO) -> int:
    """Print the report; 0 when every runtime present here works."""
    from . import __version__

    out.write(f"mxtrt {__version__}\n")
    for probe in COMPONENTS:
        finding = probe()
        out.write(f"  {finding.name:<13} {finding.detail}\n")
    out.write("Runtimes (tiny network through optimize_for('TensorRT') vs plain MXNet):\n")
    failures = 0
    for check in RUNTIME_CHECKS:
        label = f"{check.name} ({check.device})"
        why_not = check.present()
        if why_not is not None:
            out.write(f"  {label:<20} not available: {why_not}\n")
            continue
        try:
            error = tiny_network_error(check.device)
        except Exception as err:  # noqa: BLE001 - reported, it is what the doctor is for
            failures += 1
            out.write(f"  {label:<20} FAILED: {_one_line(err)}\n")
            continue
        ok = error <= TOLERANCE
        failures += not ok
        out.write(f"  {label:<20} {'OK' if ok else 'WRONG'}: built and ran, max relative error "
                  f"{error:.1e} (tolerance {TOLERANCE:.0e})\n")
    _commands(out)
    return 1 if failures else 0


def arguments(parser: argparse.ArgumentParser) -> None:
    """`doctor` takes no arguments."""


def run(args: argparse.Namespace) -> int:
    return doctor(sys.stdout)
