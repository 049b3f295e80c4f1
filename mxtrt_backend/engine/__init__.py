"""Engines: build from ONNX, serialize, cache, run. One class per runtime behind one interface.

A ``Runtime`` turns ONNX bytes into a serialized engine (``build``) and a serialized engine into
a runnable ``Engine`` (``load``); the cache (``engine.cache``) stores what ``build_entry``
returns, so a warm process skips building. A runtime that rejects a graph (``BuildRejected``)
hands it to its ``fallback``; the entry says which of the two built it. ``Engine.run`` reads and
writes caller-owned memory in place.
"""
from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import weakref
import zlib
from abc import ABC, abstractmethod
from typing import Callable, NamedTuple, Sequence, Union

import numpy as np

from ..config import Options


class TensorRef(NamedTuple):
    """Memory MXNet owns: a raw address, its shape and dtype (device given by the context).

    A named tuple rather than a dataclass: several are made per forward, on the hot path."""

    ptr: int
    shape: tuple[int, ...]
    dtype: np.dtype
    version: int = 0  # MXNet bumps it on every write; tells a changed parameter cheaply

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


def host_array(ref: TensorRef) -> np.ndarray:
    """A numpy view of host memory MXNet owns (valid for the duration of the call)."""
    buffer = (ctypes.c_char * ref.nbytes).from_address(ref.ptr)
    return np.frombuffer(memoryview(buffer), dtype=ref.dtype).reshape(ref.shape)


log = logging.getLogger("mxtrt")


class BuildRejected(RuntimeError):
    """The runtime cannot build this graph (TensorRT's parser refuses an op); its fallback may."""


# A serialized engine: bytes when built, a read-only view of the cache file's mapping when read
# from disk (a 100 MB engine is then neither read into memory nor copied before its runtime
# takes what it needs).
Blob = Union[bytes, memoryview]


class FileRegion:
    """Where a serialized engine read from disk lies: its file, held open (``fd``), and the
    offset of the engine's first byte in it. A runtime may then map its weights straight from
    the file instead of copying them (``ort``). Holding the file open keeps the very file that
    was checked, even when another is renamed over its path; it is closed when the last holder
    (the entry, or an engine using the mapping) goes."""

    def __init__(self, fd: int, offset: int) -> None:
        self.fd, self.offset = fd, offset
        weakref.finalize(self, os.close, fd)

    def path(self) -> str | None:
        """A path to the open file itself, where the system has one (Linux: /proc/self/fd/N)."""
        path = f"/proc/self/fd/{self.fd}"
        return path if os.path.exists(path) else None


class Serialized(NamedTuple):
    """An engine as the cache stores it: its bytes, and the runtime (name, version) that built
    them and loads them: the runtime asked, or its fallback; where it was read from, if a file."""

    data: Blob
    runtime: str
    version: str
    region: FileRegion | None = None


class Engine(ABC):
    @abstractmethod
    def run(self, inputs: Sequence[TensorRef], outputs: Sequence[TensorRef], stream: int) -> None:
        """Compute outputs from inputs, both in the order of the engine's ONNX graph."""


