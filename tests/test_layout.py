"""Arrays a `_TensorRT` op bakes that are shared with a block that runs on its own.

MXNet's MKLDNN kernels leave such a block's weights in an MKLDNN layout, and MXNet 1.9 hands an
extension op a fresh reordered copy of every such input at every call. The executor and Gluon
hooks put them back in the default layout first, so the op reads the arrays themselves. Every
path is checked against unfused MXNet, also after the weights change.
"""
from __future__ import annotations

import ctypes
import json

import mxnet as mx
import numpy as np
import pytest
from mxnet import gluon

from helpers import forward, rel_err
from mxtrt_backend import layout, op

DATA = (2, 3, 8, 8)


def small_net(x: mx.nd.NDArray) -> gluon.nn.HybridSequential:
    """A hybridized block that has run once (plain MXNet: its MKLDNN kernels ran)."""
    net = gluon.nn.HybridSequential(prefix="n_")
    with net.name_scope():
        net.add(gluon.nn.Conv2D(8, 3, padding=1), gluon.nn.BatchNorm(),
                gluon.nn.Activation("relu"), gluon.nn.Conv2D(8, 3), gluon.nn.Dense(5))
    net.initialize(mx.init.Xavier())
    net.hybridize()
    net(x).wait_to_read()
    for name, p in net.collect_params().items():  # BatchNorm statistics that matter
        if name.endswith(("running_mean", "running_var", "gamma", "beta")):
            low = 0.5 if name.endswith(("running_var", "gamma")) else -0.5
            p.set_data(mx.nd.random.uniform(low, low + 1.0, p.shape))
    net(x).wait_to_read()
    return net


def address(array: mx.nd.NDArray) -> int:
    """The array's own buffer (MXNDArrayGetData: in the default layout)."""
    out = ctypes.c_void_p()
    mx.base._LIB.MXNDArrayGetData(array.handle, ctypes.byref(out))
    return int(out.value or 0)


@pytest.fixture
def op_inputs(monkeypatch):
    """The input addresses each `_TensorRT` forward receives."""
    seen: list[list[int]] = []
    run = op.run_state

    def recording(state, inputs, outputs, stream):
        seen.append([t.ptr for t in inputs])
        return run(state, inputs, outputs, stream)

    monkeypatch.setattr(op, "run_state", recording)
    return seen


def block_values(net: gluon.HybridBlock, sym: mx.sym.Symbol) -> tuple[dict, dict]:
    """The block's own arrays (not copies), as the seed's flow hands them to optimize_for."""
    params = {k: v.data() for k, v in net.collect_params().items()}
    return ({k: v for k, v in params.items() if k in sym.list_arguments()},
            {k: v for k, v in params.items() if k in sym.list_auxiliary_states()})


def reference(sym: mx.sym.Symbol, args: dict, aux: dict, x: mx.nd.NDArray) -> np.ndarray:
    return forward(sym, {k: v.copy() for k, v in args.items()},
                   {k: v.copy() for k, v in aux.items()}, {"data": x.asnumpy()})[0]


def test_baked_names_are_the_parameters_only_subgraphs_read():
    data, shared = mx.sym.var("data"), mx.sym.var("w")
    x = mx.sym.Convolution(data, weight=shared, num_filter=3, kernel=(1, 1), no_bias=True,
                           name="c0")
    x = mx.sym.Activation(x, act_type="relu", name="r0")
    x = mx.sym.Pooling(x, kernel=(2, 2), stride=(2, 2), pool_type="max", name="p0")
    x = mx.sym.Convolution(x, num_filter=3, kernel=(1, 1), name="c1")
    x = mx.sym.Activation(x, act_type="relu", name="r1")
    # `w` is read by a converted convolution and by `sum`, which stays in MXNet.
    out = mx.sym.broadcast_add(mx.sym.sum(x), mx.sym.sum(shared, name="wsum"), name="total")
    part = out.optimize_for("TensorRT", exclude_ops="Pooling,sum,broadcast_add")
    nodes = json.loads(part.tojson())["nodes"]
    assert layout.baked_names(nodes) == {"c1_weight", "c1_bias"}


