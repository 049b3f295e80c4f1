"""TensorRT: the runtime of GPU contexts (TensorRT 10 Python API).

``build`` parses the subgraph's ONNX with TensorRT's ONNX parser (onnx-tensorrt) and serializes
an engine; ``load`` deserializes it; ``TrtEngine.run`` enqueues it on MXNet's CUDA stream with
``set_input_shape`` + ``set_tensor_address`` + ``execute_async_v3`` and never synchronises.

``tensorrt`` is imported inside functions only: importing this module must work without it.
When TensorRT's parser or builder rejects a subgraph, the subgraph runs with ONNX Runtime on the
host instead (one WARNING); the serialized blob says which of the two it holds.
"""
from __future__ import annotations

import functools
import hashlib
import logging
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Mapping, Sequence

import onnx
from filelock import FileLock

from ..config import OptionError, Options
from . import DeviceRuntime, Engine, Runtime, TensorRef, calibration, cuda
from .cache import write_atomic
from .staged import StagedOrtRuntime

if TYPE_CHECKING:
    import tensorrt as trt

log = logging.getLogger("mxtrt")

INSTALL_HINT = ("pip install tensorrt (TensorRT 10) next to mxnet-cu112, on a machine with an "
                "NVIDIA GPU and driver")

# What a serialized blob holds: a TensorRT engine, or the ONNX model ONNX Runtime runs instead.
_TRT_TAG = b"TRT\0"
_HOST_TAG = b"ORT\0"

Shape = tuple[int, ...]


class TrtBuildError(RuntimeError):
    """TensorRT's ONNX parser or builder rejected a subgraph."""


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


_warned: set[str] = set()
_warn_lock = threading.Lock()


def warn_once(message: str) -> None:
    with _warn_lock:
        if message in _warned:
            return
        _warned.add(message)
    log.warning(message)


def gpu_runtime() -> Runtime:
    """TensorRT when it and a GPU are there; otherwise ONNX Runtime on the host with copies when
    at least the GPU is usable; otherwise a GpuUnavailable error naming the fix."""
    found = probe()
    if found.tensorrt and found.cuda_problem is None:
        return TrtRuntime()
    if found.cuda_problem is not None:
        message = (f"mxtrt: a GPU context was asked for but no GPU can be used: "
                   f"{found.cuda_problem}. Install the NVIDIA driver, mxnet-cu112 and TensorRT "
                   f"({INSTALL_HINT}), or run the network on mx.cpu() (ONNX Runtime)")
        warn_once(message)
        raise GpuUnavailable(message)
    warn_once("mxtrt: TensorRT is not installed (" + INSTALL_HINT + "); _TensorRT subgraphs of GPU "
              "contexts run with ONNX Runtime on the host, copying inputs and outputs (slow)")
    return StagedOrtRuntime()


# --- Pure ONNX/path helpers (no TensorRT): shapes, the optimization profile, cache file names.

def input_shapes(onnx_bytes: bytes, input_names: Sequence[str]) -> dict[str, Shape]:
    model = onnx.load_from_string(onnx_bytes)
    dims = {vi.name: tuple(d.dim_value for d in vi.type.tensor_type.shape.dim)
            for vi in model.graph.input}
    return {name: dims[name] for name in input_names}


def with_dynamic_batch(onnx_bytes: bytes, input_names: Sequence[str]) -> bytes:
    """The model with dim 0 of these inputs symbolic ("batch"), output and intermediate sizes
    left to inference: what one optimization profile over the batch needs."""
    model = onnx.load_from_string(onnx_bytes)
    for vi in model.graph.input:
        if vi.name in input_names:
            dim = vi.type.tensor_type.shape.dim[0]
            dim.Clear()
            dim.dim_param = "batch"
    for vi in model.graph.output:
        for dim in vi.type.tensor_type.shape.dim:
            dim.Clear()  # rank kept, sizes unknown
    del model.graph.value_info[:]
    return model.SerializeToString()


def profile_shapes(shapes: Mapping[str, Shape], batch_range: tuple[int, int, int]
                   ) -> dict[str, tuple[Shape, Shape, Shape]]:
    """min/opt/max shapes per data input: the batch (dim 0) from batch_range, the rest as is."""
    low, opt, high = batch_range
    return {name: ((low, *shape[1:]), (opt, *shape[1:]), (high, *shape[1:]))
            for name, shape in shapes.items()}


def timing_cache_path(cache_dir: str, version: str, device_key: str) -> Path:
    """One timing cache per TensorRT version and GPU model, beside the engine cache."""
    digest = hashlib.sha256(f"{version}|{device_key}".encode()).hexdigest()[:16]
    return Path(cache_dir) / f"timing-{digest}.trtcache"


def calibration_cache_path(cache_dir: str, onnx_bytes: bytes, token: str | None) -> Path:
    digest = hashlib.sha256(onnx_bytes + (token or "").encode()).hexdigest()[:16]
    return Path(cache_dir) / f"calibration-{digest}.cache"


