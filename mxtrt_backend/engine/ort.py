"""ONNX Runtime: the runtime of CPU contexts.

Its serialized engine is the model as ONNX Runtime saves it after all its graph optimisations,
the CPU-specific ones included (NCHWc layouts with this CPU's block size, weights reordered for
them), with the weights stored apart from the graph. Loading it runs no optimisation again. An
engine read from the cache has its weights mapped from the cache file by ONNX Runtime (external
data at an offset of the file, which the cache holds open); an engine just built, or one ONNX
Runtime will not map, hands them over to be copied. resnet50_v2's session takes 10 ms in a new
process instead of 110 ms, and 180 ms before the engine was specialised (docs/benchmarks.md).
Because the model fits this CPU only, the cache key holds the CPU's instruction-set extensions,
and this ONNX Runtime version.

The host fallback of GPU contexts (``staged``) keeps a portable engine instead: the model after
ONNX Runtime's hardware-independent ("extended") optimisations, the layout ones run at load.

Inputs and outputs are bound to MXNet's buffers by address (IOBinding), so nothing is copied.
"""
from __future__ import annotations

import functools
import hashlib
import logging
import platform
import struct
import tempfile
import threading
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import onnx
import onnxruntime as ort

from ..config import Options
from . import Blob, Engine, FileRegion, Runtime, TensorRef

log = logging.getLogger("mxtrt")


# ONNX Runtime 1.19 gives every node this fusion makes the same name: a graph where it fuses
# twice (e.g. two pairs of Slices of one tensor, as box_decode exports) fails to load.
_BROKEN_FUSIONS = ["GatherSliceToSplitFusion"]


class OrtEngine(Engine):
    def __init__(self, session: ort.InferenceSession, input_names: Sequence[str],
                 output_names: Sequence[str], keep: FileRegion | None = None) -> None:
        self._session = session
        self._file = keep  # the file the session maps its weights from stays open with it
        self._inputs = tuple(input_names)
        self._outputs = tuple(output_names)
        # MXNet usually hands the same buffers call after call: keep the last binding. A session
        # may run from several threads at once, a binding may not, hence the lock.
        self._lock = threading.Lock()
        self._bound: tuple[tuple[object, ...], ort.IOBinding] | None = None

    def _bind(self, inputs: Sequence[TensorRef], outputs: Sequence[TensorRef]) -> ort.IOBinding:
        binding = self._session.io_binding()
        for name, t in zip(self._inputs, inputs):
            binding.bind_input(name, "cpu", 0, t.dtype, list(t.shape), t.ptr)
        for name, t in zip(self._outputs, outputs):
            binding.bind_output(name, "cpu", 0, t.dtype, list(t.shape), t.ptr)
        return binding

    def run(self, inputs: Sequence[TensorRef], outputs: Sequence[TensorRef], stream: int) -> None:
        if not self._lock.acquire(blocking=False):  # another thread runs the kept binding
            self._session.run_with_iobinding(self._bind(inputs, outputs))
            return
        try:
            key = tuple((t.ptr, t.shape, t.dtype) for t in (*inputs, *outputs))
            if self._bound is None or self._bound[0] != key:
                self._bound = (key, self._bind(inputs, outputs))
            self._session.run_with_iobinding(self._bound[1])
        finally:
            self._lock.release()


