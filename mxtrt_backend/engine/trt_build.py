"""Building TensorRT engines (TensorRT 10 Python API): parse the subgraph's ONNX with TensorRT's
ONNX parser (onnx-tensorrt), set precision, workspace, the batch-range optimization profile and
int8 calibration, reuse and extend the timing cache, and serialize the plan.

``tensorrt`` is imported inside functions only: importing this module must work without it.
Everything before the TensorRT calls (the model parsed, the shape ranges of the profile) comes
from ``onnx_shapes.build_input``, which the tests run on ONNX Runtime; the TensorRT calls here
are checked by ``.ci/typecheck`` against tensorrt-stubs.
"""
from __future__ import annotations

import functools
import hashlib
import logging
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Mapping, Sequence

from filelock import FileLock

from ..config import Options, uses_int8
from . import BuildRejected, calibration
from .cache import write_atomic
from .onnx_shapes import ShapeRange, build_input, input_dtypes, source_names

if TYPE_CHECKING:
    import tensorrt as trt

log = logging.getLogger("mxtrt")


class TrtBuildError(BuildRejected):
    """TensorRT's ONNX parser or builder rejected a subgraph."""


@functools.lru_cache(maxsize=None)
def trt_logger() -> trt.ILogger:
    """TensorRT's messages into the "mxtrt" logger, one level quieter than TensorRT rates them
    (its warnings are mostly about casts the ONNX parser does on purpose). One per process,
    shared by builders and the runtime that deserializes engines."""
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


# --- The files builds keep beside the engine cache.

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


# --- The build.

def _precision_flags(precision: str) -> list[trt.BuilderFlag]:
    import tensorrt as trt

    # As MXNet 1.9: int8 adds int8 kernels; layers without one run at fp16 or fp32.
    flags = {"fp32": [], "fp16": [trt.BuilderFlag.FP16], "int8": [trt.BuilderFlag.INT8],
             "fp16_int8": [trt.BuilderFlag.INT8, trt.BuilderFlag.FP16]}
    return flags[precision]


def _parse(onnx_bytes: bytes, builder: trt.Builder) -> trt.INetworkDefinition:
    import tensorrt as trt

    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, trt_logger())
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


def _add_profile(builder: trt.Builder, config: trt.IBuilderConfig,
                 ranges: Mapping[str, ShapeRange]) -> trt.IOptimizationProfile:
    """One optimization profile over these shape ranges, added to the config."""
    import tensorrt as trt

    profile = builder.create_optimization_profile()
    for name, (low, opt, high) in ranges.items():
        profile.set_shape(name, trt.Dims(list(low)), trt.Dims(list(opt)), trt.Dims(list(high)))
    config.add_optimization_profile(profile)
    return profile


@contextmanager
def _int8_calibration(config: trt.IBuilderConfig, profile: trt.IOptimizationProfile | None,
                      ranges: Mapping[str, ShapeRange], onnx_bytes: bytes, options: Options
                      ) -> Iterator[None]:
    """For int8, a calibrator on the config for the duration of the build (TensorRT calls back
    into it); its device buffers are freed afterwards. Calibration runs at the profile's opt."""
    if not uses_int8(options.precision):
        yield
        return
    if profile is not None:
        config.set_calibration_profile(profile)
    shapes = {name: opt for name, (_, opt, _) in ranges.items()}
    batches = None
    if options.calibration_data:
        batches = calibration.DeviceBatches(calibration.batches(
            calibration.lookup(options.calibration_data), shapes,
            input_dtypes(onnx_bytes, list(shapes)), source_names(onnx_bytes)))
    calibrator = calibration.entropy_calibrator(
        batches, options.calibration_cache,
        calibration_cache_path(options.cache_dir, onnx_bytes, options.calibration_data))
    config.int8_calibrator = calibrator
    try:
        yield
    finally:
        if batches is not None:
            batches.free()


def build_plan(onnx_bytes: bytes, input_names: Sequence[str], options: Options, version: str,
               device_key: str) -> bytes:
    """A serialized TensorRT engine of the subgraph for the current CUDA device (whose
    ``device_key`` and TensorRT ``version`` name the timing cache); TrtBuildError when TensorRT
    rejects it."""
    import tensorrt as trt

    model, ranges = build_input(onnx_bytes, input_names, options.batch_range)
    builder = trt.Builder(trt_logger())
    network = _parse(model, builder)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.max_workspace_size)
    config.builder_optimization_level = options.builder_optimization_level
    for flag in _precision_flags(options.precision):
        config.set_flag(flag)
    profile = _add_profile(builder, config, ranges) if options.batch_range else None
    timing = timing_cache_path(options.cache_dir, version, device_key)
    _use_timing_cache(config, timing)
    with _int8_calibration(config, profile, ranges, onnx_bytes, options):
        plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise TrtBuildError("TensorRT could not build an engine for the subgraph (its messages "
                            "are in the 'mxtrt' log)")
    _save_timing_cache(config, timing)
    return bytes(plan)
