"""Gluon model-zoo nets with random weights (no downloads) through optimize_for('TensorRT')."""
from __future__ import annotations

import mxnet as mx
import numpy as np
import pytest
from mxnet.gluon.model_zoo import vision

import mxtrt_backend
from conftest import forward, random_params, rel_err

NETS = ["resnet18_v1", "mobilenet1.0", "vgg11_bn", "squeezenet1.0", "densenet121", "inceptionv3"]


def zoo_symbol(name: str) -> tuple[mx.sym.Symbol, tuple[int, ...]]:
    shape = (1, 3, 299, 299) if name == "inceptionv3" else (1, 3, 224, 224)
    net = vision.get_model(name, pretrained=False)
    net.initialize()
    net.hybridize()
    net(mx.nd.zeros(shape))
    return net._cached_graph[1], shape


@pytest.mark.parametrize("name", NETS)
def test_zoo_net_is_converted_and_matches_mxnet(name):
    sym, shape = zoo_symbol(name)
    args, aux = random_params(sym, {"data": shape})
    trt = sym.optimize_for("TensorRT", args, aux, ctx=mx.cpu())
    report = mxtrt_backend.last_report()
    assert report.converted_nodes / report.compute_nodes >= 0.5, report.refused
    x = np.random.RandomState(1).uniform(-1, 1, shape).astype("f")
    assert rel_err(forward(trt, args, aux, {"data": x})[0], forward(sym, args, aux, {"data": x})[0]) < 1e-4
