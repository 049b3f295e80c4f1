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
