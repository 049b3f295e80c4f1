"""What GPU contexts get on this machine: TensorRT, ONNX Runtime staged through the host, or an
error naming the fix.

``probe`` looks once at what this process can use (TensorRT's version, CUDA's GPUs);
``gpu_support`` turns that into a decision, a pure function the command line and ``doctor``
share with ``gpu_runtime``, the factory op creation calls for GPU contexts.
"""
from __future__ import annotations

import functools
import logging
import threading
from dataclasses import dataclass

from . import Runtime, cuda
from .staged import StagedOrtRuntime
from .trt import TrtRuntime

log = logging.getLogger("mxtrt")

INSTALL_HINT = ("pip install tensorrt (TensorRT 10) next to mxnet-cu112, on a machine with an "
                "NVIDIA GPU and driver")
MXNET_CUDA_HINT = "MXNet has no CUDA (pip install mxnet-cu112)"


class GpuUnavailable(RuntimeError):
    """A GPU context was asked for, but no GPU can be used from here."""


def tensorrt_version() -> str | None:
    """The installed TensorRT's version, or None. Type stubs alone import as an empty
    namespace package, hence the version check rather than the import alone."""
    try:
        import tensorrt
    except (ImportError, OSError):
        return None
    version = getattr(tensorrt, "__version__", None)
    return version if isinstance(version, str) else None


@dataclass(frozen=True)
class GpuProbe:
    tensorrt: str | None
    gpus: int
    cuda_problem: str | None  # why no GPU can be used, or None


@functools.lru_cache(maxsize=1)
def probe() -> GpuProbe:
    """What this process can use; asked once, as every op creation on a GPU context asks."""
    try:
        count = cuda.device_count()
        problem = None if count else "CUDA sees no GPU (check CUDA_VISIBLE_DEVICES and the driver)"
    except cuda.CudaError as err:
        count, problem = 0, str(err)
    return GpuProbe(tensorrt_version(), count, problem)


def mxnet_has_cuda() -> bool:
    """Whether this MXNet build can make GPU contexts at all (a library query, no engine call)."""
    import mxnet as mx

    return bool(mx.runtime.Features().is_enabled("CUDA"))


@dataclass(frozen=True)
class GpuSupport:
    """The runtime `_TensorRT` subgraphs of GPU contexts get here (None: GPU contexts cannot
    run here), and why, in words for the user."""

    runtime: str | None
    detail: str


def gpu_support(found: GpuProbe, mxnet_cuda: bool) -> GpuSupport:
    if not mxnet_cuda:
        return GpuSupport(None, MXNET_CUDA_HINT)
    if found.cuda_problem is not None:
        return GpuSupport(None, found.cuda_problem)
    if found.tensorrt is None:
        return GpuSupport(StagedOrtRuntime.name, f"TensorRT is not installed ({INSTALL_HINT}); "
                          "_TensorRT subgraphs of GPU contexts run with ONNX Runtime on the host, "
                          "copying inputs and outputs (slow)")
    return GpuSupport(TrtRuntime.name, f"TensorRT {found.tensorrt}")


_warned: set[str] = set()
_warn_lock = threading.Lock()


def warn_once(message: str) -> None:
    with _warn_lock:
        if message in _warned:
            return
        _warned.add(message)
    log.warning(message)


def gpu_runtime() -> Runtime:
    """The runtime of a GPU context's subgraphs; a GpuUnavailable error naming the fix when no
    GPU can be used. MXNet made the context, so its CUDA support is a given here."""
    support = gpu_support(probe(), mxnet_cuda=True)
    if support.runtime is None:
        message = (f"mxtrt: a GPU context was asked for but no GPU can be used: {support.detail}. "
                   f"Install the NVIDIA driver, mxnet-cu112 and TensorRT ({INSTALL_HINT}), or "
                   "run the network on mx.cpu() (ONNX Runtime)")
        warn_once(message)
        raise GpuUnavailable(message)
    if support.runtime == StagedOrtRuntime.name:
        warn_once(f"mxtrt: {support.detail}")
    return _GPU_RUNTIMES[support.runtime]()


# gpu_support's answer -> the runtime (tensorrt itself is imported only when TrtRuntime works).
_GPU_RUNTIMES: dict[str, type[Runtime]] = {TrtRuntime.name: TrtRuntime,
                                           StagedOrtRuntime.name: StagedOrtRuntime}
