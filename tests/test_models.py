"""Whole models through optimize_for('TensorRT'): the Gluon model-zoo nets with random weights (no
downloads), an MLP and a transformer encoder block written with the symbol API. The bar: at least
95% of compute nodes inside `_TensorRT` nodes, in one subgraph, with MXNet's outputs."""
from __future__ import annotations

from dataclasses import dataclass

import mxnet as mx
import numpy as np
import pytest

import mxtrt_backend
from helpers import forward, random_params, rel_err, zoo_symbol

NETS = ["resnet18_v1", "resnet50_v2", "mobilenet1.0", "mobilenetv2_1.0", "squeezenet1.0",
        "densenet121", "vgg11_bn", "alexnet", "inceptionv3"]


def mlp() -> tuple[mx.sym.Symbol, dict[str, tuple[int, ...]]]:
    x = mx.sym.var("data")
    for i, width in enumerate((64, 32)):
        x = mx.sym.Activation(mx.sym.FullyConnected(x, num_hidden=width, name=f"fc{i}"), act_type="relu")
    x = mx.sym.Dropout(x, p=0.2)
    return mx.sym.softmax(mx.sym.FullyConnected(x, num_hidden=10, name="out")), {"data": (8, 3, 10)}


def transformer_block(seq: int = 6, units: int = 16, heads: int = 4):
    """Post-norm encoder layer: multi-head self-attention and a GELU feed-forward, each with a
    residual add and LayerNorm; (batch, seq, units) in and out."""
    x = mx.sym.var("data")
    depth = units // heads

    def split_heads(t, name):
        t = mx.sym.FullyConnected(t, num_hidden=units, flatten=False, name=name)
        t = mx.sym.transpose(mx.sym.Reshape(t, shape=(0, 0, heads, depth)), axes=(0, 2, 1, 3))
        return mx.sym.Reshape(t, shape=(-1, seq, depth))  # (batch * heads, seq, depth)

    q, k, v = (split_heads(x, n) for n in ("query", "key", "value"))
    scores = mx.sym.batch_dot(q, k, transpose_b=True) / float(np.sqrt(depth))
    context = mx.sym.batch_dot(mx.sym.softmax(scores, axis=-1), v)
    context = mx.sym.transpose(mx.sym.Reshape(context, shape=(-1, heads, seq, depth)), axes=(0, 2, 1, 3))
    attended = mx.sym.FullyConnected(mx.sym.Reshape(context, shape=(0, 0, -1)), num_hidden=units,
                                     flatten=False, name="proj")
    x = mx.sym.LayerNorm(mx.sym.elemwise_add(x, attended), name="ln1")
    hidden = mx.sym.LeakyReLU(mx.sym.FullyConnected(x, num_hidden=2 * units, flatten=False, name="ffn1"),
                              act_type="gelu")
    out = mx.sym.dot(hidden, mx.sym.var("ffn2_weight", shape=(2 * units, units)))
    out = mx.sym.broadcast_add(out, mx.sym.var("ffn2_bias", shape=(units,)))
    return mx.sym.LayerNorm(x + out, name="ln2"), {"data": (2, seq, units)}


@dataclass
class Partitioned:
    sym: mx.sym.Symbol
    trt: mx.sym.Symbol
    args: dict
    aux: dict
    shapes: dict
    report: mxtrt_backend.PartitionReport


def _partition(sym, shapes) -> Partitioned:
    args, aux = random_params(sym, shapes)
    trt = sym.optimize_for("TensorRT", args, aux, ctx=mx.cpu())
    return Partitioned(sym, trt, args, aux, shapes, mxtrt_backend.last_report())


def _zoo(name):
    sym, shape = zoo_symbol(name)
    return sym, {"data": shape}


MODELS = {**{name: (lambda name=name: _zoo(name)) for name in NETS},
          "mlp": mlp, "transformer_block": transformer_block}


@pytest.fixture(scope="module", params=list(MODELS))
def partitioned(request) -> Partitioned:
    """One partitioning per model, shared by the tests below."""
    return _partition(*MODELS[request.param]())


def test_model_is_converted_in_one_subgraph(partitioned):
    report = partitioned.report
    assert report.converted_nodes / report.compute_nodes >= 0.95, report.refused
    assert sum(s.accepted for s in report.subgraphs) == 1, report.subgraphs


def test_model_matches_mxnet(partitioned):
    p = partitioned
    rng = np.random.RandomState(1)
    data = {name: rng.uniform(-1, 1, shape).astype("f") for name, shape in p.shapes.items()}
    for out, ref in zip(forward(p.trt, p.args, p.aux, data), forward(p.sym, p.args, p.aux, data)):
        assert out.shape == ref.shape
        assert rel_err(out, ref) < 1e-4
