"""Corrections to MXNet 1.9.1's ONNX exporter, in force only while the backend exports.

* mx2onnx validates each graph against the newest opset the installed onnx knows, not the opset
  it exports for: an opset-13 ReduceMean with an ``axes`` attribute (LayerNorm, mean(axis=...))
  fails that check although it is valid opset 13. The check here uses the export opset.
* Its helpers that make constants, and its scalar ops, pre-convert float16 values to their bit
  patterns, which the installed onnx then converts again as numbers: every float16 constant (a
  scalar operand, a pad value, a softmax temperature) comes out as garbage. The helpers are
  replaced by ones that hand numpy arrays to ``numpy_helper.from_array``, and ``make_tensor``
  takes uint16 values for float16 tensors as bit patterns.
* Some converters print to stdout; they are silenced.
* Ops mx2onnx has no converter for, or converts wrongly, get ours (``converters``).

All of these are swapped in for the duration of an export (under a lock) so that a user's own
``mx.onnx.export_model`` calls in the same process see mx2onnx unchanged.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Any, Callable, Iterator

import numpy as np
import onnx
from onnx import checker, helper, numpy_helper

from . import converters

_lock = threading.Lock()


def _create_tensor(values: Any, name: str, initializer: list, dtype: Any = "int64") -> None:
    initializer.append(numpy_helper.from_array(np.array(values, dtype=dtype), name))


def _create_const_node(name: str, value: Any, kwargs: dict) -> None:
    kwargs["initializer"].append(numpy_helper.from_array(np.asarray(value), name))


def _make_tensor(original: Callable[..., onnx.TensorProto]) -> Callable[..., onnx.TensorProto]:
    """onnx.helper.make_tensor that takes float16 values given as uint16 bit patterns (as the
    scalar ops of mx2onnx pass them) for the numbers they encode."""

    def make_tensor(name: str, data_type: int, dims: Any, vals: Any, raw: bool = False
                    ) -> onnx.TensorProto:
        if data_type == onnx.TensorProto.FLOAT16 and not raw:
            array = np.asarray(vals)
            if array.dtype == np.uint16:
                vals = array.view(np.float16)
        return original(name, data_type, dims, vals, raw)

    return make_tensor


def _quiet(*_: Any, **__: Any) -> None:
    """Some converters print node names to stdout (e.g. _rminus_scalar)."""


# mx2onnx module-level helper -> replacement; converters look them up as module globals.
HELPERS: dict[str, Callable[..., None]] = {
    "create_tensor": _create_tensor,
    "create_const_scalar_node": _create_const_node,
    "create_const_node": _create_const_node,
    "print": _quiet,
}
_ABSENT = object()

# op -> converter, for every opset the backend exports with.
CONVERTERS: dict[str, converters.Converter] = converters.CONVERTERS


def _checker_at(opset: int, shapes: bool) -> Callable[..., None]:
    context = checker.C.CheckerContext()
    context.ir_version = onnx.IR_VERSION
    context.opset_imports = {"": opset}
    original = checker.check_graph

    def check_graph(graph: onnx.GraphProto, ctx: Any = None) -> None:
        if not shapes:  # the checker wants a shape on graph inputs and outputs: give them one
            graph = _with_shapes(graph)
        original(graph, context if ctx is None else ctx)

    return check_graph


def _with_shapes(graph: onnx.GraphProto) -> onnx.GraphProto:
    checked = onnx.GraphProto()
    checked.CopyFrom(graph)
    for value in (*checked.input, *checked.output):
        if not value.type.tensor_type.HasField("shape"):
            value.type.tensor_type.shape.SetInParent()
    return checked


def onnx_output_name(mx_output: str) -> str:
    """mx2onnx names a graph output after its node: "x_output" -> "x", "x_output1" -> "x1"."""
    stem, _, index = mx_output.rpartition("_output")
    return stem + index if stem and (index == "" or index.isdigit()) else mx_output


def _outputs_by_type(sym: Any, params: Any, in_shapes: list, output_label: str, in_types: list,
                     *_: Any, **__: Any) -> tuple[list, dict]:
    """mx2onnx's MXNetGraph.get_outputs without shapes: the graph outputs' names (as mx2onnx
    names them) and dtypes, their shapes unknown."""
    inputs = [n for n in sym.list_inputs() if n not in params and n != output_label]
    types = {n: helper.tensor_dtype_to_np_dtype(t) for n, t in zip(inputs, in_types)}
    out_types = sym.infer_type(**types)[1]
    return in_shapes, {onnx_output_name(name): {"dtype": helper.np_dtype_to_tensor_dtype(
        np.dtype(dtype)), "shape": None} for name, dtype in zip(sym.list_outputs(), out_types)}


@contextlib.contextmanager
def applied(opset: int, shapes: bool = True) -> Iterator[None]:
    """The corrections, for one export. ``shapes=False``: the graph's input shapes are unknown
    (a trial export before MXNet knows them)."""
    from mxnet.onnx.mx2onnx._export_onnx import MXNetGraph
    from mxnet.onnx.mx2onnx._op_translations import (_op_translations_opset12 as v12,
                                                      _op_translations_opset13 as v13)

    with _lock:
        registry = MXNetGraph.registry_.setdefault(opset, {})
        saved_check, saved_make_tensor = checker.check_graph, helper.make_tensor
        saved_outputs = vars(MXNetGraph)["get_outputs"]
        saved_ops = {op: registry.get(op) for op in CONVERTERS}
        saved_helpers = [(module, name, vars(module).get(name, _ABSENT)) for module in (v12, v13)
                         for name in HELPERS]
        checker.check_graph = _checker_at(opset, shapes)
        helper.make_tensor = _make_tensor(saved_make_tensor)
        if not shapes:
            MXNetGraph.get_outputs = staticmethod(_outputs_by_type)
        registry.update(CONVERTERS)
        for module, name, _ in saved_helpers:
            setattr(module, name, HELPERS[name])
        try:
            yield
        finally:
            checker.check_graph, helper.make_tensor = saved_check, saved_make_tensor
            MXNetGraph.get_outputs = saved_outputs
            for module, name, original in saved_helpers:
                if original is _ABSENT:
                    delattr(module, name)
                else:
                    setattr(module, name, original)
            for op, converter in saved_ops.items():
                if converter is None:
                    registry.pop(op, None)
                else:
                    registry[op] = converter
