"""The glue MXNet calls: the partitioner callbacks and the `_TensorRT` op's life cycle.

``create`` runs when MXNet creates a `_TensorRT` op (bind, or a Gluon forward): it exports the
subgraph's structure to ONNX, the last moment MXNet may be called. ``forward`` runs inside
MXNet's engine and must not call MXNet: it bakes parameter values into the ONNX graph, gets an
engine from the cache (rebuilding when a parameter changed) and runs it on MXNet's buffers.
"""
from __future__ import annotations

import functools
import hashlib
import itertools
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from . import config, export, partition
from .engine import Engine, Runtime, TensorRef, runtime_for
from .engine.cache import ENGINES, cache_key
from .extension import (DEVICE_NAMES, Extension, ids_from_flags, key_values, pin_thread_state,
                        shapes, strings)

log = logging.getLogger("mxtrt")

SUBGRAPH_ATTR = "subgraph_sym_json"


@dataclass
class OpState:
    name: str
    subgraph: export.Subgraph
    structure: export.ExportedGraph
    params: tuple[int, ...]
    data: tuple[int, ...]
    in_shapes: tuple[tuple[int, ...], ...]
    in_dtypes: tuple[np.dtype, ...]
    options: config.Options
    runtime: Runtime
    device: str
    device_id: int
    engine: Engine | None = None
    fingerprint: tuple[tuple[int, int], ...] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Parameter inputs MXNet may count as written by this op's own forward (auxiliary states),
    # whether it does so in this path (learnt, see `_unchanged`), and samples of their values.
    mutable: frozenset[int] = frozenset()
    own_writes: bool | None = None
    samples: dict[int, bytes] = field(default_factory=dict)


_states: dict[int, OpState] = {}
_handles = itertools.count()
# (structure, parameter addresses and versions) -> digest of the parameter values, so a new op
# state over unchanged parameters (Gluon creates one per forward) does not hash them again.
_param_digests: dict[tuple[Any, ...], str] = {}
_lock = threading.Lock()


def create_state(attrs: dict[str, str], device: str, device_id: int,
                 in_shapes: Sequence[tuple[int, ...]], in_dtypes: Sequence[np.dtype]) -> int:
    subgraph = export.Subgraph.from_json(attrs[SUBGRAPH_ATTR])
    options = config.resolve(json.loads(attrs.get(partition.ATTR_OPTIONS, "{}")))
    if len(in_shapes) != len(subgraph.input_names):
        raise ValueError(f"_TensorRT got {len(in_shapes)} inputs, its subgraph has "
                         f"{len(subgraph.input_names)}: {list(subgraph.input_names)}")
    param_names = set(json.loads(attrs.get(partition.ATTR_PARAMS, "[]")))
    params = tuple(i for i, name in enumerate(subgraph.input_names) if name in param_names)
    structure = export.export_cached(subgraph, in_shapes, in_dtypes)
    state = OpState(
        name=subgraph.digest[:12], subgraph=subgraph, structure=structure, params=params,
        data=tuple(i for i in range(len(in_shapes)) if i not in params),
        in_shapes=tuple(in_shapes), in_dtypes=tuple(in_dtypes), options=options,
        runtime=runtime_for(device), device=device, device_id=device_id,
        mutable=frozenset(i for i in params if subgraph.input_names[i] in subgraph.aux_names))
    handle = next(_handles)
    with _lock:
        _states[handle] = state
    return handle


def _check_io(state: OpState, inputs: Sequence[TensorRef], outputs: Sequence[TensorRef]) -> None:
    """The engine reads and writes MXNet's buffers in place: any disagreement on a dtype or a
    shape would be a wrong answer or a write past a buffer, so it is an error instead."""
    for name, ref, shape, dtype in zip(state.subgraph.input_names, inputs, state.in_shapes,
                                       state.in_dtypes):
        if ref.shape != shape or ref.dtype != dtype:
            raise ValueError(f"_TensorRT subgraph {state.name}: input '{name}' is {ref.dtype}"
                             f"{list(ref.shape)}, the engine was made for {dtype}{list(shape)}")
    for name, ref, (dtype, dims) in zip(state.structure.output_names, outputs,
                                        state.structure.output_specs):
        if ref.dtype != dtype or len(ref.shape) != len(dims) or any(
                d is not None and d != n for d, n in zip(dims, ref.shape)):
            raise ValueError(f"_TensorRT subgraph {state.name}: MXNet's buffer for output '{name}'"
                             f" is {ref.dtype}{list(ref.shape)}, the exported graph computes "
                             f"{dtype}{list(dims)}")


