"""Every ONNX graph our exporter makes for the test models is one TensorRT's ONNX parser takes."""
from __future__ import annotations

import tempfile
from pathlib import Path

import mxnet as mx
import numpy as np
import onnx
import pytest
from onnx import helper

from mxtrt_backend import export, trt_onnx_ops
from mxtrt_backend.engine.cache import ENGINES
from mxtrt_backend.engine.ort import OrtRuntime
from mxtrt_backend.trt_onnx_ops import SUPPORTED_OPS, unsupported_ops

from conftest import forward, random_params
from test_models import zoo_symbol

DATA = (2, 3, 8, 8)
# The model-zoo nets of test_models.py, but vgg11_bn (its 100M-parameter FC layers take ~20 s to
# export and bake, and bring no operator the others lack).
ZOO = ["resnet18_v1", "mobilenet1.0", "squeezenet1.0", "densenet121", "inceptionv3"]


def conv_net() -> mx.sym.Symbol:
    data = mx.sym.var("data")
    x = mx.sym.Convolution(data, num_filter=4, kernel=(3, 3), pad=(1, 1), name="c1")
    x = mx.sym.BatchNorm(x, fix_gamma=False, name="bn1")
    x = mx.sym.Activation(x, act_type="relu", name="r1")
    y = mx.sym.Convolution(x, num_filter=4, kernel=(1, 1), name="c2")
    x = mx.sym.elemwise_add(x, y, name="res")
    x = mx.sym.Concat(x, mx.sym.Activation(y, act_type="sigmoid", name="s1"), dim=1, name="cat")
    x = mx.sym.Pooling(x, kernel=(2, 2), stride=(2, 2), pool_type="max", name="p1")
    x = mx.sym.Pooling(x, kernel=(1, 1), global_pool=True, pool_type="avg", name="gap")
    x = mx.sym.Flatten(x, name="flat")
    return mx.sym.FullyConnected(x, num_hidden=5, name="fc")


def pipeline_graphs(sym: mx.sym.Symbol, data_shape: tuple[int, ...]) -> list[export.ExportedGraph]:
    """The ONNX graphs the real pipeline hands to a runtime's build, as TensorRT's parser would get
    them: optimize_for, bind and forward on a CPU context; the op exports each subgraph
    (export_structure) and bakes its parameters (bake_params) before calling Runtime.build."""
    args, aux = random_params(sym, {"data": data_shape})
    handed: list[bytes] = []
    original = OrtRuntime.build

    def build(self, onnx_bytes, *rest):  # records what the runtime is given, then builds it
        handed.append(onnx_bytes)
        return original(self, onnx_bytes, *rest)

    ENGINES.clear_memory()  # so every engine is built here
    with tempfile.TemporaryDirectory() as folder, pytest.MonkeyPatch.context() as patch:
        patch.setattr(OrtRuntime, "build", build)
        part = sym.optimize_for("TensorRT", args, aux, ctx=mx.cpu(), cache_dir=folder)
        forward(part, args, aux, {"data": np.zeros(data_shape, np.float32)})
    assert handed, "nothing was converted"
    models = [onnx.load_from_string(b) for b in handed]
    return [export.ExportedGraph(b, tuple(i.name for i in m.graph.input),
                                 tuple(o.name for o in m.graph.output))
            for b, m in zip(handed, models)]


def data_subgraph(data_shape: tuple[int, ...] = DATA) -> export.ExportedGraph:
    """The conv net's exported subgraph that starts at the network's data input."""
    return next(g for g in pipeline_graphs(conv_net(), data_shape) if g.input_names == ("data0",))


def _check(graphs: list[export.ExportedGraph]) -> set[str]:
    seen: set[str] = set()
    for graph in graphs:
        model = onnx.load_from_string(graph.onnx_bytes)
        onnx.checker.check_model(model, full_check=True)
        low, high = trt_onnx_ops.OPSET_RANGE
        assert low <= model.opset_import[0].version <= high
        assert unsupported_ops(model) == [], graph.input_names
        seen |= {node.op_type for node in model.graph.node}
    return seen


def test_exported_conv_net_passes_the_checker_and_uses_only_supported_ops():
    seen = _check(pipeline_graphs(conv_net(), DATA))
    # The net really went through the exporter: its ops are there.
    assert {"Conv", "BatchNormalization", "Relu", "Sigmoid", "Add", "Concat",
            "GlobalAveragePool", "Flatten", "Gemm"} <= seen, seen


@pytest.mark.parametrize("name", ZOO)
def test_exported_zoo_nets_use_only_supported_ops(name):
    sym, shape = zoo_symbol(name)
    assert "Conv" in _check(pipeline_graphs(sym, shape))


def test_unsupported_ops_lists_what_the_parser_lacks_including_subgraphs_and_domains():
    inner = helper.make_graph([helper.make_node("Unique", ["x"], ["u"])], "body", [], [])
    nodes = [helper.make_node("Relu", ["x"], ["y"]),
             helper.make_node("StringNormalizer", ["s"], ["t"]),
             helper.make_node("If", ["c"], ["z"], then_branch=inner, else_branch=inner),
             helper.make_node("MyPlugin", ["y"], ["w"], domain="com.example")]
    model = helper.make_model(helper.make_graph(nodes, "g", [], []))
    assert unsupported_ops(model) == ["StringNormalizer", "Unique", "com.example::MyPlugin"]
    assert unsupported_ops(model.SerializeToString()) == unsupported_ops(model)


@pytest.mark.parametrize("op", ["Conv", "BatchNormalization", "Gemm", "Resize", "LayerNormalization"])
def test_table_holds_common_ops(op):
    assert op in SUPPORTED_OPS


@pytest.mark.parametrize("op", ["Unique", "ConvInteger", "SequenceAt"])
def test_table_leaves_out_what_the_matrix_marks_unsupported(op):
    assert op not in SUPPORTED_OPS
