"""int8 calibration: batches on the host, and TensorRT's entropy calibrator fed from them.

MXNet turns every ``optimize_for`` keyword into a string, so calibration data cannot travel as
an option value. ``register`` (exported as ``mxtrt_backend.calibration_data``) converts an
``mx.io.DataIter`` or an iterable of batches to numpy on the caller's thread, where MXNet may
still be called, and returns a token naming their content; the token is the value of the
``calibration_data`` option, and, being a digest, part of the engine's cache key.

The engine is built inside MXNet's engine thread, long after, from these host arrays only.
"""
from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

if TYPE_CHECKING:
    import tensorrt as trt

log = logging.getLogger("mxtrt")

TOKEN_PREFIX = "mxtrt-calibration:"


@dataclass(frozen=True)
class CalibrationSet:
    """Samples per input name, stacked along dim 0. ``None`` names the single unnamed input."""

    samples: Mapping[str | None, np.ndarray]
    token: str


_sets: dict[str, CalibrationSet] = {}
_lock = threading.Lock()


def _host(value: Any) -> np.ndarray:
    # NDArray.asnumpy() waits for MXNet: fine here, this runs on the caller's thread.
    array = value.asnumpy() if hasattr(value, "asnumpy") else np.asarray(value)
    return np.ascontiguousarray(array, dtype=np.float32)


def _from_data_iter(it: Any) -> dict[str | None, list[np.ndarray]]:
    names = [desc.name for desc in it.provide_data]
    out: dict[str | None, list[np.ndarray]] = {name: [] for name in names}
    it.reset()
    for batch in it:
        # A last batch padded to full size repeats samples; pad says how many to drop.
        keep = batch.data[0].shape[0] - (batch.pad or 0)
        for name, value in zip(names, batch.data):
            out[name].append(_host(value)[:keep])
    it.reset()
    return out


def _from_iterable(batches: Iterable[Any]) -> dict[str | None, list[np.ndarray]]:
    out: dict[str | None, list[np.ndarray]] = {}
    for batch in batches:
        named = batch if isinstance(batch, Mapping) else {None: batch}
        for name, value in named.items():
            out.setdefault(name, []).append(_host(value))
    return out


def collect(data: Any) -> CalibrationSet:
    """Host copies of calibration batches: a DataIter, or an iterable of NDArray / numpy
    batches, or of dicts input name -> batch (for subgraphs with several data inputs)."""
    parts = _from_data_iter(data) if hasattr(data, "provide_data") else _from_iterable(data)
    if not parts or not any(parts.values()):
        raise ValueError("calibration_data holds no batches")
    samples: dict[str | None, np.ndarray] = {}
    digest = hashlib.sha256()
    for name in sorted(parts, key=str):
        shapes = {a.shape[1:] for a in parts[name]}
        if len(shapes) != 1:
            raise ValueError(f"calibration batches of input {name or '(unnamed)'} differ in sample "
                             f"shape: {sorted(shapes)}")
        samples[name] = np.ascontiguousarray(np.concatenate(parts[name]))
        digest.update(f"{name}:{samples[name].shape}".encode())
        digest.update(samples[name].tobytes())
    return CalibrationSet(samples, TOKEN_PREFIX + digest.hexdigest()[:32])


def register(data: Any) -> str:
    """Convert calibration batches now; return the value for the ``calibration_data`` option."""
    found = collect(data)
    with _lock:
        _sets[found.token] = found
    return found.token


def problem(token: str) -> str | None:
    """Why a ``calibration_data`` value cannot be used, or None."""
    with _lock:
        if token in _sets:
            return None
    if not token.startswith(TOKEN_PREFIX):
        return ("must be the token returned by mxtrt_backend.calibration_data(data_iter_or_batches); "
                "MXNet passes options as strings, so a DataIter cannot be given directly")
    return ("no calibration data with this token in this process; call "
            "mxtrt_backend.calibration_data(...) again (tokens do not survive the process)")


