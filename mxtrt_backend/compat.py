"""MXNet's own TensorRT API, on this backend: ``mx.contrib.tensorrt`` of MXNet 1.3 and 1.5, and
``sym.get_backend_symbol('TensorRT')``.

MXNet 1.9 has no ``mxnet.contrib.tensorrt``; ``install`` registers one made of the functions
below (the union of what 1.3 and 1.5 offered, same names, arguments and return values), so that
``import mxnet.contrib.tensorrt`` and ``mx.contrib.tensorrt.X`` work after ``import
mxtrt_backend``. What differs from the originals is in docs/coming-from-mxnet.md.

* 1.3 ran TensorRT from ``simple_bind`` while ``MXNET_USE_TENSORRT=1``; ``tensorrt_bind`` was
  ``simple_bind`` with the weights as ``shared_buffer``. The flag's hooks (``activation``) do the
  binding here; what 1.3 refused (a bind that computes gradients) ``tensorrt_bind`` refuses too.
* 1.5 partitioned with ``get_backend_symbol('TensorRT')`` and moved the weights into the
  `_TensorRT` nodes with ``init_tensorrt_params``. Here the weights stay inputs of the nodes:
  ``init_tensorrt_params`` hands them to the symbol as given values, which ``simple_bind`` fills
  in (``activation._fill_given``), and returns the rest as 1.5 did. Its engines ran in fp16 unless
  ``MXNET_TENSORRT_USE_FP16=0``: symbols made by ``get_backend_symbol`` keep that default.
"""
from __future__ import annotations

import functools
import json
import os
import sys
import types
from typing import Any, Callable, Mapping

from mxnet.base import MXNetError

from . import activation, config, partition

FP16_VARIABLE = "MXNET_TENSORRT_USE_FP16"
MODULE = "mxnet.contrib.tensorrt"
# Defaults of symbols made by get_backend_symbol('TensorRT'): MXNet 1.5 ran them in fp16.
_MXNET15_DEFAULTS = {"use_fp16": "1"}


class InferenceOnlyError(MXNetError):
    """MXNet 1.3's refusal of a TensorRT bind that computes gradients."""


def set_use_tensorrt(status: Any) -> None:
    """MXNet 1.3: turn the TensorRT backend of ``simple_bind``/``bind`` on or off
    (``MXNET_USE_TENSORRT``, read at every bind)."""
    os.environ[activation.FLAG] = str(int(status))


def get_use_tensorrt() -> bool:
    """MXNet 1.3: whether ``MXNET_USE_TENSORRT`` turns the backend on, read now."""
    return activation.enabled()


def get_optimized_symbol(executor: Any) -> Any:
    """MXNet 1.3: the graph an executor runs, with its `_TensorRT` nodes."""
    return executor.get_optimized_symbol()


def tensorrt_bind(symbol: Any, ctx: Any, all_params: Mapping[str, Any], type_dict: Any = None,
                  stype_dict: Any = None, group2ctx: Any = None, **kwargs: Any) -> Any:
    """MXNet 1.3: ``simple_bind`` with ``all_params`` (weights and BatchNorm moments) as the
    shared buffer; under ``MXNET_USE_TENSORRT=1`` the executor runs `_TensorRT` subgraphs.
    ``kwargs`` are ``simple_bind``'s (input shapes, ``grad_req``, ``force_rebind``, ...)."""
    if get_use_tensorrt() and activation.computes_gradients(kwargs.get("grad_req", "write")):
        raise InferenceOnlyError(
            "You may be attempting to use TensorRT for training.  TensorRT is an inference only "
            "library.  To re-enable legacy MXNet graph execution, which will support training, "
            "set the MXNET_USE_TENSORRT environment variable to 0, or call "
            "mx.contrib.tensorrt.set_use_tensorrt(False). (mxtrt: tensorrt_bind got grad_req="
            f"{kwargs.get('grad_req', 'write (simple_bind default)')!r}; pass grad_req='null' "
            "for inference)")
    kwargs["shared_buffer"] = all_params
    return symbol.simple_bind(ctx, type_dict=type_dict, stype_dict=stype_dict,
                             group2ctx=group2ctx, **kwargs)


