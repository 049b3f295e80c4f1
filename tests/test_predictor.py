"""The model instance behind `serve` and the Python-backend model: signature, chunk plan, engine
options, and answers equal to unfused MXNet for every batch size the batcher can form."""
from __future__ import annotations

import json

import mxnet as mx
import numpy as np
import pytest

from helpers import DATA, conv_net, forward, random_params, rel_err
from mxtrt_backend import partition
from mxtrt_backend.predictor import (Model, Predictor, ServeError, chunk_sizes, engine_options,
                                     output_names, signature, split, with_engine_options)

SAMPLE = DATA[1:]


@pytest.fixture
def model():
    sym = conv_net()
    args, aux = random_params(sym, {"data": DATA})
    return Model("conv", sym, args, aux, partitioned=False)


def test_chunk_plan_cpu_powers_of_two_gpu_every_size():
    assert chunk_sizes("cpu", 8) == (1, 2, 4, 8)
    assert chunk_sizes("cpu", 12) == (1, 2, 4, 8, 12)
    assert chunk_sizes("cpu", 1) == (1,)
    assert chunk_sizes("gpu", 4) == (1, 2, 3, 4)
    assert split(7, (1, 2, 4, 8)) == [4, 2, 1]
    assert split(23, (1, 2, 4, 8, 12)) == [12, 8, 2, 1]
    for n in range(1, 33):
        assert sum(split(n, chunk_sizes("cpu", 32))) == n


def test_gpu_engines_cover_every_batch_the_server_forms():
    assert engine_options("gpu", 16, {})["batch_range"] == "1,16,16"
    assert engine_options("gpu", 16, {"batch_range": "1,4,32"})["batch_range"] == "1,4,32"
    assert "batch_range" not in engine_options("cpu", 16, {})
    with pytest.raises(ServeError, match="must cover every batch the server forms, 1 to 16"):
        engine_options("gpu", 16, {"batch_range": "2,8,16"})


def test_signature_from_the_symbol_and_clear_errors(model):
    sig = signature(model, {"data": SAMPLE})
    assert [(t.name, t.dtype, t.shape) for t in sig.inputs] == [("data", np.float32, SAMPLE)]
    assert [(t.name, t.shape) for t in sig.outputs] == [("fc_output", (5,))]
    with pytest.raises(ServeError, match="needs its shape per sample"):
        signature(model, {})
    with pytest.raises(ServeError, match="has no input 'x'; its inputs: data"):
        signature(model, {"x": SAMPLE})


def test_partitioned_symbol_keeps_the_source_output_names(model):
    trt = model.sym.optimize_for("TensorRT", model.args, model.aux, ctx=mx.cpu())
    assert trt.list_outputs() != model.sym.list_outputs()
    assert output_names(trt) == model.sym.list_outputs()
    merged = with_engine_options(trt, {"batch_range": "1,8,8"})
    nodes = [n for n in json.loads(merged.tojson())["nodes"] if n["op"] == "_TensorRT"]
    assert nodes and all(json.loads(n["attrs"][partition.ATTR_OPTIONS])["batch_range"] == "1,8,8"
                         for n in nodes)


def test_every_batch_size_equals_unfused_mxnet(model):
    sig = signature(model, {"data": SAMPLE})
    predictor = Predictor(model, sig, mx.cpu(), max_batch=6)
    assert predictor.sizes == (1, 2, 4, 6)
    x = np.random.RandomState(0).uniform(-1, 1, (6, *SAMPLE)).astype(np.float32)
    for batch in range(1, 7):
        out = predictor({"data": x[:batch]})["fc_output"]
        ref = forward(model.sym, model.args, model.aux, {"data": x[:batch]})[0]
        assert out.shape == ref.shape and rel_err(out, ref) < 1e-5, batch
    with pytest.raises(ServeError, match="takes float32"):
        predictor({"data": x.astype(np.float64)})
    with pytest.raises(ServeError, match="from 1 to 6"):
        predictor({"data": np.concatenate([x, x[:1]])})
