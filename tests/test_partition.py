"""Partitioning through MXNet's real optimize_for: what lands in _TensorRT nodes and what stays."""
from __future__ import annotations

import logging

import mxnet as mx
import numpy as np
import pytest

import mxtrt_backend
from mxtrt_backend import OptionError
from helpers import forward, op_names, random_params, rel_err

SHAPE = (2, 3, 8, 8)


def conv_block(x, name):
    x = mx.sym.Convolution(x, num_filter=4, kernel=(3, 3), pad=(1, 1), name=f"{name}_conv")
    return mx.sym.Activation(x, act_type="relu", name=f"{name}_relu")


def partition(sym, **options):
    args, aux = random_params(sym, {"data": SHAPE})
    return sym.optimize_for("TensorRT", args, aux, ctx=mx.cpu(), **options), args, aux


def check_numerics(sym, trt_sym, args, aux):
    x = np.random.RandomState(3).uniform(-1, 1, SHAPE).astype("f")
    for out, ref in zip(forward(trt_sym, args, aux, {"data": x}), forward(sym, args, aux, {"data": x})):
        assert rel_err(out, ref) < 1e-5


def test_subgraph_op_is_named_TensorRT():
    sym = conv_block(mx.sym.var("data"), "a")
    trt_sym, args, aux = partition(sym)
    assert mxtrt_backend.OP_NAME == "_TensorRT"
    assert [op for op in op_names(trt_sym) if op != "null"] == ["_TensorRT"]
    check_numerics(sym, trt_sym, args, aux)


def test_unsupported_node_stays_in_mxnet_between_two_subgraphs():
    x = conv_block(mx.sym.var("data"), "a")
    x = mx.sym.erf(x, name="unsupported")  # mx2onnx has no converter for erf
    sym = conv_block(x, "b")
    trt_sym, args, aux = partition(sym)
    assert [op for op in op_names(trt_sym) if op != "null"] == ["_TensorRT", "erf", "_TensorRT"]
    report = mxtrt_backend.last_report()
    assert [(r.node, r.op, r.reason) for r in report.refused] == [
        ("unsupported", "erf", "no converter for this op")]
    assert report.converted_nodes == 4 and report.compute_nodes == 5
    check_numerics(sym, trt_sym, args, aux)


def test_min_subgraph_size_leaves_small_subgraphs_to_mxnet():
    x = conv_block(mx.sym.var("data"), "a")
    x = mx.sym.erf(x, name="cut")
    x = mx.sym.Activation(x, act_type="relu", name="lonely")
    sym = mx.sym.Activation(mx.sym.erf(x, name="cut2"), act_type="tanh", name="lonely2")
    trt_sym, args, aux = partition(sym, min_subgraph_size="2")
    assert op_names(trt_sym).count("_TensorRT") == 1
    assert "lonely" in [r.node for r in mxtrt_backend.last_report().refused]
    trt_sym, _, _ = partition(sym, min_subgraph_size="3")
    assert "_TensorRT" not in op_names(trt_sym)
    rejected = [s for s in mxtrt_backend.last_report().subgraphs if not s.accepted]
    assert rejected and "min_subgraph_size=3" in rejected[0].reason
    trt_sym, args, aux = partition(sym, min_subgraph_size="1")
    assert op_names(trt_sym).count("_TensorRT") == 3
    check_numerics(sym, trt_sym, args, aux)


def test_exclude_ops_keeps_the_named_ops_in_mxnet():
    sym = conv_block(conv_block(mx.sym.var("data"), "a"), "b")
    trt_sym, args, aux = partition(sym, exclude_ops="Activation", min_subgraph_size="1")
    ops = op_names(trt_sym)
    assert ops.count("Activation") == 2 and ops.count("_TensorRT") == 2
    check_numerics(sym, trt_sym, args, aux)


def test_branches_and_multiple_outputs():
    x = conv_block(mx.sym.var("data"), "stem")
    left = conv_block(x, "left")
    right = conv_block(x, "right")
    joined = mx.sym.Concat(left, right, dim=1, name="join")
    pooled = mx.sym.Pooling(joined, kernel=(2, 2), stride=(2, 2), pool_type="avg", name="pool")
    sym = mx.sym.Group([pooled, mx.sym.elemwise_add(left, right, name="sum")])
    trt_sym, args, aux = partition(sym)
    assert op_names(trt_sym).count("_TensorRT") == 1
    assert len(trt_sym.list_outputs()) == 2
    check_numerics(sym, trt_sym, args, aux)


