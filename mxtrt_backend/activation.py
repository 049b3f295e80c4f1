"""``MXNET_USE_TENSORRT=1``: the TensorRT backend for unchanged user code.

Two entry points of MXNet 1.9 are hooked, and only while the flag is on do the hooks change
anything; with the flag off (or unset) every call goes straight to MXNet, untouched.

* Symbol ``simple_bind`` / ``bind`` (and so ``mx.mod.Module``). MXNet activates the backend named
  in ``MXNET_SUBGRAPH_BACKEND`` at bind time, but it runs a library partitioner's node selection
  only from ``optimize_for``, so at bind a library backend partitions nothing. The hook therefore
  partitions with ``optimize_for('TensorRT')`` and binds the result with
  ``MXNET_SUBGRAPH_BACKEND=TensorRT`` for the duration of the call (restored afterwards), which
  also keeps MXNet's default CPU backend (MKLDNN) from re-partitioning the graph. The flag is read
  at every bind, so it can be toggled between binds in one process.
* Gluon ``HybridBlock.hybridize``. It ignores ``MXNET_SUBGRAPH_BACKEND``; the hook reads the flag
  when ``hybridize()`` is called without a backend and then hybridizes with ``backend='TensorRT'``,
  exactly as if the user had written it. The decision is taken at hybridize time (the call that
  states the user's intent, and where MXNet takes its ``backend`` argument); calling
  ``hybridize()`` again re-reads the flag. ``backend_opts={...}`` is accepted by ``hybridize`` and
  ``optimize_for`` as in later MXNet versions, besides MXNet 1.9's keyword options.

In both paths the partitioner sees no parameter values: the `_TensorRT` op bakes parameters into
its engine at the first forward (see ``op``). Gluon hands its data inputs to the partitioner
together with the parameters; the hook names them in the option ``data_inputs`` so they stay
engine inputs.
"""
from __future__ import annotations

import copy
import functools
import inspect
import json
import logging
import os
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Mapping

from . import callbacks, layout, partition
from .config import SWITCH_OFF, SWITCH_ON, OptionError, variable

log = logging.getLogger("mxtrt")

FLAG = "MXNET_USE_TENSORRT"
BACKEND = "TensorRT"
SUBGRAPH_ENV = "MXNET_SUBGRAPH_BACKEND"
OP_NAME = "_TensorRT"

_ON = SWITCH_ON
_OFF = SWITCH_OFF | {""}  # set but empty: off

# MXNet's custom-partitioner machinery (CustomSubgraphProperty) is process-wide state: two
# threads partitioning at once crash the process. Every partitioning, and every bind while
# MXNET_SUBGRAPH_BACKEND names our backend (MXNet consults its property then too), holds this.
# os.environ is process-wide as well.
_partition_lock = threading.RLock()
# Block.hybridize recurses into children; only the outermost call picks the backend, as an
# explicit hybridize(backend=...) would.
_hybridizing = threading.local()


class TrainingModeError(RuntimeError):
    """A training-mode forward of an executor whose TensorRT subgraphs compute inference."""


def enabled(environ: Mapping[str, str] | None = None) -> bool:
    """Whether MXNET_USE_TENSORRT asks for the TensorRT backend right now."""
    raw = (os.environ if environ is None else environ).get(FLAG, "").strip().lower()
    if raw in _ON:
        return True
    if raw in _OFF:
        return False
    raise OptionError(f"${FLAG}={raw!r} is not understood; set it to 1 (use TensorRT) "
                      "or 0 (plain MXNet)")


@contextmanager
def subgraph_backend(name: str) -> Iterator[None]:
    """MXNET_SUBGRAPH_BACKEND=name for the binds inside (MXNet reads it at bind): "NONE" binds
    plain MXNet unfused; our backend's name keeps MXNet's own backend off a partitioned graph."""
    with _partition_lock, variable(SUBGRAPH_ENV, name):
        yield


# --- optimize_for -----------------------------------------------------------------------------