def store_timing_cache(path: Path, merged: Callable[[bytes | None], bytes]) -> None:
    """Write ``merged(what is on disk now)`` atomically, under a lock: builds in several
    processes add their timings to one file instead of overwriting each other's."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock"):
            current = path.read_bytes() if path.exists() else None
            write_atomic(path, merged(current))
    except OSError as err:
        log.warning("mxtrt: could not write the TensorRT timing cache %s (%s); the next build "
                    "will time its layers again", path, err)


# --- TensorRT proper.

@functools.lru_cache(maxsize=None)
def _logger() -> trt.ILogger:
    """TensorRT's messages into the "mxtrt" logger, one level quieter than TensorRT rates them
    (its warnings are mostly about casts the ONNX parser does on purpose)."""
    import tensorrt as trt

    levels = {trt.ILogger.Severity.INTERNAL_ERROR: logging.ERROR,
              trt.ILogger.Severity.ERROR: logging.ERROR,
              trt.ILogger.Severity.WARNING: logging.INFO}

    class Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity: trt.ILogger.Severity, msg: str) -> None:
            log.log(levels.get(severity, logging.DEBUG), "mxtrt: TensorRT: %s", msg)

    return Logger()


@functools.lru_cache(maxsize=None)
def _trt_runtime() -> trt.Runtime:
    # Kept for the process: engines must not outlive the runtime that deserialized them.
    import tensorrt as trt

    return trt.Runtime(_logger())


def _precision_flags(precision: str) -> list[trt.BuilderFlag]:
    import tensorrt as trt

    # int8 keeps fp16 as the fallback for layers without int8 kernels.
    flags = {"fp32": [], "fp16": [trt.BuilderFlag.FP16],
             "int8": [trt.BuilderFlag.INT8, trt.BuilderFlag.FP16]}
    return flags[precision]


def _parse(onnx_bytes: bytes, builder: trt.Builder) -> trt.INetworkDefinition:
    import tensorrt as trt

    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, _logger())
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise TrtBuildError(f"TensorRT's ONNX parser rejected the subgraph: {errors}")
    return network


def _use_timing_cache(config: trt.IBuilderConfig, path: Path) -> None:
    try:
        data = path.read_bytes()
    except OSError:
        data = b""
    if not config.set_timing_cache(config.create_timing_cache(data), False):
        log.info("mxtrt: TensorRT timing cache %s does not match this TensorRT/GPU; starting "
                 "a new one", path)
        config.set_timing_cache(config.create_timing_cache(b""), False)


def _save_timing_cache(config: trt.IBuilderConfig, path: Path) -> None:
    ours = config.get_timing_cache()

    def merged(on_disk: bytes | None) -> bytes:
        if on_disk:
            ours.combine(config.create_timing_cache(on_disk), True)
        return bytes(ours.serialize())

    store_timing_cache(path, merged)


def _batch_profile(builder: trt.Builder, config: trt.IBuilderConfig, shapes: Mapping[str, Shape],
                   batch_range: tuple[int, int, int] | None) -> trt.IOptimizationProfile | None:
    """The one optimization profile of batch_range, added to the config; None without it."""
    import tensorrt as trt

    if batch_range is None:
        return None
    profile = builder.create_optimization_profile()
    for name, (low, opt, high) in profile_shapes(shapes, batch_range).items():
        profile.set_shape(name, trt.Dims(list(low)), trt.Dims(list(opt)), trt.Dims(list(high)))
    config.add_optimization_profile(profile)
    return profile


@contextmanager
def _int8_calibration(config: trt.IBuilderConfig, profile: trt.IOptimizationProfile | None,
                      shapes: Mapping[str, Shape], onnx_bytes: bytes, options: Options
                      ) -> Iterator[None]:
    """For int8, a calibrator on the config for the duration of the build (TensorRT calls back
    into it); its device buffers are freed afterwards. Calibration runs at the profile's opt."""
    if options.precision != "int8":
        yield
        return
    if profile is not None and options.batch_range is not None:
        config.set_calibration_profile(profile)
        shapes = {n: s[1] for n, s in profile_shapes(shapes, options.batch_range).items()}
    batches = None
    if options.calibration_data:
        batches = calibration.DeviceBatches(calibration.batches(
            calibration.lookup(options.calibration_data), shapes))
    calibrator = calibration.entropy_calibrator(
        batches, options.calibration_cache,
        calibration_cache_path(options.cache_dir, onnx_bytes, options.calibration_data))
    config.int8_calibrator = calibrator
    try:
        yield
    finally:
        if batches is not None:
            batches.free()


