"""Every ONNX graph our exporter makes for the test models is one TensorRT's ONNX parser takes."""
from __future__ import annotations


import onnx
import pytest
from onnx import helper

from mxtrt_backend import export, trt_onnx_ops
from mxtrt_backend.trt_onnx_ops import SUPPORTED_OPS, unsupported_ops

from helpers import DATA, conv_net, pipeline_graphs, zoo_symbol

# The model-zoo nets of test_models.py, but vgg11_bn (its 100M-parameter FC layers take ~20 s to
# export and bake, and bring no operator the others lack).
ZOO = ["resnet18_v1", "mobilenet1.0", "squeezenet1.0", "densenet121", "inceptionv3"]


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


def _typed_model(nodes, inputs):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, t, [2]) for n, t in inputs],
                              [helper.make_tensor_value_info(nodes[-1].output[0], onnx.TensorProto.UNDEFINED, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_unsupported_types_flags_integer_and_boolean_tensors_where_the_matrix_does_not_list_them():
    I64, F32, B = onnx.TensorProto.INT64, onnx.TensorProto.FLOAT, onnx.TensorProto.BOOL
    ok = _typed_model([helper.make_node("Add", ["a", "b"], ["s"]), helper.make_node("Shape", ["s"], ["t"]),
                       helper.make_node("Concat", ["t", "t"], ["u"], axis=0)], [("a", I64), ("b", I64)])
    assert trt_onnx_ops.unsupported_types(ok) == []
    bad = _typed_model([helper.make_node("Sqrt", ["a"], ["r"]), helper.make_node("And", ["f", "f"], ["g"]),
                        helper.make_node("Where", ["c", "a", "a"], ["w"])], [("a", I64), ("f", F32), ("c", B)])
    assert trt_onnx_ops.unsupported_types(bad.SerializeToString()) == ["And(float32)", "Sqrt(int64)"]