def _partitioned_symbol_class() -> type:
    from mxnet.symbol import Symbol

    class PartitionedSymbol(Symbol):  # type: ignore[misc, valid-type]
        """What ``optimize_for('TensorRT')`` returns: a Symbol that also holds the partition
        report and the parameter values given to ``optimize_for`` (by reference), so that
        ``simple_bind`` starts from those values instead of zeros."""

        __slots__ = ("report", "given")

    return PartitionedSymbol


PartitionedSymbol: Any = None  # the class, made at install() (it needs mxnet)


def _given_values(result: Any, args: Mapping[str, Any] | None, aux: Mapping[str, Any] | None,
                  kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The values given to optimize_for that the partitioned symbol takes as inputs, less the
    data inputs Gluon passes along with its parameters."""
    data = set(str(kwargs.get("data_inputs", "")).split(","))
    inputs = set(result.list_inputs())
    given = dict(args or {}, **(aux or {}))
    return {name: value for name, value in given.items() if name in inputs and name not in data}


# MXNet cannot load a `_TensorRT` node before `import mxtrt_backend` registers the op, and its
# error names the node: "Failed loading Op <name> of type _TensorRT: ... Operator _TensorRT is not
# registered". The name carries the fix.
NAME_HINT = "_needs_import_mxtrt_backend"


def _name_with_hint(sym: Any) -> None:
    """Rename the `_TensorRT` nodes of ``sym`` in place ("_op0" -> "_op0" + NAME_HINT)."""
    ops = {node["name"]: node["op"] for node in json.loads(sym.tojson())["nodes"]}
    internals = sym.get_internals()  # shares its nodes with sym
    for i in range(len(internals.list_outputs())):
        node = internals[i]
        # A further output of a node renamed here has a name not in `ops`.
        if ops.get(node.name) == OP_NAME and not node.name.endswith(NAME_HINT):
            node._set_attr(name=node.name + NAME_HINT)


def _stand_ins(*groups: Mapping[str, Any] | None) -> list[dict[str, Any] | None]:
    """Each of ``groups`` (arrays by name, or None) with its arrays replaced by views of the
    same shapes into one scratch buffer per context and dtype.

    MXNet 1.9's optimize_for hands a library partitioner the given arrays' memory: PrePartition
    calls ``NDArray::data()`` on the caller's thread, without waiting for MXNet's engine. An
    array whose memory a queued write has yet to allocate (``v.copy()`` just before) is then
    allocated by both threads, now and then at the same moment, and keeps the memory the write
    never reached: heap leftovers, baked into the engine (a full test run in three, 2026-11).
    The partitioner needs only the arrays' names, shapes and dtypes, so MXNet gets stand-ins,
    and neither touches the caller's arrays nor waits for their writes; the engine reads the
    real ones when it runs."""
    import mxnet as mx

    def kind(a: Any) -> tuple[Any, Any] | None:
        """The (context, dtype) of the buffer an array's stand-in views, or None: MXNet gets
        the value as given."""
        if isinstance(a, mx.nd.NDArray) and a.stype == "default" and a.size > 0:
            return a.context, a.dtype
        return None

    sizes: dict[tuple[Any, Any], int] = {}
    for group in groups:
        for a in (group or {}).values():
            key = kind(a)
            if key is not None:
                sizes[key] = max(a.size, sizes.get(key, 0))
    buffers = {(ctx, dtype): mx.nd.empty((size,), ctx=ctx, dtype=dtype)
               for (ctx, dtype), size in sizes.items()}

    def stand_in(a: Any) -> Any:
        key = kind(a)
        return a if key is None else buffers[key][:a.size].reshape(a.shape)

    return [None if group is None else {k: stand_in(v) for k, v in group.items()}
            for group in groups]


def _hook_optimize_for(original: Callable[..., Any]) -> Callable[..., Any]:
    """Symbol.optimize_for for our backend: one partitioning at a time, a report per call, our
    own errors (MXNet drops a partitioner's message), and a symbol that remembers the values."""

    @functools.wraps(original)
    def optimize_for(self: Any, backend: str, args: Any = None, aux: Any = None, *rest: Any,
                     **kwargs: Any) -> Any:
        import mxnet as mx

        if backend != BACKEND:
            return original(self, backend, args, aux, *rest, **kwargs)
        if str(kwargs.get("dedup_subgraph", "")).strip().lower() in _ON:
            log.warning("mxtrt: dedup_subgraph=%s is ignored: MXNet 1.9 connects readers of a "
                        "deduplicated subgraph output to outputs that do not exist (wrong answers, "
                        "crashes); the TensorRT backend writes each repeated output itself",
                        kwargs["dedup_subgraph"])
            kwargs["dedup_subgraph"] = "False"
        values = dict(args or {}, **(aux or {}))
        stand_args, stand_aux = _stand_ins(args, aux)
        with _partition_lock, partition.reporting() as report, partition.inferring(
                self, values, kwargs.get("shape_dict"), kwargs.get("type_dict")):
            callbacks.take_partition_error()
            try:
                result = original(self, backend, stand_args, stand_aux, *rest, **kwargs)
            except mx.MXNetError as mx_err:
                err = callbacks.take_partition_error()
                if err is not None:
                    raise err from mx_err
                if kwargs.get("skip_infer") or not (args or aux):
                    raise
                # MXNet's shape inference gave up (e.g. Pad, L2Normalization, box_decode refuse
                # an input of unknown shape) where a bind with the data shapes would not:
                # partition without MXNet's inference; the hook's own still gives the dtypes.
                result = original(self, backend, stand_args, stand_aux, *rest,
                                  **dict(kwargs, skip_infer=True))
                partition.note_inference_failure(report, mx_err)
        _name_with_hint(result)
        partitioned = PartitionedSymbol(result.handle)
        result.handle = None  # the handle now belongs to `partitioned`
        partitioned.report = report
        partitioned.given = _given_values(partitioned, args, aux, kwargs)
        return partitioned

    return optimize_for


# --- Symbol API: binding ----------------------------------------------------------------------


def _backend_symbol(sym: Any) -> tuple[bool, list[str], list[dict]]:
    """Whether ``sym`` is the backend's (made by optimize_for('TensorRT'), or holding `_TensorRT`
    nodes, e.g. loaded from a file), the nodes of its subgraphs that compute differently in
    training, and its graph's nodes (empty without `_TensorRT` nodes)."""
    text = sym.tojson()
    if OP_NAME not in text:
        return isinstance(sym, PartitionedSymbol), [], []
    nodes = json.loads(text)["nodes"]
    found: list[str] = []
    for node in nodes:
        if node["op"] == OP_NAME:
            found += json.loads(node.get("attrs", {}).get(partition.ATTR_TRAINING, "[]"))
    return True, found, nodes


def _fill_given(executor: Any, partitioned: Any, shared_buffer: Mapping[str, Any] | None) -> None:
    """simple_bind allocates zeros: start parameters from the values given to optimize_for.
    Arguments MXNet took from shared_buffer hold the user's own arrays and are left alone."""
    shared = shared_buffer or {}
    for name, value in (getattr(partitioned, "given", None) or {}).items():
        if name in executor.arg_dict and name not in shared:
            value.copyto(executor.arg_dict[name])
        elif name in executor.aux_dict:
            value.copyto(executor.aux_dict[name])


def computes_gradients(grad_req: Any) -> bool:
    """Whether a bind's grad_req (a string, a list, or a dict by argument) asks for gradients."""
    reqs = grad_req.values() if isinstance(grad_req, dict) else (
        [grad_req] if isinstance(grad_req, str) else grad_req)
    return any(req != "null" for req in reqs)


def _inference_only(grad_req: Any) -> bool:
    """`_TensorRT` has no backward. Like MXNet's own backends, the flag then leaves a bind that
    computes gradients (e.g. Module.fit) to plain MXNet. MXNet 1.3 refused such a bind outright,
    so the fallback is a WARNING: code written for 1.3 may not expect it."""
    if not computes_gradients(grad_req):
        return True
    log.warning("mxtrt: %s is on, but this bind computes gradients (grad_req=%r); binding it "
                "with plain MXNet (the TensorRT backend is for inference; pass grad_req='null' "
                "to use it)", FLAG, grad_req)
    return False


def _in_source_order(executor: Any, partitioned: Any, source: Any) -> Any:
    """Present the executor as bound from the user's symbol: its argument order and names.

    MXNet returns arrays in the partitioned symbol's input order; code such as Module indexes
    ``arg_arrays`` by the original ``list_arguments()``.
    """
    def reorder(arrays: list | None, have: list[str], want: list[str]) -> list | None:
        if arrays is None:  # bind() without gradient arrays
            return None
        at = {name: i for i, name in enumerate(have)}
        return [arrays[at[name]] for name in want]

    args, aux = partitioned.list_arguments(), partitioned.list_auxiliary_states()
    executor.arg_arrays = reorder(executor.arg_arrays, args, source.list_arguments())
    executor.grad_arrays = reorder(executor.grad_arrays, args, source.list_arguments())
    executor.aux_arrays = reorder(executor.aux_arrays, aux, source.list_auxiliary_states())
    executor._symbol = copy.deepcopy(source)
    # Executor.reshape gets arrays in the bound (partitioned) order again.
    executor._mxtrt_partitioned = partitioned
    return executor


Plan = Callable[[Any, dict[str, Any]], "dict[str, Any] | None"]


def _hook_binder(original: Callable[..., Any], plan: Plan) -> Callable[..., Any]:
    """Wrap simple_bind or bind. Under the flag, bind the TensorRT-partitioned symbol instead.
    Whenever the bound symbol is the backend's, bind it without MXNet's MKLDNN fusion (it keeps
    stale weights after copy_params_from, and is wrong on some nets), remember what its
    subgraphs compute differently in training, and let simple_bind start from the values given
    to optimize_for.

    ``plan`` sees the call's arguments (and may rewrite them) and returns the arguments for
    optimize_for, or None to leave the call to plain MXNet.
    """
    signature = inspect.signature(original)
    fills = original.__name__ == "simple_bind"

    @functools.wraps(original)
    def binder(self: Any, *args: Any, **kwargs: Any) -> Any:
        call = signature.bind(self, *args, **kwargs)
        call.apply_defaults()
        shared_buffer = call.arguments.get("shared_buffer")
        # A symbol partitioned already (optimize_for, get_backend_symbol, a saved one) binds as
        # it is, keeping the values given to it.
        found = _backend_symbol(self)
        types = plan(self, call.arguments) if enabled() and not found[0] else None
        partitioned = self
        if types is not None:
            partitioned = self.optimize_for(BACKEND, ctx=call.arguments["ctx"], **types)
            found = _backend_symbol(partitioned)
        ours, training, nodes = found
        if not ours:
            return original(self, *args, **kwargs)
        call.arguments["self"] = partitioned
        with subgraph_backend(BACKEND):  # MXNet's own backend would re-partition the rest
            executor = original(*call.args, **call.kwargs)
        if partitioned is not self:
            _in_source_order(executor, partitioned, self)
        if fills:
            _fill_given(executor, partitioned, shared_buffer)
        executor._mxtrt_training = training
        executor._mxtrt_layout = layout.of_executor(executor, nodes)
        return executor

    return binder


def _simple_bind_plan(sym: Any, arguments: dict[str, Any]) -> dict[str, Any] | None:
    if not _inference_only(arguments["grad_req"]):
        return None
    shapes = {k: v for k, v in arguments["kwargs"].items() if isinstance(v, tuple)}
    # MXNet 1.3's TensorRT executor took every weight from shared_buffer, BatchNorm moments
    # included: hand them to optimize_for as the given values (data inputs have their shapes).
    shared = arguments["shared_buffer"] or {}
    args = {n: shared[n] for n in sym.list_arguments() if n in shared and n not in shapes}
    aux = {n: shared[n] for n in sym.list_auxiliary_states() if n in shared}
    return {"args": args, "aux": aux, "shape_dict": shapes, "type_dict": arguments["type_dict"],
            "stype_dict": arguments["stype_dict"]}


def _by_name(values: Any, names: list[str]) -> Any:
    """bind() takes lists in list_arguments() order or dicts; the partitioned symbol may order
    its inputs differently, so lists become dicts."""
    return dict(zip(names, values)) if isinstance(values, (list, tuple)) else values


def _bind_plan(sym: Any, arguments: dict[str, Any]) -> dict[str, Any] | None:
    # Without gradient arrays MXNet computes no gradient, whatever grad_req says.
    if arguments["args_grad"] is not None and not _inference_only(arguments["grad_req"]):
        return None
    for key in ("args", "args_grad", "grad_req"):
        arguments[key] = _by_name(arguments[key], sym.list_arguments())
    arguments["aux_states"] = _by_name(arguments["aux_states"], sym.list_auxiliary_states())
    arrays = dict(arguments["args"], **(arguments["aux_states"] or {}))
    return {"shape_dict": {n: a.shape for n, a in arrays.items()},
            "type_dict": {n: a.dtype for n, a in arrays.items()}}


def _hook_reshape(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def reshape(self: Any, *args: Any, **kwargs: Any) -> Any:
        training = getattr(self, "_mxtrt_training", None)  # None: not the backend's executor
        partitioned = getattr(self, "_mxtrt_partitioned", None)
        if training is None and partitioned is None:
            return original(self, *args, **kwargs)
        with subgraph_backend(BACKEND):
            executor = original(self, *args, **kwargs)
        executor._mxtrt_training = training
        if partitioned is not None:
            _in_source_order(executor, partitioned, self._symbol)
        bound = partitioned if partitioned is not None else self._symbol
        executor._mxtrt_layout = layout.of_executor(executor, _backend_symbol(bound)[2])
        return executor

    return reshape


def _hook_forward(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def forward(self: Any, is_train: bool = False, **kwargs: Any) -> Any:
        differences = getattr(self, "_mxtrt_training", None)
        if is_train and differences:
            shown = "; ".join(differences[:3]) + (f"; ... ({len(differences) - 3} more)"
                                                  if len(differences) > 3 else "")
            raise TrainingModeError(
                f"mxtrt: forward(is_train=True) on an executor whose TensorRT subgraphs compute "
                f"inference, which differs here ({shown}). Call forward(is_train=False) for "
                f"inference; to train, bind the original symbol (without optimize_for('TensorRT')"
                f", or with {FLAG}=0).")
        held = getattr(self, "_mxtrt_layout", None)
        if held is not None:
            held.restore()
        return original(self, is_train, **kwargs)

    return forward


# --- Gluon ------------------------------------------------------------------------------------


def _with_backend_opts(kwargs: dict[str, Any], backend_opts: Mapping[str, Any] | None) -> dict:
    # MXNet 1.9 takes backend options as keyword arguments; later versions as backend_opts.
    return dict(backend_opts or {}, **kwargs)


def _hook_hybridize(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def hybridize(self: Any, active: bool = True, backend: str | None = None, *args: Any,
                  backend_opts: Mapping[str, Any] | None = None, **kwargs: Any) -> Any:
        outermost = not getattr(_hybridizing, "depth", 0)
        if backend is None and active and outermost and enabled():
            backend = BACKEND
        _hybridizing.depth = getattr(_hybridizing, "depth", 0) + 1
        try:
            return original(self, active, backend, *args,
                            **_with_backend_opts(kwargs, backend_opts))
        finally:
            _hybridizing.depth -= 1

    return hybridize


def _hook_block_optimize_for(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def optimize_for(self: Any, x: Any, *args: Any,
                     backend_opts: Mapping[str, Any] | None = None, **kwargs: Any) -> Any:
        return original(self, x, *args, **_with_backend_opts(kwargs, backend_opts))

    return optimize_for


def _hook_build_cache(original: Callable[..., Any]) -> Callable[..., Any]:
    """Name the block's data inputs for the partitioner (Gluon passes them along with the
    parameters), and keep the unpartitioned graph for training-mode calls."""

    @functools.wraps(original)
    def _build_cache(self: Any, *args: Any) -> Any:
        if self._backend != BACKEND:
            return original(self, *args)
        data, out = self._get_graph(*args)
        self._mxtrt_source_graph = (data, out)
        user_opts = self._backend_opts
        if "data_inputs" not in user_opts:
            self._backend_opts = dict(user_opts, data_inputs=",".join(s.name for s in data))
        try:
            return original(self, *args)
        finally:
            self._backend_opts = user_opts
            self._mxtrt_layout = None  # the graph's parameters may have changed

    return _build_cache


_CACHE_FIELDS = ("_cached_graph", "_cached_op", "_cached_op_args")


def _hook_call_cached_op(original: Callable[..., Any]) -> Callable[..., Any]:
    """Training-mode calls (autograd.record(), train_mode()) of a block hybridized with our
    backend run MXNet's own graph, as MXNet would without the backend: TensorRT engines compute
    inference and have no backward. The block keeps a second cache for them. Inference calls
    first put the parameters the subgraphs bake back in the default layout (see ``layout``)."""

    @functools.wraps(original)
    def _call_cached_op(self: Any, *args: Any) -> Any:
        from mxnet import autograd

        if self._backend != BACKEND:
            return original(self, *args)
        if self._cached_op is None:  # partition first: the source graph and parameters are known
            self._build_cache(*args)
        if not (autograd.is_training() or autograd.is_recording()):
            held = getattr(self, "_mxtrt_layout", None)
            if held is None:
                held = self._mxtrt_layout = layout.of_block(self)
            held.restore()
            return original(self, *args)
        inference = tuple(getattr(self, name) for name in _CACHE_FIELDS)
        plain: tuple[Any, ...] = getattr(self, "_mxtrt_training_cache", None) or (
            self._mxtrt_source_graph, None, [])
        for name, value in zip(_CACHE_FIELDS, plain):
            setattr(self, name, value)
        self._backend = None
        try:
            return original(self, *args)
        finally:
            self._mxtrt_training_cache = tuple(getattr(self, name) for name in _CACHE_FIELDS)
            for name, value in zip(_CACHE_FIELDS, inference):
                setattr(self, name, value)
            self._backend = BACKEND

    return _call_cached_op


def _hook_clear_cached_op(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def _clear_cached_op(self: Any) -> Any:
        self._mxtrt_training_cache = None
        self._mxtrt_layout = None
        return original(self)

    return _clear_cached_op


_HOOKS: tuple[tuple[str, str, Callable[[Callable[..., Any]], Callable[..., Any]]], ...] = (
    ("mxnet.symbol", "Symbol.optimize_for", _hook_optimize_for),
    ("mxnet.symbol", "Symbol.simple_bind", lambda f: _hook_binder(f, _simple_bind_plan)),
    ("mxnet.symbol", "Symbol.bind", lambda f: _hook_binder(f, _bind_plan)),
    ("mxnet.executor", "Executor.reshape", _hook_reshape),
    ("mxnet.executor", "Executor.forward", _hook_forward),
    ("mxnet.gluon.block", "HybridBlock.hybridize", _hook_hybridize),
    ("mxnet.gluon.block", "HybridBlock.optimize_for", _hook_block_optimize_for),
    ("mxnet.gluon.block", "HybridBlock._build_cache", _hook_build_cache),
    ("mxnet.gluon.block", "HybridBlock._call_cached_op", _hook_call_cached_op),
    ("mxnet.gluon.block", "HybridBlock._clear_cached_op", _hook_clear_cached_op),
)


def wrap(module_name: str, path: str,
         hook: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
    """Replace the MXNet method ``path`` ("Class.method") of ``module_name`` by ``hook(method)``,
    once: a method already wrapped is left alone (re-imports and reloads are safe)."""
    import importlib

    cls_name, method = path.split(".")
    cls = getattr(importlib.import_module(module_name), cls_name)
    current = cls.__dict__[method]
    if getattr(current, "__mxtrt_hook__", False):
        return
    wrapped = hook(current)
    wrapped.__mxtrt_hook__ = True  # type: ignore[attr-defined]
    setattr(cls, method, wrapped)


def install() -> None:
    """Wrap the MXNet methods above once; idempotent."""
    global PartitionedSymbol
    if PartitionedSymbol is None:
        PartitionedSymbol = _partitioned_symbol_class()
    for module_name, path, hook in _HOOKS:
        wrap(module_name, path, hook)