class TrtEngine(Engine):
    """A deserialized engine; one execution context per CUDA stream, because a context's
    activation memory may be used by one enqueued run at a time."""

    def __init__(self, engine: trt.ICudaEngine, input_names: Sequence[str],
                 output_names: Sequence[str]) -> None:
        self._engine = engine
        self._inputs = tuple(input_names)
        self._outputs = tuple(output_names)
        self._contexts: dict[int, tuple[trt.IExecutionContext, threading.Lock]] = {}
        self._guard = threading.Lock()

    def _context(self, stream: int) -> tuple[trt.IExecutionContext, threading.Lock]:
        with self._guard:
            found = self._contexts.get(stream)
            if found is None:
                context = self._engine.create_execution_context()
                if context is None:
                    raise RuntimeError("TensorRT could not create an execution context (out of "
                                       "GPU memory?)")
                found = self._contexts[stream] = (context, threading.Lock())
            return found

    def run(self, inputs: Sequence[TensorRef], outputs: Sequence[TensorRef], stream: int) -> None:
        context, lock = self._context(stream)
        with lock:
            for name, ref in zip(self._inputs, inputs):
                if not context.set_input_shape(name, ref.shape):
                    raise ValueError(f"input '{name}' has shape {list(ref.shape)}, outside what the "
                                     "TensorRT engine was built for (see the batch_range option)")
                context.set_tensor_address(name, ref.ptr)
            for name, ref in zip(self._outputs, outputs):
                context.set_tensor_address(name, ref.ptr)
            if not context.execute_async_v3(stream):
                raise RuntimeError("TensorRT could not enqueue the engine (see the TensorRT "
                                   "messages in the 'mxtrt' log)")


class TrtRuntime(DeviceRuntime):
    name = "tensorrt"

    def version(self) -> str:
        import tensorrt as trt

        return trt.__version__

    def device_key(self, device_id: int) -> str:
        return cuda.device_key(device_id)

    def model_key(self, onnx_bytes: bytes, data_names: Sequence[str], options: Options) -> str:
        # With batch_range one engine serves every batch in the range: ops created for other
        # batch sizes share it, unless their models differ elsewhere (a batch baked into a Reshape).
        if options.batch_range:
            onnx_bytes = with_dynamic_batch(onnx_bytes, data_names)
        return super().model_key(onnx_bytes, data_names, options)

    def build(self, onnx_bytes: bytes, input_names: Sequence[str], output_names: Sequence[str],
              options: Options, device_id: int) -> bytes:
        if options.precision == "int8" and not (options.calibration_data or options.calibration_cache):
            raise OptionError("option 'precision' = 'int8' needs calibration: set calibration_data "
                              "(mxtrt_backend.calibration_data(...)) or calibration_cache")
        cuda.set_device(device_id)
        try:
            return _TRT_TAG + self._build(onnx_bytes, input_names, options, device_id)
        except TrtBuildError as err:
            log.warning("mxtrt: %s; this subgraph runs with ONNX Runtime on the host instead "
                        "(slow). Exclude the offending op with exclude_ops to keep it in MXNet.",
                        err)
            return _HOST_TAG + StagedOrtRuntime().build(onnx_bytes, input_names, output_names,
                                                        options, device_id)

    def _build(self, onnx_bytes: bytes, input_names: Sequence[str], options: Options,
               device_id: int) -> bytes:
        import tensorrt as trt

        shapes = input_shapes(onnx_bytes, input_names)
        builder = trt.Builder(_logger())
        network = _parse(with_dynamic_batch(onnx_bytes, input_names) if options.batch_range
                         else onnx_bytes, builder)
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.max_workspace_size)
        config.builder_optimization_level = options.builder_optimization_level
        for flag in _precision_flags(options.precision):
            config.set_flag(flag)
        profile = _batch_profile(builder, config, shapes, options.batch_range)
        timing = timing_cache_path(options.cache_dir, self.version(), self.device_key(device_id))
        _use_timing_cache(config, timing)
        with _int8_calibration(config, profile, shapes, onnx_bytes, options):
            plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise TrtBuildError("TensorRT could not build an engine for the subgraph (its messages "
                                "are in the 'mxtrt' log)")
        _save_timing_cache(config, timing)
        return bytes(plan)

    def load(self, blob: bytes, input_names: Sequence[str], output_names: Sequence[str],
             options: Options, device_id: int) -> Engine:
        tag, payload = blob[:len(_TRT_TAG)], blob[len(_TRT_TAG):]
        if tag == _HOST_TAG:
            return StagedOrtRuntime().load(payload, input_names, output_names, options, device_id)
        if tag != _TRT_TAG:
            raise ValueError("not a serialized mxtrt TensorRT engine")
        cuda.set_device(device_id)
        engine = _trt_runtime().deserialize_cuda_engine(payload)
        if engine is None:
            raise RuntimeError("TensorRT could not deserialize the cached engine (built by another "
                               "TensorRT version or GPU?); clear the cache folder")
        return TrtEngine(engine, input_names, output_names)
