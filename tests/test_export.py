"""Subgraph -> ONNX: structure first (all inputs), then parameters baked in as initializers."""
from __future__ import annotations

import json

import mxnet as mx
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from mxtrt_backend import export


def subgraph_of(sym: mx.sym.Symbol) -> export.Subgraph:
    return export.Subgraph.from_json(sym.tojson())


def net() -> mx.sym.Symbol:
    x = mx.sym.Convolution(mx.sym.var("data"), num_filter=2, kernel=(1, 1), name="conv")
    x = mx.sym.BatchNorm(x, fix_gamma=True, name="bn")
    return mx.sym.Group([mx.sym.Activation(x, act_type="tanh", name="zz"),
                         mx.sym.Activation(x, act_type="relu", name="aa")])


SHAPES = {"data": (1, 3, 4, 4), "conv_weight": (2, 3, 1, 1), "conv_bias": (2,), "bn_gamma": (2,),
          "bn_beta": (2,), "bn_moving_mean": (2,), "bn_moving_var": (2,)}


def values(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.RandomState(seed)
    return {n: rng.uniform(0.5, 1.5, s).astype("f") for n, s in SHAPES.items()}


def exported(sym: mx.sym.Symbol) -> export.ExportedGraph:
    sub = subgraph_of(sym)
    return export.export_structure(sub, [SHAPES[n] for n in sub.input_names],
                                   [np.dtype("f")] * len(sub.input_names))


def test_structure_keeps_every_input_as_graph_input():
    graph = exported(net())
    model = onnx.load_from_string(graph.onnx_bytes)
    onnx.checker.check_model(model)
    assert {i.name for i in model.graph.input} == set(SHAPES)
    assert model.opset_import[0].version == export.OPSET


def test_outputs_follow_mxnet_order_not_alphabetical():
    graph = exported(net())
    assert graph.output_names == ("zz", "aa")
    assert [o.name for o in onnx.load_from_string(graph.onnx_bytes).graph.output] == ["zz", "aa"]


def test_baked_params_become_initializers_and_compute_like_mxnet():
    sym, vals = net(), values()
    params = {n: v for n, v in vals.items() if n != "data"}
    baked = export.bake_params(exported(sym), params)
    model = onnx.load_from_string(baked.onnx_bytes)
    assert [i.name for i in model.graph.input] == ["data"]
    assert set(params) <= {i.name for i in model.graph.initializer}
    got = ort.InferenceSession(baked.onnx_bytes).run(list(baked.output_names), {"data": vals["data"]})
    ex = sym.bind(mx.cpu(), {n: mx.nd.array(v) for n, v in vals.items() if "moving" not in n},
                  aux_states={n: mx.nd.array(v) for n, v in vals.items() if "moving" in n})
    ex.forward(is_train=False)
    for out, ref in zip(got, ex.outputs):
        np.testing.assert_allclose(out, ref.asnumpy(), rtol=1e-5, atol=1e-6)


def test_fix_gamma_ignores_gamma_values_like_mxnet():
    """mx2onnx drops fix_gamma; gamma far from 1 would change the answer if it were used."""
    vals = values()
    vals["bn_gamma"] = np.full(2, 7.0, "f")
    baked = export.bake_params(exported(net()), {n: v for n, v in vals.items() if n != "data"})
    got = ort.InferenceSession(baked.onnx_bytes).run(["aa"], {"data": vals["data"]})[0]
    x = np.einsum("oc,nchw->nohw", vals["conv_weight"][:, :, 0, 0], vals["data"]) + vals["conv_bias"][:, None, None]
    mean, var = vals["bn_moving_mean"][:, None, None], vals["bn_moving_var"][:, None, None]
    ref = np.maximum((x - mean) / np.sqrt(var + 1e-3) + vals["bn_beta"][:, None, None], 0)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


def test_equal_computations_hash_equal_and_bookkeeping_is_ignored():
    graph = json.loads(net().tojson())
    graph["nodes"][0].setdefault("attrs", {})["isArg"] = "True"
    assert export.Subgraph.from_json(json.dumps(graph)).digest == subgraph_of(net()).digest
    other = mx.sym.Activation(mx.sym.var("data"), act_type="sigmoid")
    assert subgraph_of(other).digest != subgraph_of(net()).digest


def test_unexportable_subgraph_raises_export_error():
    sym = mx.sym.Pooling(mx.sym.var("data"), kernel=(2, 2), pool_type="sum")
    sub = subgraph_of(sym)
    with pytest.raises(export.ExportError, match="mx2onnx cannot export this subgraph.*pool_type==.sum"):
        export.export_structure(sub, [(1, 3, 4, 4)], [np.dtype("f")])


def test_trial_export_needs_no_shapes_and_says_why_a_subgraph_cannot_be_exported(monkeypatch):
    monkeypatch.setattr(export, "_tried", {})
    sub = subgraph_of(net())
    export.export_trial(sub, [np.dtype("f")] * len(sub.input_names))  # no shapes: no error
    assert list(export._tried.values()) == [""]
    bad = subgraph_of(mx.sym.Pooling(mx.sym.var("data"), kernel=(2, 2), pool_type="sum"))
    for _ in range(2):  # the second answer comes from the cache
        with pytest.raises(export.ExportError, match="sum"):
            export.export_trial(bad, [np.dtype("f")])
    assert len(export._tried) == 2
