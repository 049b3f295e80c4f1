"""int8 calibration: batches on the host, and TensorRT's entropy calibrator fed from them.

MXNet turns every ``optimize_for`` keyword into a string, so calibration data cannot travel as
an option value. ``register`` (exported as ``mxtrt_backend.calibration_data``) converts an
``mx.io.DataIter`` or an iterable of batches to numpy on the caller's thread, where MXNet may
still be called, and returns a token naming their content; the token is the value of the
``calibration_data`` option, and, being a digest, part of the engine's cache key.

The engine is built inside MXNet's engine thread, long after, from these host arrays only.

``OnlineCalibration`` is MXNet 1.9's ``calibration_iters``: the op's own inputs of its first
forwards become such a set, registered the same way.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from ..config import Options, without_int8

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
# Subgraphs whose online calibration stopped early, and said so.
_incomplete: set[str] = set()
_lock = threading.Lock()


def _host(value: Any) -> np.ndarray:
    # NDArray.asnumpy() waits for MXNet: fine here, this runs on the caller's thread. float16
    # stays float16; `batches` casts to what the engine's inputs take.
    array = value.asnumpy() if hasattr(value, "asnumpy") else np.asarray(value)
    return np.ascontiguousarray(array, dtype=np.float16 if array.dtype == np.float16 else np.float32)


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


def batches(found: CalibrationSet, shapes: Mapping[str, Sequence[int]],
            dtypes: Mapping[str, np.dtype] | None = None,
            sources: Mapping[str, str] | None = None) -> list[dict[str, np.ndarray]]:
    """Calibration batches of exactly the engine's input shapes (dim 0 is the batch) and dtypes
    (TensorRT reads the buffers as the network's input types: float32 samples for a float16
    input would be read as garbage). ``sources`` maps an engine input to the symbol's name of
    it (MXNet renames subgraph inputs, "data" -> "data0"), which a DataIter's batches carry.

    Samples are regrouped into batches of that size; a last partial batch is dropped, since
    TensorRT calibrates on full batches only.
    """
    unnamed = list(found.samples) == [None]
    if unnamed and len(shapes) != 1:
        raise ValueError(f"the subgraph has {len(shapes)} data inputs {sorted(shapes)}; give "
                         "calibration batches as dicts input name -> batch, or a DataIter")
    per_input: dict[str, np.ndarray] = {}
    for name, shape in shapes.items():
        samples = found.samples[None] if unnamed else found.samples.get(
            name, found.samples.get((sources or {}).get(name)))
        if samples is None:
            raise ValueError(f"calibration_data has no batches for input '{name}' (it has "
                             f"{sorted(map(str, found.samples))}); an int8 subgraph whose input is "
                             "computed inside the network needs calibration_cache instead")
        if tuple(samples.shape[1:]) != tuple(shape[1:]):
            raise ValueError(f"calibration samples of '{name}' have shape {list(samples.shape[1:])},"
                             f" the engine input has {list(shape[1:])}")
        per_input[name] = samples if dtypes is None else samples.astype(dtypes[name], copy=False)
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


class OnlineCalibration:
    """MXNet 1.9's ``calibration_iters=N`` for one `_TensorRT` op.

    The first N forwards run an engine at the precision without int8 (fp16 or fp32) and keep
    host copies of their data inputs; the N-th registers them as calibration data. From the
    next forward on, the int8 engine, calibrated from those inputs, runs (it is built once and
    cached like any engine: the data's digest is in its key). The op asks ``options`` which
    engine runs each forward; that is all it knows about calibration.
    """

    def __init__(self, options: Options, name: str) -> None:
        self._name = name
        self._iters = options.calibration_iters
        self._int8 = dataclasses.replace(options, calibration_iters=0)
        self._before = dataclasses.replace(self._int8, precision=without_int8(options.precision))
        self._seen: list[dict[str, np.ndarray]] = []
        self._done: Options | None = None

    @property
    def forwards(self) -> int:
        """Calibration forwards so far (N once calibration is complete)."""
        return self._iters if self._done else len(self._seen)

    def options(self, inputs: Callable[[], Mapping[str, np.ndarray]]) -> Options:
        """The options of the engine that runs this forward. While calibrating, ``inputs()``
        (host copies of this forward's data inputs, by engine input name) is kept."""
        if self._done is not None:
            return self._done
        self._seen.append(dict(inputs()))
        if len(self._seen) == self._iters:
            token = register(self._seen)
            self._seen = []
            self._done = dataclasses.replace(self._int8, calibration_data=token)
            log.info("mxtrt: subgraph %s: %d calibration forwards done; the next forward builds "
                     "and runs its %s engine", self._name, self._iters, self._int8.precision)
        return self._before

    def close(self) -> None:
        """The op goes away. Forwards that stopped before N leave no int8 engine: say so, once
        per subgraph (Gluon without static_alloc makes and drops an op at every call)."""
        if self._done is not None:
            return
        with _lock:
            told = self._name in _incomplete
            _incomplete.add(self._name)
        if not told:
            log.warning(
                "mxtrt: subgraph %s: int8 calibration stopped after %d of calibration_iters=%d "
                "forwards, so no int8 engine was built and every forward ran at %s. Run at least "
                "%d forwards through one executor (Gluon: hybridize(static_alloc=True, "
                "static_shape=True), or every call makes a new op), lower calibration_iters, or "
                "give calibration_data or calibration_cache instead.", self._name,
                len(self._seen), self._iters, self._before.precision, self._iters)


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
