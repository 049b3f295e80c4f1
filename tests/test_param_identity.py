"""A weight change must reach the engine even when MXNet hands the weights over as copies.

MXNet's MKLDNN convolutions (its default CPU path) rewrite the weight arrays they read into
MKLDNN's blocked layout, in place, and copies into such arrays keep that layout. MXNet gives an
extension op a fresh default-layout copy of each such array at every forward
(`CustomFComputeDispatcher`, src/c_api/c_api.cc: `Reorder2Default()`): version 0, at an address
the allocator hands out again and again. (address, version) then says nothing about the values.

The README's own flow reaches this: run the executor with plain MXNet and then with the backend
on the same parameter arrays (`shared_buffer=all_params`), then `copy_params_from` new weights.
"""
from __future__ import annotations

import mxnet as mx
import numpy as np

from helpers import rel_err, unfused

FORWARDS = 40


def _net() -> mx.sym.Symbol:
    # 16 and 32 channels: MKLDNN picks a blocked weight layout (for 3 or 8 it keeps the plain one).
    x = mx.sym.Convolution(mx.sym.var("data"), num_filter=16, kernel=(3, 3), no_bias=True, name="c1")
    return mx.sym.Convolution(mx.sym.relu(x), num_filter=32, kernel=(3, 3), no_bias=True, name="c2")


def _unfused(sym, weights, x):
    with unfused():
        ex = sym.bind(mx.cpu(), {"data": x, **{k: mx.nd.array(v) for k, v in weights.items()}},
                      grad_req="null")
    return ex.forward(is_train=False)[0].asnumpy()


def test_weights_copied_into_mkldnn_layout_arrays_reach_the_engine():
    sym = _net()
    rng = np.random.RandomState(0)
    shapes = {"c1_weight": (16, 16, 3, 3), "c2_weight": (32, 16, 3, 3)}
    sets = [{k: rng.normal(size=s).astype("f") for k, s in shapes.items()} for _ in range(2)]
    x = mx.nd.array(rng.uniform(-1, 1, (1, 16, 12, 12)))
    refs = [_unfused(sym, w, x) for w in sets]

    params = {k: mx.nd.array(v) for k, v in sets[0].items()}
    for name, array in params.items():  # plain MXNet (MKLDNN) inference on the same arrays
        mx.nd.Convolution(mx.nd.zeros((1, 16, 12, 12)), array, num_filter=array.shape[0],
                          kernel=(3, 3), no_bias=True).asnumpy()

    ex = sym.optimize_for("TensorRT", ctx=mx.cpu()).bind(mx.cpu(), {"data": x, **params},
                                                          grad_req="null")
    wrong = []
    for k in range(FORWARDS):
        ex.copy_params_from({n: mx.nd.array(v) for n, v in sets[k % 2].items()})
        err = rel_err(ex.forward(is_train=False)[0].asnumpy(), refs[k % 2])
        if not err < 1e-4:
            wrong.append((k, err))
    assert not wrong, f"{len(wrong)} of {FORWARDS} forwards ran earlier weights: {wrong[:3]}"
