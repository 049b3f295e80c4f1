"""The `_TensorRT` op's state: created when MXNet creates the op, run at every forward.

``create_state`` runs when MXNet creates a `_TensorRT` op (bind, or a Gluon forward): it exports
the subgraph's structure to ONNX, the last moment MXNet may be called. ``run_state`` runs inside
MXNet's engine and must not call MXNet: it bakes parameter values into the ONNX graph, gets an
engine from the cache (again when a parameter changed) and runs it on MXNet's buffers.
"""
from __future__ import annotations

import itertools
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from . import config, export, partition
from .engine import Engine, Runtime, Serialized, TensorRef, runtime_for
from .engine.cache import ENGINES, Store, cache_key
from .engine.calibration import OnlineCalibration
from .params import ParamTracker

log = logging.getLogger("mxtrt")

SUBGRAPH_ATTR = "subgraph_sym_json"


@dataclass
class OpState:
    name: str
    subgraph: export.Subgraph
    structure: export.ExportedGraph
    in_shapes: tuple[tuple[int, ...], ...]
    in_dtypes: tuple[np.dtype, ...]
    options: config.Options
    runtime: Runtime
    device_id: int
    params: ParamTracker
    # MXNet 1.9's calibration_iters: which engine runs while the op calibrates, and after.
    online: OnlineCalibration | None = None
    engine: Engine | None = None
    key: str | None = None  # the engine's cache key
    # The options the engine was built with (they change when online calibration completes).
    engine_options: config.Options | None = None
    # The inputs the engine takes at run time: those not baked into it.
    data: tuple[int, ...] = ()
    lock: threading.Lock = field(default_factory=threading.Lock)


_states: dict[int, OpState] = {}
_states_lock = threading.Lock()
_handles = itertools.count()


def create_state(attrs: dict[str, str], device: str, device_id: int,
                 in_shapes: Sequence[tuple[int, ...]], in_dtypes: Sequence[np.dtype]) -> int:
    """Make the state of one `_TensorRT` op from its node attributes; returns its handle."""
    subgraph = export.Subgraph.from_json(attrs[SUBGRAPH_ATTR])
    options = config.resolve(json.loads(attrs.get(partition.ATTR_OPTIONS, "{}")),
                             defaults=json.loads(attrs.get(partition.ATTR_DEFAULTS, "{}")))
    names = subgraph.input_names
    if len(in_shapes) != len(names):
        raise ValueError(f"_TensorRT got {len(in_shapes)} inputs, its subgraph has "
                         f"{len(names)}: {list(names)}")
    kinds = json.loads(attrs.get(partition.ATTR_PARAMS, "{}"))
    if isinstance(kinds, list):  # symbols partitioned by mxtrt 0.1 list the names only
        kinds = dict.fromkeys(kinds, partition.SLOT)
    params = [i for i, name in enumerate(names) if name in kinds]
    structure = export.export_cached(subgraph, in_shapes, in_dtypes)
    runtime = runtime_for(device)
    tracker = ParamTracker(
        runtime, structure.digest, params,
        mutable=frozenset(i for i in params if names[i] in subgraph.aux_names),
        demotable=frozenset(i for i in params if kinds[names[i]] == partition.GIVEN),
        names=subgraph.source_names)
    name = subgraph.digest[:12]
    online = (OnlineCalibration(options, name)
              if options.calibration_iters and config.uses_int8(options.precision) else None)
    state = OpState(name=name, subgraph=subgraph, structure=structure,
                    in_shapes=tuple(in_shapes), in_dtypes=tuple(in_dtypes), options=options,
                    runtime=runtime, device_id=device_id, params=tracker, online=online)
    handle = next(_handles)
    with _states_lock:
        _states[handle] = state
    return handle


def state(handle: int) -> OpState:
    with _states_lock:
        return _states[handle]


def destroy_state(handle: int) -> None:
    with _states_lock:
        gone = _states.pop(handle, None)
    if gone is not None and gone.online is not None:
        gone.online.close()


def live_states() -> int:
    with _states_lock:
        return len(_states)


def _check_io(state: OpState, inputs: Sequence[TensorRef], outputs: Sequence[TensorRef]) -> None:
    """The engine reads and writes MXNet's buffers in place: any disagreement on a dtype or a
    shape would be a wrong answer or a write past a buffer, so it is an error instead."""
    if len(inputs) != len(state.in_shapes) or len(outputs) != len(state.structure.output_names):
        raise ValueError(f"_TensorRT subgraph {state.name}: MXNet passed {len(inputs)} inputs and "
                         f"{len(outputs)} outputs, the engine has {len(state.in_shapes)} and "
                         f"{len(state.structure.output_names)}")
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


def _label(subgraph: export.Subgraph) -> str:
    """What an engine computes, for `mxtrt cache list`: its first and last node."""
    compute = [n["name"] for n in subgraph.graph["nodes"] if n["op"] != "null"]
    return f"{compute[0]} .. {compute[-1]} ({len(compute)} nodes)" if compute else ""


def _engine_for(state: OpState, inputs: Sequence[TensorRef], options: config.Options
                ) -> tuple[Engine, str]:
    runtime = state.runtime
    baked = state.params.baked
    names = state.subgraph.input_names
    data_names = [names[i] for i in range(len(names)) if i not in baked]
    key = cache_key({
        "structure": runtime.model_key(state.structure.onnx_bytes, data_names, options),
        "baked": [names[i] for i in baked],
        "params": state.params.digest(inputs),
        "runtime": runtime.name, "version": runtime.version(),
        "device": runtime.device_key(state.device_id), "options": options.engine_key(),
    })

    def build() -> Serialized:
        values = {names[i]: runtime.to_host(inputs[i]).copy() for i in baked}
        graph = export.bake_params(state.structure, values)
        return runtime.build_entry(graph.onnx_bytes, graph.input_names, graph.output_names,
                                   options, state.device_id)

    start = time.perf_counter()
    hit = ENGINES.get(key, Store.of(options), runtime.accepts(), build,
                      lambda entry: runtime.load_entry(entry, data_names,
                                                       state.structure.output_names, options,
                                                       state.device_id),
                      state.device_id, label=_label(state.subgraph), replaces=state.key)
    if hit.source != "memory":
        log.info("mxtrt: subgraph %s: %d nodes, runtime %s, %.1f ms, cache %s", state.name,
                 state.subgraph.compute_nodes, hit.runtime,
                 (time.perf_counter() - start) * 1e3, "miss" if hit.source == "built" else "hit (disk)")
    return hit.engine, key


def _data_values(state: OpState, inputs: Sequence[TensorRef]) -> dict[str, np.ndarray]:
    """Host copies of the inputs not baked into the engine, by engine input name."""
    names, baked = state.subgraph.input_names, state.params.baked
    return {names[i]: np.array(state.runtime.to_host(ref)) for i, ref in enumerate(inputs)
            if i not in baked}


def run_state(state: OpState, inputs: Sequence[TensorRef], outputs: Sequence[TensorRef],
              stream: int) -> None:
    _check_io(state, inputs, outputs)
    with state.lock:
        changed = state.params.changed(inputs)
        options = state.options if state.online is None else state.online.options(
            lambda: _data_values(state, inputs))
        if changed or state.engine is None or options != state.engine_options:
            state.engine, state.key = _engine_for(state, inputs, options)
            state.engine_options = options
            state.data = tuple(i for i in range(len(inputs)) if i not in state.params.baked)
        engine, data = state.engine, state.data
    engine.run([inputs[i] for i in data], outputs, stream)
