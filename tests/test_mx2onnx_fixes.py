"""The corrections to mx2onnx hold during the backend's export only; outside it, mx2onnx is as
MXNet ships it (a user's own mx.onnx export in the same process is unaffected)."""
from __future__ import annotations

import mxnet as mx
import numpy as np
import onnx
import pytest
from mxnet.onnx.mx2onnx._export_onnx import MXNetGraph
from mxnet.onnx.mx2onnx._op_translations import _op_translations_opset12 as v12
from onnx import checker, helper, numpy_helper

from mxtrt_backend import export, mx2onnx_fixes


def originals():
    registry = MXNetGraph.registry_[export.OPSET]
    return (checker.check_graph, helper.make_tensor, v12.create_tensor, "print" in vars(v12),
            vars(MXNetGraph)["get_outputs"], [registry.get(op) for op in mx2onnx_fixes.CONVERTERS])


def test_fixes_are_in_force_inside_and_undone_after_an_export():
    before = originals()
    with mx2onnx_fixes.applied(export.OPSET, shapes=False):
        assert all(MXNetGraph.registry_[export.OPSET][op] is converter
                   for op, converter in mx2onnx_fixes.CONVERTERS.items())
        assert v12.create_tensor is not before[2] and helper.make_tensor is not before[1]
        assert vars(MXNetGraph)["get_outputs"] is not before[4]
    assert originals() == before


def test_fixes_are_undone_when_the_export_fails():
    before = originals()
    with pytest.raises(RuntimeError), mx2onnx_fixes.applied(export.OPSET):
        raise RuntimeError("converter failed")
    assert originals() == before


def test_float16_constants_keep_their_value():
    sym = mx.sym.var("data") * 0.5 + 3
    graph = export.export_structure(export.Subgraph.from_json(sym.tojson()), [(2, 3)],
                                    [np.dtype("float16")])
    model = onnx.load_from_string(graph.onnx_bytes)
    values = sorted(float(numpy_helper.to_array(t)) for t in model.graph.initializer)
    assert values == [0.5, 3.0]