def set_use_fp16(status: Any) -> None:
    """MXNet 1.5: run TensorRT engines in fp16 (True) or fp32 (False); read when MXNet creates
    each `_TensorRT` op (at bind). An explicit ``precision`` beats it."""
    os.environ[FP16_VARIABLE] = str(int(status))


def get_use_fp16() -> bool:
    """MXNet 1.5: ``MXNET_TENSORRT_USE_FP16``, True when unset (1.5's default)."""
    value = config.environment_value("use_fp16")
    return True if value is None else bool(value)


def _trt_node_inputs(sym: Any) -> list[str]:
    """The variables the `_TensorRT` nodes of ``sym`` read."""
    nodes = json.loads(sym.tojson())["nodes"]
    return list(dict.fromkeys(
        nodes[src]["name"] for node in nodes if node["op"] == activation.OP_NAME
        for src, *_ in node["inputs"] if nodes[src]["op"] == "null"))


def init_tensorrt_params(sym: Any, arg_params: dict[str, Any], aux_params: dict[str, Any]
                         ) -> tuple[dict[str, Any], dict[str, Any]]:
    """MXNet 1.5: give the `_TensorRT` nodes of ``sym`` (from ``get_backend_symbol('TensorRT')``)
    their weights. They are removed from ``arg_params``/``aux_params``, as in 1.5, and kept on
    ``sym``; ``simple_bind`` of ``sym`` starts from them. Returns the parameters left to MXNet:
    ``(arg_params, aux_params)``, the dictionaries given, changed in place."""
    if not isinstance(sym, activation.PartitionedSymbol):
        raise TypeError("init_tensorrt_params needs the symbol returned by "
                        "get_backend_symbol('TensorRT') (it keeps the weights for simple_bind); "
                        f"got {type(sym).__name__}. For a symbol loaded from a file, pass its "
                        "parameters to bind or copy_params_from as usual")
    taken = {}
    for name in _trt_node_inputs(sym):
        source = arg_params if name in arg_params else aux_params if name in aux_params else None
        if source is not None:
            taken[name] = source.pop(name)
    sym.given = dict(sym.given, **taken)
    return arg_params, aux_params


def _set_node_defaults(sym: Any, defaults: Mapping[str, str]) -> None:
    """Option defaults on every `_TensorRT` node of ``sym`` (read when MXNet creates the op)."""
    names = {n["name"] for n in json.loads(sym.tojson())["nodes"] if n["op"] == activation.OP_NAME}
    text = json.dumps(dict(defaults), sort_keys=True)
    for internal in sym.get_internals():
        if internal.name in names:
            internal._set_attr(**{partition.ATTR_DEFAULTS: text})


def _hook_get_backend_symbol(original: Callable[..., Any]) -> Callable[..., Any]:
    """MXNet 1.9 runs a plugin's partitioner from optimize_for only: get_backend_symbol would
    return the graph unchanged. For 'TensorRT' it partitions, with MXNet 1.5's defaults."""

    @functools.wraps(original)
    def get_backend_symbol(self: Any, backend: str) -> Any:
        if backend != activation.BACKEND:
            return original(self, backend)
        partitioned = self.optimize_for(activation.BACKEND)
        _set_node_defaults(partitioned, _MXNET15_DEFAULTS)
        return partitioned

    return get_backend_symbol


API = (set_use_tensorrt, get_use_tensorrt, tensorrt_bind, get_optimized_symbol,
       init_tensorrt_params, set_use_fp16, get_use_fp16)


def install() -> None:
    """Register ``mxnet.contrib.tensorrt`` and hook ``get_backend_symbol``; idempotent."""
    import mxnet.contrib

    activation.wrap("mxnet.symbol", "Symbol.get_backend_symbol", _hook_get_backend_symbol)
    if MODULE in sys.modules:
        return
    module = types.ModuleType(MODULE, "MXNet 1.3/1.5's TensorRT API, provided by mxtrt "
                                      "(mxtrt_backend.compat).")
    for function in API:
        setattr(module, function.__name__, function)
    module.__all__ = [function.__name__ for function in API]  # type: ignore[attr-defined]
    sys.modules[MODULE] = module
    mxnet.contrib.tensorrt = module  # type: ignore[attr-defined]