def test_subgraph_output_also_consumed_by_mxnet():
    x = conv_block(mx.sym.var("data"), "a")
    y = mx.sym.erf(x, name="outside")
    sym = mx.sym.Group([mx.sym.Activation(x, act_type="tanh", name="t"), y])
    trt_sym, args, aux = partition(sym)
    assert "_TensorRT" in op_names(trt_sym)
    check_numerics(sym, trt_sym, args, aux)


def test_graph_with_nothing_supported_is_unchanged():
    sym = mx.sym.erf(mx.sym.erfinv(mx.sym.var("data")))
    trt_sym, args, aux = partition(sym)
    assert op_names(trt_sym) == op_names(sym)
    assert mxtrt_backend.last_report().converted_nodes == 0


def test_unknown_option_fails_optimize_for_with_a_suggestion():
    sym = conv_block(mx.sym.var("data"), "a")
    with pytest.raises(OptionError, match="option 'min_subgraph_sise' is unknown; did you mean 'min_subgraph_size'"):
        partition(sym, min_subgraph_sise="2")


def test_bad_option_value_fails_before_anything_is_built(isolated_cache):
    sym = conv_block(mx.sym.var("data"), "a")
    with pytest.raises(OptionError, match="option 'min_subgraph_size' = '-1'"):
        partition(sym, min_subgraph_size="-1")
    assert not isolated_cache.exists()


def test_subgraph_that_cannot_be_exported_stays_in_mxnet_with_a_warning(monkeypatch, caplog):
    """With shapes known at partition time, export is tried there; a failure means MXNet runs it."""
    from mxtrt_backend import support

    # Pretend the registry wrongly accepts sum pooling, which mx2onnx cannot export.
    monkeypatch.setitem(support.REGISTRY, "Pooling", support.OpSupport("Pooling", support.always))
    x = conv_block(mx.sym.var("data"), "a")
    sym = mx.sym.Pooling(x, kernel=(2, 2), pool_type="sum", name="sum_pool")
    args, aux = random_params(sym, {"data": SHAPE})
    with caplog.at_level(logging.WARNING, logger="mxtrt"):
        trt_sym = sym.optimize_for("TensorRT", args, aux, ctx=mx.cpu(), shape_dict={"data": SHAPE})
    assert "_TensorRT" not in op_names(trt_sym)
    rejected = [s for s in mxtrt_backend.last_report().subgraphs if not s.accepted]
    assert rejected and "export failed" in rejected[0].reason and "sum" in rejected[0].reason
    assert any("stays in MXNet" in r.message for r in caplog.records)
    check_numerics(sym, trt_sym, args, aux)


def test_subgraph_that_cannot_be_exported_stays_in_mxnet_without_shapes_too(monkeypatch):
    """Without input shapes the export is tried with the dtypes alone: the bind still works."""
    from mxtrt_backend import support

    monkeypatch.setitem(support.REGISTRY, "Pooling", support.OpSupport("Pooling", support.always))
    x = conv_block(mx.sym.var("data"), "a")
    sym = mx.sym.Pooling(x, kernel=(2, 2), pool_type="sum", name="sum_pool")
    args, aux = random_params(sym, {"data": SHAPE})
    trt_sym = sym.optimize_for("TensorRT", {}, {}, ctx=mx.cpu())  # MXNet infers nothing
    assert "_TensorRT" not in op_names(trt_sym)
    rejected = [s for s in mxtrt_backend.last_report().subgraphs if not s.accepted]
    assert rejected and "export failed" in rejected[0].reason
    check_numerics(sym, trt_sym, args, aux)


def padded_net():
    """Pad needs its input's rank in MXNet's shape inference: without the data shape, MXNet's
    inference before partitioning fails, though a bind with the data works."""
    x = conv_block(mx.sym.var("data"), "a")
    x = mx.sym.Pad(x, mode="constant", pad_width=(0, 0, 0, 0, 1, 1, 1, 1), name="pad")
    return conv_block(x, "b")