class OrtRuntime(Runtime):
    name = "onnxruntime"
    title = "ONNX Runtime on the CPU"

    # Engines that any CPU loads: the GPU contexts' host fallback's, whose cache key names the
    # GPU, not this CPU.
    portable = False

    def __init__(self, portable: bool = False) -> None:
        self.portable = portable

    def version(self) -> str:
        return ort.__version__

    def device_key(self, device_id: int) -> str:
        return "cpu" if self.portable else cpu_key()

    def build(self, onnx_bytes: bytes, input_names: Sequence[str], output_names: Sequence[str],
              options: Options, device_id: int) -> bytes:
        # Creating the session also validates the graph before anything is cached.
        level = (ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED if self.portable
                 else ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
        with tempfile.TemporaryDirectory(prefix="mxtrt-ort-") as folder:
            saved = Path(folder) / "optimized.onnx"
            self._session(onnx_bytes, options, level, saved)
            return saved.read_bytes() if self.portable else split_weights(onnx.load(saved))

    def load(self, blob: Blob, input_names: Sequence[str], output_names: Sequence[str],
             options: Options, device_id: int, region: FileRegion | None = None) -> Engine:
        if self.portable:
            session = self._session(bytes(blob), options,
                                    ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
            return OrtEngine(session, input_names, output_names)
        model, start = graph_of(blob)
        path = region.path() if region is not None else None
        if region is not None and path is not None and (region.offset + start) % _ALIGN == 0:
            try:
                session = _specialised_session(mapped_from(model, path, region.offset + start),
                                               options)
                return OrtEngine(session, input_names, output_names, keep=region)
            except Exception as err:  # ONNX Runtime's errors derive from Exception only
                log.info("mxtrt: ONNX Runtime did not map the engine's weights from its file "
                         "(%s); handing them over instead", err)
        names, values = handed_over(model, blob, start)
        return OrtEngine(_specialised_session(model.SerializeToString(), options, names, values),
                         input_names, output_names)

    @staticmethod
    def _session(onnx_bytes: bytes, options: Options, level: ort.GraphOptimizationLevel,
                 save_to: Path | None = None) -> ort.InferenceSession:
        so = session_options(options, level)
        if save_to is not None:
            so.optimized_model_filepath = str(save_to)
        return ort.InferenceSession(onnx_bytes, so, providers=["CPUExecutionProvider"],
                                    disabled_optimizers=_BROKEN_FUSIONS)


def session_options(options: Options, level: ort.GraphOptimizationLevel) -> ort.SessionOptions:
    """How the backend's ONNX Runtime sessions are made."""
    so = ort.SessionOptions()
    so.graph_optimization_level = level
    so.intra_op_num_threads = options.ort_threads
    # ONNX Runtime's idle pool threads spin for a while after each parallel section. Each engine
    # has its own pool: with several subgraphs, one engine's spinning threads take the cores that
    # the next engine, MXNet's own ops or other processes need (docs/benchmarks.md).
    so.add_session_config_entry("session.intra_op.allow_spinning",
                                "1" if options.ort_spinning else "0")
    so.log_severity_level = 3
    return so


# The instruction-set extensions ONNX Runtime's kernels and CPU-specific optimisations choose by.
_ISA_PREFIXES = ("sse", "ssse", "avx", "fma", "f16c", "amx", "asimd", "sve", "neon")


@functools.lru_cache(maxsize=1)
def cpu_key() -> str:
    """The CPU as far as a fully optimised ONNX Runtime model depends on it (part of the cache
    key): its architecture and instruction-set extensions. A CPU whose flags cannot be read gets
    a key of its own: its engines are rebuilt, never shared."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            isa = sorted(f for f in value.split() if f.startswith(_ISA_PREFIXES))
            digest = hashlib.sha256(" ".join(isa).encode()).hexdigest()[:16]
            return f"cpu-{platform.machine()}-{digest}"
    return f"cpu-{platform.machine()}-{platform.processor() or platform.node()}"


# A specialised engine: the graph's length, the graph (large initializers as external data,
# offsets into the weights), padding, the weights; the weights start _ALIGN-aligned and each is
# _ALIGN-aligned within them, so in a cache file (whose payload starts aligned) they are aligned
# in the file too, ready to be mapped.
_GRAPH_LENGTH = struct.Struct("<Q")
_WEIGHTS = "mxtrt-weights"  # the external-data location in the cache: the engine's own weights
_ALIGN = 64
# Smaller initializers stay in the graph: ONNX Runtime's shape inference reads some (the shape
# input of Reshape) while it loads the graph, before external initializers are handed over.
_INLINE_BELOW = 4096


def _weights_at(graph_length: int) -> int:
    end = _GRAPH_LENGTH.size + graph_length
    return end + (-end % _ALIGN)


def split_weights(model: onnx.ModelProto) -> bytes:
    """The engine bytes of an optimised model: its graph apart from its weights."""
    weights = bytearray()
    for tensor in model.graph.initializer:
        data = onnx.numpy_helper.to_array(tensor).tobytes()
        if len(data) < _INLINE_BELOW:
            continue
        weights += bytes(-len(weights) % _ALIGN)
        offset = len(weights)
        weights += data
        tensor.ClearField("raw_data")
        for field in ("float_data", "int32_data", "int64_data", "double_data", "uint64_data",
                      "string_data"):
            tensor.ClearField(field)
        tensor.data_location = onnx.TensorProto.EXTERNAL
        del tensor.external_data[:]
        for key, value in (("location", _WEIGHTS), ("offset", str(offset)),
                           ("length", str(len(data)))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
    graph = model.SerializeToString()
    head = _GRAPH_LENGTH.pack(len(graph)) + graph
    return head + bytes(_weights_at(len(graph)) - len(head)) + bytes(weights)


def graph_of(blob: Blob) -> tuple[onnx.ModelProto, int]:
    """The graph of ``split_weights``'s bytes, and where its weights start in them."""
    (length,) = _GRAPH_LENGTH.unpack_from(blob)
    model = onnx.ModelProto()
    model.ParseFromString(bytes(memoryview(blob)[_GRAPH_LENGTH.size:_GRAPH_LENGTH.size + length]))
    return model, _weights_at(length)


def _external(model: onnx.ModelProto) -> Iterator[tuple[onnx.TensorProto, dict[str, str]]]:
    """The initializers kept apart, with where they are among the weights."""
    for tensor in model.graph.initializer:
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        where = {entry.key: entry.value for entry in tensor.external_data}
        if where.get("location") != _WEIGHTS:
            raise ValueError(f"initializer {tensor.name!r} of a cached ONNX Runtime engine has no "
                             "weights in the engine")
        yield tensor, where


def handed_over(model: onnx.ModelProto, blob: Blob,
                start: int) -> tuple[list[str], list[ort.OrtValue]]:
    """The weights as views into ``blob``, for a session to copy (``add_external_initializers``)."""
    weights = memoryview(blob)[start:]
    names, values = [], []
    for tensor, where in _external(model):
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)
        count = int(np.prod(tensor.dims, dtype=np.int64))
        array = np.frombuffer(weights, dtype, count, int(where["offset"])).reshape(tensor.dims)
        names.append(tensor.name)
        values.append(ort.OrtValue.ortvalue_from_numpy(array))
    return names, values


def mapped_from(model: onnx.ModelProto, path: str, start: int) -> bytes:
    """The graph with its weights in the file at ``path`` from byte ``start`` on: ONNX Runtime
    maps external data from a file instead of copying it (resnet50_v2: a session in 10 ms rather
    than 110 ms in a new process, docs/benchmarks.md)."""
    mapped = onnx.ModelProto()
    mapped.CopyFrom(model)
    for tensor, where in _external(mapped):
        del tensor.external_data[:]
        for key, value in (("location", path), ("offset", str(start + int(where["offset"]))),
                           ("length", where["length"])):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
    return mapped.SerializeToString()


def _specialised_session(graph: bytes, options: Options, names: Sequence[str] = (),
                         values: Sequence[ort.OrtValue] = ()) -> ort.InferenceSession:
    """A session on a fully optimised engine graph: no optimisation runs again."""
    so = session_options(options, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    if names:
        so.add_external_initializers(list(names), list(values))  # ONNX Runtime copies them
    return ort.InferenceSession(graph, so, providers=["CPUExecutionProvider"])