def _param_digest(state: OpState, inputs: Sequence[TensorRef],
                  fingerprint: tuple[tuple[int, int], ...]) -> str:
    # Addresses and versions alone can repeat when a freed model's memory is reused by another
    # with the same layout; a sample of the values makes that collision practically impossible.
    # Versions of mutable inputs are left out: Gluon bumps them at every forward (see
    # `_unchanged`), and makes a new op state per forward unless static_alloc is on.
    sample = b"".join(state.runtime.sample(inputs[i]) for i in state.params)
    stable = tuple(f for i, f in zip(state.params, fingerprint) if i not in state.mutable)
    memo = (state.structure.digest, stable, hashlib.sha256(sample).digest())
    with _lock:
        digest = _param_digests.get(memo)
    if digest is None:
        h = hashlib.sha256()
        for i in state.params:
            h.update(np.ascontiguousarray(state.runtime.to_host(inputs[i])).data)  # no copy
        digest = h.hexdigest()
        with _lock:
            _param_digests[memo] = digest
    return digest


def _engine_for(state: OpState, inputs: Sequence[TensorRef],
                fingerprint: tuple[tuple[int, int], ...]) -> Engine:
    runtime, options = state.runtime, state.options
    data_names = [state.subgraph.input_names[i] for i in state.data]
    key = cache_key({
        "structure": runtime.model_key(state.structure.onnx_bytes, data_names, options),
        "params": _param_digest(state, inputs, fingerprint),
        "runtime": runtime.name, "version": runtime.version(),
        "device": runtime.device_key(state.device_id), "options": options.engine_key(),
    })
    names = [state.subgraph.input_names[i] for i in state.params]

    def build() -> bytes:
        values = {n: runtime.to_host(inputs[i]).copy() for n, i in zip(names, state.params)}
        baked = export.bake_params(state.structure, values)
        return runtime.build(baked.onnx_bytes, baked.input_names, baked.output_names, options,
                             state.device_id)

    start = time.perf_counter()
    hit = ENGINES.get(key, options.cache_dir, runtime.name, runtime.version(), build,
                      lambda blob: runtime.load(blob, data_names, state.structure.output_names,
                                                options, state.device_id))
    if hit.source != "memory":
        log.info("mxtrt: subgraph %s: %d nodes, runtime %s, %.1f ms, cache %s", state.name,
                 state.subgraph.compute_nodes, runtime.name,
                 (time.perf_counter() - start) * 1e3, "miss" if hit.source == "built" else "hit (disk)")
    return hit.engine


def _unchanged(state: OpState, inputs: Sequence[TensorRef],
               fingerprint: tuple[tuple[int, int], ...]) -> bool:
    """Are the parameters baked into the engine still the ones MXNet hands over?

    MXNet bumps an array's version on every write. Gluon's CachedOp also counts each forward of
    this op as a write of its auxiliary inputs (they are declared mutable), so there they gain
    exactly one version per forward; a bound executor does not bump them. Which of the two
    holds is learnt the first time an auxiliary input gains one version, by its values."""
    assert state.fingerprint is not None
    if fingerprint == state.fingerprint:
        if state.mutable and state.own_writes is None:
            state.own_writes = False
        return True
    changed = [(i, old, new) for i, old, new in zip(state.params, state.fingerprint, fingerprint)
               if old != new]
    if any(i not in state.mutable or new != (old[0], old[1] + 1) for i, old, new in changed):
        return False
    if state.own_writes is None:
        state.own_writes = all(state.runtime.sample(inputs[i]) == state.samples[i]
                               for i, _, _ in changed)
    return state.own_writes


def run_state(state: OpState, inputs: Sequence[TensorRef], outputs: Sequence[TensorRef],
              stream: int) -> None:
    _check_io(state, inputs, outputs)
    fingerprint = tuple((inputs[i].ptr, inputs[i].version) for i in state.params)
    with state.lock:
        if state.engine is None or not _unchanged(state, inputs, fingerprint):
            state.engine = _engine_for(state, inputs, fingerprint)
            state.samples = {i: state.runtime.sample(inputs[i]) for i in state.mutable}
        state.fingerprint = fingerprint
        engine = state.engine
    engine.run([inputs[i] for i in state.data], outputs, stream)