def test_executor_sharing_a_running_blocks_arrays_reads_them_in_place(op_inputs):
    x = mx.nd.array(np.random.RandomState(0).uniform(-1, 1, DATA))
    net = small_net(x)
    sym = net._cached_graph[1]
    args, aux = block_values(net, sym)
    part = sym.optimize_for("TensorRT", args, aux, ctx=mx.cpu())
    ex = part.bind(mx.cpu(), dict(args, data=x), aux_states=aux, grad_req="null")
    names = part.list_inputs()
    arrays = dict(args, **aux)
    for _ in range(2):
        net(x).wait_to_read()  # the block's MKLDNN kernels reorder its weights again
        ex.forward(is_train=False)
        out = ex.outputs[0].asnumpy()
        assert rel_err(out, reference(sym, args, aux, x)) < 1e-4
    # Each subgraph parameter arrived as the array itself, not as MXNet's reordered copy.
    mine = {n: address(a) for n, a in arrays.items()}
    assert op_inputs, "no _TensorRT forward ran"
    for received in op_inputs:
        for name, ptr in zip(names, received):
            if name in mine:
                assert ptr == mine[name], name


def test_weights_changed_after_a_forward_take_effect_on_shared_arrays():
    x = mx.nd.array(np.random.RandomState(1).uniform(-1, 1, DATA))
    net = small_net(x)
    sym = net._cached_graph[1]
    args, aux = block_values(net, sym)
    ex = sym.optimize_for("TensorRT", args, aux, ctx=mx.cpu()).bind(
        mx.cpu(), dict(args, data=x), aux_states=aux, grad_req="null")
    ex.forward(is_train=False)
    ex.outputs[0].wait_to_read()
    rng = np.random.RandomState(2)
    weight = "n_conv0_weight"
    net.collect_params()[weight].set_data(mx.nd.array(rng.uniform(-1, 1, args[weight].shape)))
    net(x).wait_to_read()
    ex.forward(is_train=False)
    assert rel_err(ex.outputs[0].asnumpy(), reference(sym, args, aux, x)) < 1e-4
    changed = {k: mx.nd.array(rng.uniform(-1, 1, v.shape)) for k, v in args.items()}
    ex.copy_params_from(changed)  # writes into the block's own arrays
    net(x).wait_to_read()
    ex.forward(is_train=False)
    assert rel_err(ex.outputs[0].asnumpy(), reference(sym, changed, aux, x)) < 1e-4


def test_simple_bind_with_the_blocks_arrays_as_shared_buffer(op_inputs):
    x = mx.nd.array(np.random.RandomState(3).uniform(-1, 1, DATA))
    net = small_net(x)
    sym = net._cached_graph[1]
    args, aux = block_values(net, sym)
    all_params = dict(args, **aux)
    part = sym.optimize_for("TensorRT", args, aux, ctx=mx.cpu())
    ex = part.simple_bind(mx.cpu(), data=DATA, grad_req="null", shared_buffer=all_params)
    ex.arg_dict["data"][:] = x
    net(x).wait_to_read()
    ex.forward(is_train=False)
    assert rel_err(ex.outputs[0].asnumpy(), reference(sym, args, aux, x)) < 1e-4
    # simple_bind takes the arguments from shared_buffer (and allocates its own aux states).
    mine = {n: address(a) for n, a in args.items()}
    received = dict(zip(part.list_inputs(), op_inputs[-1]))
    assert {n: received[n] for n in mine} == mine


def test_gluon_backend_sharing_parameters_with_a_running_block(op_inputs):
    x = mx.nd.array(np.random.RandomState(4).uniform(-1, 1, DATA))
    net = small_net(x)
    sym = net._cached_graph[1]
    trt = gluon.SymbolBlock(sym, mx.sym.var("data"), params=net.collect_params())
    trt.hybridize(static_alloc=True, static_shape=True, backend="TensorRT")
    args, aux = block_values(net, sym)
    for _ in range(2):
        net(x).wait_to_read()
        assert rel_err(trt(x).asnumpy(), reference(sym, args, aux, x)) < 1e-4
    mine = {address(a) for a in dict(args, **aux).values()}
    assert sum(ptr in mine for ptr in op_inputs[-1]) == len(args) + len(aux)
    weight = net.collect_params()["n_dense0_weight"]
    weight.set_data(weight.data() * 2)
    net(x).wait_to_read()
    assert rel_err(trt(x).asnumpy(), reference(sym, args, aux, x)) < 1e-4
