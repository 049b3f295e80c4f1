"""The few CUDA runtime calls the backend needs, through ctypes on libcudart.

Used for what TensorRT's Python API does not cover: device names and compute capabilities (for
cache keys), device buffers for int8 calibration, and copies between host and device (parameter
values to bake, the host-staged fallback). No MXNet call: this runs inside MXNet's engine.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import glob
import os
from ctypes import byref, c_char_p, c_int, c_size_t, c_void_p

import numpy as np

from . import TensorRef

# cudaMemcpyKind and cudaDeviceAttr values from cuda_runtime_api.h (stable since CUDA 5).
_HOST_TO_DEVICE = 1
_DEVICE_TO_HOST = 2
_ATTR_CC_MAJOR = 75
_ATTR_CC_MINOR = 76
# cudaDeviceProp starts with `char name[256]` in every CUDA version; the rest of the struct
# grows between versions, so the buffer is oversized rather than declared.
_PROP_BYTES = 16384
_NAME_BYTES = 256

# Newest first; a runtime MXNet already loaded is preferred over all of these.
_SONAMES = ("libcudart.so.12", "libcudart.so.11.0", "libcudart.so.13", "libcudart.so")


class CudaError(RuntimeError):
    """A CUDA runtime call failed, or no CUDA runtime library could be loaded."""


def _loaded_in_process() -> list[str]:
    """Paths of libcudart already mapped into this process (e.g. by mxnet-cu112)."""
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "libcudart.so" in line}
    except OSError:
        return []
    return sorted(p for p in paths if os.path.basename(p).startswith("libcudart.so"))


def _pip_runtimes() -> list[str]:
    """libcudart from the nvidia-cuda-runtime-cu1x wheels that pip installs of TensorRT pull in."""
    try:
        import nvidia.cuda_runtime as pkg
    except ImportError:
        return []
    return sorted(glob.glob(os.path.join(next(iter(pkg.__path__)), "lib", "libcudart.so*")))


@functools.lru_cache(maxsize=None)
def library() -> ctypes.CDLL:
    found = ctypes.util.find_library("cudart")
    candidates = [*_loaded_in_process(), *_SONAMES, *_pip_runtimes(), *([found] if found else [])]
    for name in candidates:
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        lib.cudaGetErrorString.restype = c_char_p
        lib.cudaMemcpy.argtypes = [c_void_p, c_void_p, c_size_t, c_int]
        lib.cudaMemcpy2D.argtypes = [c_void_p, c_size_t, c_void_p, c_size_t, c_size_t, c_size_t,
                                     c_int]
        lib.cudaMalloc.argtypes = [ctypes.POINTER(c_void_p), c_size_t]
        lib.cudaFree.argtypes = [c_void_p]
        return lib
    raise CudaError("the CUDA runtime library (libcudart) was not found; install the CUDA toolkit "
                    "matching your MXNet (mxnet-cu112: CUDA 11.2) or `pip install "
                    "nvidia-cuda-runtime-cu12`, or add its folder to LD_LIBRARY_PATH")


def _check(code: int, call: str) -> None:
    if code != 0:
        message = library().cudaGetErrorString(code)
        text = message.decode() if message else "unknown error"
        raise CudaError(f"{call} failed with CUDA error {code}: {text}")


def device_count() -> int:
    count = c_int(0)
    _check(library().cudaGetDeviceCount(byref(count)), "cudaGetDeviceCount")
    return count.value


def set_device(device_id: int) -> None:
    _check(library().cudaSetDevice(c_int(device_id)), f"cudaSetDevice({device_id})")


def device_name(device_id: int) -> str:
    prop = ctypes.create_string_buffer(_PROP_BYTES)
    _check(library().cudaGetDeviceProperties(prop, c_int(device_id)),
           f"cudaGetDeviceProperties({device_id})")
    return prop.raw[:_NAME_BYTES].split(b"\0", 1)[0].decode(errors="replace")


def _attribute(attr: int, device_id: int) -> int:
    value = c_int(0)
    _check(library().cudaDeviceGetAttribute(byref(value), c_int(attr), c_int(device_id)),
           f"cudaDeviceGetAttribute({attr}, {device_id})")
    return value.value


def compute_capability(device_id: int) -> tuple[int, int]:
    return _attribute(_ATTR_CC_MAJOR, device_id), _attribute(_ATTR_CC_MINOR, device_id)


@functools.lru_cache(maxsize=None)
def device_key(device_id: int) -> str:
    """What an engine built on this device depends on: the GPU model and its architecture."""
    major, minor = compute_capability(device_id)
    return f"{device_name(device_id)} sm_{major}{minor}"


def _version(call: str) -> int:
    value = c_int(0)
    _check(getattr(library(), call)(byref(value)), call)
    return value.value


def runtime_version() -> str:
    """The CUDA runtime version, e.g. '12.4'."""
    value = _version("cudaRuntimeGetVersion")
    return f"{value // 1000}.{value % 1000 // 10}"


def driver_version() -> str:
    """The newest CUDA version the installed driver supports; '0.0' without a driver."""
    value = _version("cudaDriverGetVersion")
    return f"{value // 1000}.{value % 1000 // 10}"


class DeviceBuffer:
    """Device memory owned by the backend (calibration batches, staging)."""

    def __init__(self, nbytes: int) -> None:
        ptr = c_void_p()
        _check(library().cudaMalloc(byref(ptr), c_size_t(nbytes)), f"cudaMalloc({nbytes})")
        self.ptr: int = ptr.value or 0
        self.nbytes = nbytes

    def upload(self, array: np.ndarray) -> None:
        host = np.ascontiguousarray(array)
        if host.nbytes != self.nbytes:
            raise ValueError(f"upload of {host.nbytes} bytes into a {self.nbytes}-byte device buffer")
        copy_to_device(self.ptr, host)

    def free(self) -> None:
        if self.ptr:
            _check(library().cudaFree(c_void_p(self.ptr)), "cudaFree")
            self.ptr = 0


def synchronize() -> None:
    """Wait for all work queued on the current device."""
    _check(library().cudaDeviceSynchronize(), "cudaDeviceSynchronize")


def copy_to_device(dst: int, host: np.ndarray) -> None:
    """Host -> device, synchronous (legacy default stream)."""
    src = np.ascontiguousarray(host)
    _check(library().cudaMemcpy(c_void_p(dst), c_void_p(src.ctypes.data), c_size_t(src.nbytes),
                                c_int(_HOST_TO_DEVICE)), "cudaMemcpy(host to device)")


def copy_to_host(ref: TensorRef) -> np.ndarray:
    """Device memory -> a new host array, after all queued device work (MXNet's streams may
    still be writing the value) has finished. Not for the hot path."""
    synchronize()
    out = np.empty(ref.shape, dtype=ref.dtype)
    _check(library().cudaMemcpy(c_void_p(out.ctypes.data), c_void_p(ref.ptr), c_size_t(ref.nbytes),
                                c_int(_DEVICE_TO_HOST)), "cudaMemcpy(device to host)")
    return out


def copy_sample(ref: TensorRef, count: int) -> bytes:
    """About ``count`` values spread evenly over a device tensor, gathered in one strided copy."""
    synchronize()
    size = ref.nbytes // ref.dtype.itemsize
    stride = max(1, size // count)
    rows = -(-size // stride)
    out = np.empty(rows, dtype=ref.dtype)
    item = ref.dtype.itemsize
    _check(library().cudaMemcpy2D(c_void_p(out.ctypes.data), c_size_t(item), c_void_p(ref.ptr),
                                  c_size_t(stride * item), c_size_t(item), c_size_t(rows),
                                  c_int(_DEVICE_TO_HOST)), "cudaMemcpy2D(device to host)")
    return out.tobytes()
