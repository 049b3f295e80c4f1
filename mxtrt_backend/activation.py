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
import logging
import os
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Mapping

from .config import OptionError

log = logging.getLogger("mxtrt")

FLAG = "MXNET_USE_TENSORRT"
BACKEND = "TensorRT"
SUBGRAPH_ENV = "MXNET_SUBGRAPH_BACKEND"

_ON = frozenset({"1", "true", "yes", "on"})
_OFF = frozenset({"", "0", "false", "no", "off"})

# os.environ is process-wide: binds that set MXNET_SUBGRAPH_BACKEND must not interleave.
_env_lock = threading.RLock()
# Block.hybridize recurses into children; only the outermost call picks the backend, as an
# explicit hybridize(backend=...) would.
_hybridizing = threading.local()


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
def _subgraph_backend(name: str) -> Iterator[None]:
    with _env_lock:
        previous = os.environ.get(SUBGRAPH_ENV)
        os.environ[SUBGRAPH_ENV] = name
        try:
            yield
        finally:
            if previous is None:
                del os.environ[SUBGRAPH_ENV]
            else:
                os.environ[SUBGRAPH_ENV] = previous


# --- Symbol API -------------------------------------------------------------------------------


def _inference_only(grad_req: Any) -> bool:
    """`_TensorRT` has no backward. Like MXNet's own backends, the flag then leaves a bind that
    computes gradients (e.g. Module.fit) to plain MXNet."""
    reqs = grad_req.values() if isinstance(grad_req, dict) else (
        [grad_req] if isinstance(grad_req, str) else grad_req)
    if all(req == "null" for req in reqs):
        return True
    log.info("mxtrt: %s is on, but this bind computes gradients (grad_req=%r); binding it with "
             "plain MXNet (the TensorRT backend is for inference)", FLAG, grad_req)
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
    """Wrap simple_bind or bind: under the flag, bind the TensorRT-partitioned symbol instead.

    ``plan`` sees the call's arguments (and may rewrite them) and returns the shape/type
    arguments for optimize_for, or None to leave the call to plain MXNet.
    """
    signature = inspect.signature(original)

    @functools.wraps(original)
    def binder(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not enabled():
            return original(self, *args, **kwargs)
        call = signature.bind(self, *args, **kwargs)
        call.apply_defaults()
        types = plan(self, call.arguments)
        if types is None:
            return original(self, *args, **kwargs)
        partitioned = self.optimize_for(BACKEND, ctx=call.arguments["ctx"], **types)
        call.arguments["self"] = partitioned
        with _subgraph_backend(BACKEND):
            executor = original(*call.args, **call.kwargs)
        return _in_source_order(executor, partitioned, self)

    return binder


def _simple_bind_plan(sym: Any, arguments: dict[str, Any]) -> dict[str, Any] | None:
    if not _inference_only(arguments["grad_req"]):
        return None
    shapes = {k: v for k, v in arguments["kwargs"].items() if isinstance(v, tuple)}
    return {"shape_dict": shapes, "type_dict": arguments["type_dict"],
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
        executor = original(self, *args, **kwargs)
        partitioned = getattr(self, "_mxtrt_partitioned", None)
        if partitioned is None:
            return executor
        return _in_source_order(executor, partitioned, self._symbol)

    return reshape


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


def _hook_optimize_for(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def optimize_for(self: Any, x: Any, *args: Any,
                     backend_opts: Mapping[str, Any] | None = None, **kwargs: Any) -> Any:
        return original(self, x, *args, **_with_backend_opts(kwargs, backend_opts))

    return optimize_for


def _hook_build_cache(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def _build_cache(self: Any, *args: Any) -> Any:
        if self._backend != BACKEND or "data_inputs" in self._backend_opts:
            return original(self, *args)
        data, _ = self._get_graph(*args)
        user_opts = self._backend_opts
        self._backend_opts = dict(user_opts, data_inputs=",".join(s.name for s in data))
        try:
            return original(self, *args)
        finally:
            self._backend_opts = user_opts

    return _build_cache


_HOOKS: tuple[tuple[str, str, Callable[[Callable[..., Any]], Callable[..., Any]]], ...] = (
    ("mxnet.symbol", "Symbol.simple_bind", lambda f: _hook_binder(f, _simple_bind_plan)),
    ("mxnet.symbol", "Symbol.bind", lambda f: _hook_binder(f, _bind_plan)),
    ("mxnet.executor", "Executor.reshape", _hook_reshape),
    ("mxnet.gluon.block", "HybridBlock.hybridize", _hook_hybridize),
    ("mxnet.gluon.block", "HybridBlock.optimize_for", _hook_optimize_for),
    ("mxnet.gluon.block", "HybridBlock._build_cache", _hook_build_cache),
)


def install() -> None:
    """Wrap the MXNet methods above once; idempotent (re-imports and reloads are safe)."""
    import importlib

    for module_name, path, hook in _HOOKS:
        cls_name, method = path.split(".")
        cls = getattr(importlib.import_module(module_name), cls_name)
        current = cls.__dict__[method]
        if getattr(current, "__mxtrt_hook__", False):
            continue
        wrapped = hook(current)
        wrapped.__mxtrt_hook__ = True  # type: ignore[attr-defined]
        setattr(cls, method, wrapped)