def lookup(token: str) -> CalibrationSet:
    with _lock:
        found = _sets.get(token)
    if found is None:
        raise ValueError(f"calibration_data {token!r}: {problem(token)}")
    return found


def batches(found: CalibrationSet, shapes: Mapping[str, Sequence[int]]) -> list[dict[str, np.ndarray]]:
    """Calibration batches of exactly the engine's input shapes (dim 0 is the batch).

    Samples are regrouped into batches of that size; a last partial batch is dropped, since
    TensorRT calibrates on full batches only.
    """
    unnamed = list(found.samples) == [None]
    if unnamed and len(shapes) != 1:
        raise ValueError(f"the subgraph has {len(shapes)} data inputs {sorted(shapes)}; give "
                         "calibration batches as dicts input name -> batch, or a DataIter")
    per_input: dict[str, np.ndarray] = {}
    for name, shape in shapes.items():
        samples = found.samples[None] if unnamed else found.samples.get(name)
        if samples is None:
            raise ValueError(f"calibration_data has no batches for input '{name}' (it has "
                             f"{sorted(map(str, found.samples))}); an int8 subgraph whose input is "
                             "computed inside the network needs calibration_cache instead")
        if tuple(samples.shape[1:]) != tuple(shape[1:]):
            raise ValueError(f"calibration samples of '{name}' have shape {list(samples.shape[1:])},"
                             f" the engine input has {list(shape[1:])}")
        per_input[name] = samples
    batch = int(next(iter(shapes.values()))[0])
    total = min(len(s) for s in per_input.values())
    if total < batch:
        raise ValueError(f"calibration_data has {total} sample(s), fewer than one batch of {batch}")
    dropped = total % batch
    if dropped:
        log.info("mxtrt: calibration uses %d samples; the last %d (a partial batch) are dropped",
                 total - dropped, dropped)
    return [{name: np.ascontiguousarray(s[start:start + batch]) for name, s in per_input.items()}
            for start in range(0, total - dropped, batch)]


class DeviceBatches:
    """Calibration batches uploaded one at a time into device buffers TensorRT reads."""

    def __init__(self, host_batches: list[dict[str, np.ndarray]]) -> None:
        from . import cuda

        self._batches: Iterator[dict[str, np.ndarray]] = iter(host_batches)
        first = host_batches[0]
        self.batch_size = int(next(iter(first.values())).shape[0])
        self._buffers = {name: cuda.DeviceBuffer(a.nbytes) for name, a in first.items()}

    def next(self, names: Sequence[str]) -> list[int]:
        """Device addresses of the next batch in the order of ``names``; [] when exhausted."""
        batch = next(self._batches, None)
        if batch is None:
            return []
        for name in names:
            self._buffers[name].upload(batch[name])
        return [self._buffers[name].ptr for name in names]

    def free(self) -> None:
        for buffer in self._buffers.values():
            buffer.free()


def entropy_calibrator(device_batches: DeviceBatches | None, read_from: str | None,
                       write_to: Path) -> trt.IInt8EntropyCalibrator2:
    """TensorRT's entropy calibrator over these batches; with ``read_from`` (an existing cache)
    TensorRT takes the scales from the file and asks for no batches."""
    import tensorrt as trt

    from .cache import write_atomic

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)

        def get_batch_size(self) -> int:
            return device_batches.batch_size if device_batches else 1

        def get_batch(self, names: list[str]) -> list[int]:
            return device_batches.next(names) if device_batches else []

        def read_calibration_cache(self) -> bytes | None:
            # None: no cache, calibrate from the batches.
            return Path(read_from).read_bytes() if read_from else None

        def write_calibration_cache(self, cache: Any) -> None:
            write_atomic(write_to, bytes(cache))
            log.info("mxtrt: int8 calibration cache written to %s (reuse it with the "
                     "calibration_cache option)", write_to)

    return EntropyCalibrator()