class Runtime(ABC):
    name: str
    # How the engines run, in words for messages.
    title: str

    @abstractmethod
    def version(self) -> str:
        """Part of every cache key: an engine is only valid for the runtime version that built it."""

    @abstractmethod
    def build(self, onnx_bytes: bytes, input_names: Sequence[str], output_names: Sequence[str],
              options: Options, device_id: int) -> bytes:
        """Build and serialize an engine for this ONNX graph."""

    @abstractmethod
    def load(self, blob: Blob, input_names: Sequence[str], output_names: Sequence[str],
             options: Options, device_id: int, region: FileRegion | None = None) -> Engine:
        """Deserialize an engine produced by ``build`` of the same runtime version; ``region``
        says where ``blob`` lies in a file, when it was read from one."""

    def device_key(self, device_id: int) -> str:
        """What about the device an engine depends on (part of the cache key): devices with the
        same key share serialized engines."""
        return "cpu"

    def fallback(self) -> Runtime | None:
        """The runtime that serves graphs this one rejects, or None (then a rejection fails)."""
        return None

    def accepts(self) -> dict[str, str]:
        """Runtime name -> version of every engine this runtime loads: its own, its fallback's."""
        other = self.fallback()
        return {self.name: self.version(), **({other.name: other.version()} if other else {})}

    def build_entry(self, onnx_bytes: bytes, input_names: Sequence[str],
                    output_names: Sequence[str], options: Options, device_id: int) -> Serialized:
        """``build``, or the fallback's build when this runtime rejects the graph."""
        try:
            return Serialized(self.build(onnx_bytes, input_names, output_names, options, device_id),
                              self.name, self.version())
        except BuildRejected as err:
            other = self.fallback()
            if other is None:
                raise
            log.warning("mxtrt: %s; this subgraph runs with %s instead (%s). Exclude the "
                        "offending op with exclude_ops to keep it in MXNet.", err, other.name,
                        other.title)
            return Serialized(other.build(onnx_bytes, input_names, output_names, options,
                                          device_id), other.name, other.version())

    def load_entry(self, entry: Serialized, input_names: Sequence[str],
                   output_names: Sequence[str], options: Options, device_id: int) -> Engine:
        """``load`` by whichever of this runtime and its fallback built the entry."""
        other = self.fallback()
        runtime = self if entry.runtime == self.name else other
        if runtime is None or runtime.name != entry.runtime:
            raise ValueError(f"an engine of {entry.runtime!r} cannot be loaded by {self.name!r}")
        return runtime.load(entry.data, input_names, output_names, options, device_id,
                            entry.region)

    def model_key(self, onnx_bytes: bytes, data_names: Sequence[str], options: Options) -> str:
        """What about the model an engine depends on (part of the cache key): by default all of
        it; a runtime whose engines serve a range of shapes leaves out what varies within it."""
        return hashlib.sha256(onnx_bytes).hexdigest()

    # Whether ``to_host`` is a view of the tensor, readable from any thread (hashing parameters
    # then uses two threads).
    host_memory = True

    def to_host(self, ref: TensorRef) -> np.ndarray:
        """The value of a tensor of this runtime's device, readable by the host (parameters to
        bake into the engine)."""
        return host_array(ref)

    def checksum(self, ref: TensorRef) -> int:
        """A CRC-32 of all of a tensor's values: for inputs MXNet gives no identity to."""
        return zlib.crc32(np.ascontiguousarray(self.to_host(ref)).data)

    def sample(self, ref: TensorRef) -> bytes:
        """A few values spread over a tensor. With its address and MXNet's version number they
        tell a parameter from a different one that reuses its memory, without hashing it all."""
        flat = host_array(ref).reshape(-1)
        return flat[::max(1, flat.size // SAMPLE_VALUES)].tobytes()


# How many values of each parameter `Runtime.sample` reads.
SAMPLE_VALUES = 64


class DeviceRuntime(Runtime):
    """A runtime whose tensors live in GPU memory: reading them goes through CUDA copies."""

    host_memory = False

    def to_host(self, ref: TensorRef) -> np.ndarray:
        from . import cuda

        return cuda.copy_to_host(ref)

    def sample(self, ref: TensorRef) -> bytes:
        from . import cuda

        return cuda.copy_sample(ref, SAMPLE_VALUES)


def _cpu_runtime() -> Runtime:
    from .ort import OrtRuntime

    return OrtRuntime()


def _gpu_runtime() -> Runtime:
    from .gpu import gpu_runtime

    return gpu_runtime()


# Context device name -> the factory of its runtime (imports deferred: tensorrt is optional).
RUNTIMES: dict[str, Callable[[], Runtime]] = {"cpu": _cpu_runtime, "gpu": _gpu_runtime}


def runtime_for(device: str) -> Runtime:
    """The runtime that serves a context: ONNX Runtime on CPU, TensorRT on GPU."""
    try:
        factory = RUNTIMES[device]
    except KeyError:
        raise RuntimeError(f"mxtrt: no runtime for {device} contexts; the TensorRT backend runs "
                           f"on {' and '.join(RUNTIMES)} contexts") from None
    return factory()