# --- The C callbacks (signatures in extension.py). Each returns failure with an error reply
# instead of raising: an exception must never unwind through MXNet's C++ frames.

_ext: Extension | None = None

# MXNet drops a partitioner's error message (op errors keep theirs), so the exception is kept
# here and re-raised by `translating` wrappers around the Python calls that partition.
_pending = threading.local()


def _partition_failed(reply: int, err: Exception) -> int:
    assert _ext is not None
    _pending.error = err
    _ext.reply_error(reply, err)
    return 0


def translating(call: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap an MXNet call that may partition, so our error surfaces with its type and message."""

    @functools.wraps(call)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import mxnet as mx

        _pending.error = None
        try:
            return call(*args, **kwargs)
        except mx.MXNetError as mx_err:
            err, _pending.error = _pending.error, None
            if err is None:
                raise
            raise err from mx_err

    return wrapper


def _options(count: int, keys: Any, vals: Any) -> tuple[config.Options, dict[str, str]]:
    raw = key_values(keys, vals, count)
    return config.resolve(raw), config.explicit(raw)


def _supported(graph_json: bytes, num_opts: int, keys: Any, vals: Any, num_nodes: int,
               json_to_id: Any, ids: Any, reply: int) -> int:
    try:
        options, _ = _options(num_opts, keys, vals)
        ids_from_flags(partition.select(graph_json.decode(), options), json_to_id, ids)
        return 1
    except Exception as err:  # noqa: BLE001 - reported to MXNet, which raises MXNetError
        return _partition_failed(reply, err)


def _review(subgraph_json: bytes, subgraph_id: int, num_opts: int, keys: Any, vals: Any,
            num_params: int, names: Any, data: Any, param_shapes: Any, ndims: Any, dtypes: Any,
            reply: int) -> int:
    assert _ext is not None
    try:
        options, explicit = _options(num_opts, keys, vals)
        accept, attrs = partition.review(subgraph_json.decode(), subgraph_id, options, explicit,
                                         strings(names, num_params))
        _ext.reply_accept(reply, accept)
        _ext.reply_attrs(reply, attrs)
        return 1
    except Exception as err:  # noqa: BLE001
        return _partition_failed(reply, err)


def _create(num_attrs: int, keys: Any, vals: Any, dev_type: int, dev_id: int, num_in: int,
            flat_shapes: Any, ndims: Any, dtypes: Any, reply: int) -> int:
    assert _ext is not None
    try:
        return create_state(key_values(keys, vals, num_attrs), DEVICE_NAMES[dev_type], dev_id,
                            shapes(flat_shapes, ndims, num_in),
                            [export.dtype_of(dtypes[i]) for i in range(num_in)])
    except Exception as err:  # noqa: BLE001
        _ext.reply_error(reply, err)
        return -1


def _refs(count: int, data: Any, flat_shapes: Any, ndims: Any, dtypes: Any,
          versions: Any = None) -> list[TensorRef]:
    return [TensorRef(ptr or 0, shape, export.dtype_of(code), version)
            for ptr, shape, code, version in zip(
                data[:count], shapes(flat_shapes, ndims, count), dtypes[:count],
                versions[:count] if versions else itertools.repeat(0))]


def _forward(handle: int, num_in: int, in_data: Any, in_shapes: Any, in_ndims: Any,
             in_dtypes: Any, in_versions: Any, num_out: int, out_data: Any, out_shapes: Any,
             out_ndims: Any, out_dtypes: Any, dev_type: int, dev_id: int, stream: int,
             reply: int) -> int:
    assert _ext is not None
    pin_thread_state()
    try:
        state = _states[handle]
        run_state(state, _refs(num_in, in_data, in_shapes, in_ndims, in_dtypes, in_versions),
                  _refs(num_out, out_data, out_shapes, out_ndims, out_dtypes), stream or 0)
        return 1
    except Exception as err:  # noqa: BLE001
        _ext.reply_error(reply, err)
        return 0


def _destroy(handle: int) -> None:
    pin_thread_state()
    with _lock:
        _states.pop(handle, None)


def install(path: str) -> Extension:
    import mxnet as mx

    global _ext
    _ext = Extension(path, _supported, _review, _create, _forward, _destroy)
    mx.sym.Symbol.optimize_for = translating(mx.sym.Symbol.optimize_for)
    return _ext