def test_optimize_for_without_shapes_works_where_mxnet_shape_inference_gives_up(caplog):
    sym = padded_net()
    args, aux = random_params(sym, {"data": SHAPE})
    with pytest.raises(mx.MXNetError, match="only supports 4-D or 5-D input"):
        sym.infer_shape_partial(**{k: v.shape for k, v in args.items()})
    with caplog.at_level(logging.INFO, logger="mxtrt"):
        trt_sym = sym.optimize_for("TensorRT", args, aux, ctx=mx.cpu())
    report = mxtrt_backend.last_report()
    assert report.converted_nodes == report.compute_nodes == 5 and report.hints == []
    assert any("shape inference failed" in r.message and "pad: Current implementation only "
               "supports 4-D or 5-D input" in r.message for r in caplog.records)
    check_numerics(sym, trt_sym, args, aux)


def test_without_shapes_the_report_names_the_shapes_mxnet_inference_needed():
    sym = mx.sym.LeakyReLU(mx.sym.Flatten(padded_net()), act_type="prelu", name="prelu")
    args, aux = random_params(sym, {"data": SHAPE})
    trt_sym = sym.optimize_for("TensorRT", args, aux, ctx=mx.cpu())
    report = mxtrt_backend.last_report()
    assert [r.node for r in report.refused] == ["prelu"]
    assert len(report.hints) == 2 and "shape_dict={'data': (...)}" in report.hints[0]
    assert "gave up before partitioning (pad: " in report.hints[1]
    check_numerics(sym, trt_sym, args, aux)
    trt_sym = sym.optimize_for("TensorRT", args, aux, ctx=mx.cpu(), shape_dict={"data": SHAPE})
    report = mxtrt_backend.last_report()
    assert report.converted_nodes == report.compute_nodes and report.hints == []
    check_numerics(sym, trt_sym, args, aux)


def test_report_says_which_shapes_would_convert_more():
    slope = mx.sym.var("slope", shape=(5,))
    sym = mx.sym.relu(mx.sym.LeakyReLU(mx.sym.relu(mx.sym.var("data")), slope, act_type="prelu"))
    trt_sym = sym.optimize_for("TensorRT", {}, {}, ctx=mx.cpu(), min_subgraph_size="1")
    report = mxtrt_backend.last_report()
    assert [r.op for r in report.refused] == ["LeakyReLU"]
    assert len(report.hints) == 1 and "1 x LeakyReLU" in report.hints[0]
    assert "'data': (...)" in report.hints[0] and "'slope'" not in report.hints[0]
    # Given the shape (no parameter values needed), the hook infers and the prelu converts.
    trt_sym = sym.optimize_for("TensorRT", {}, {}, ctx=mx.cpu(), shape_dict={"data": (3, 5)})
    report = mxtrt_backend.last_report()
    assert report.converted_nodes == report.compute_nodes == 3 and report.hints == []
    assert [op for op in op_names(trt_sym) if op != "null"] == ["_TensorRT"]
    # Known, but 4-D: refused for its rank, and no shape would change that.
    sym.optimize_for("TensorRT", {}, {}, ctx=mx.cpu(), shape_dict={"data": (2, 5, 3, 3)},
                     min_subgraph_size="1")
    report = mxtrt_backend.last_report()
    assert [r.op for r in report.refused] == ["LeakyReLU"] and report.hints == []


def test_dtypes_are_known_without_parameter_values():
    """MXNet infers before partitioning only when values are given; the hook infers anyway, so
    an integer output is seen (and refused by a float-only op) rather than found at bind."""
    data = mx.sym.var("data")
    sym = mx.sym.sqrt(mx.sym.Cast(data, dtype="int32") + 1)
    sym.optimize_for("TensorRT", {}, {}, ctx=mx.cpu(), min_subgraph_size="1")
    assert [(r.op, r.reason) for r in mxtrt_backend.last_report().refused] == [
        ("sqrt", "output dtype int32 is not supported (supported: float32, float16)")]


def test_channel_shuffle_between_convolutions_is_one_subgraph():
    x = conv_block(mx.sym.var("data"), "a")
    x = mx.sym.Reshape(x, shape=(0, -4, 2, -1, -2))
    x = mx.sym.SwapAxis(x, dim1=1, dim2=2)
    sym = conv_block(mx.sym.Reshape(x, shape=(0, -3, -2)), "b")
    trt_sym, args, aux = partition(sym)
    assert [op for op in op_names(trt_sym) if op != "null"] == ["_TensorRT"]
    check_numerics(sym, trt_sym, args, aux)
