"""Paths beside the well-trodden one, each checked against unfused MXNet (issue 10): subgraph
outputs used several times, values given to optimize_for with simple_bind, shared_buffer under
the flag, and training-mode forwards."""
from __future__ import annotations

import os

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, gluon

from helpers import forward, op_names, random_params, rel_err
from mxtrt_backend.activation import TrainingModeError

D = mx.sym.var("data")
SHAPE = (2, 3)


def fc_relu():
    return mx.sym.relu(mx.sym.FullyConnected(D, num_hidden=4, name="fc"), name="r")


# erf has no converter: it stays in MXNet and reads the subgraph's output.
REPEATED_OUTPUTS = {
    "read_by_two_mxnet_nodes": lambda r: mx.sym.Group([mx.sym.erf(r, name="e1"),
                                                       mx.sym.erf(r, name="e2")]),
    "graph_output_and_read_by_mxnet": lambda r: mx.sym.Group([r, mx.sym.erf(r, name="e1")]),
    "graph_lists_it_twice": lambda r: mx.sym.Group([r, r]),
    "three_readers_and_a_graph_output": lambda r: mx.sym.Group(
        [mx.sym.erf(r, name="e1"), r, mx.sym.erf(r, name="e2"), mx.sym.erfinv(r * 0.5, name="e3")]),
}


def _check(outputs, refs):
    assert len(outputs) == len(refs)
    for out, ref in zip(outputs, refs):
        assert out.shape == ref.shape
        assert rel_err(out, ref) < 1e-5


@pytest.mark.parametrize("dedup", [None, "False", "True"])
@pytest.mark.parametrize("case", sorted(REPEATED_OUTPUTS))
def test_subgraph_output_used_several_times_outside(case, dedup):
    sym = REPEATED_OUTPUTS[case](fc_relu())
    args, _ = random_params(sym, {"data": SHAPE})
    x = np.random.RandomState(0).uniform(-1, 1, SHAPE).astype("f")
    refs = forward(sym, args, {}, {"data": x})
    options = {} if dedup is None else {"dedup_subgraph": dedup}
    trt = sym.optimize_for("TensorRT", args, {}, ctx=mx.cpu(), **options)
    assert "_TensorRT" in op_names(trt)
    _check(forward(trt, args, {}, {"data": x}), refs)
    ex = trt.simple_bind(mx.cpu(), data=SHAPE, grad_req="null")
    _check([o.asnumpy() for o in ex.forward(is_train=False, data=mx.nd.array(x))], refs)


@pytest.mark.parametrize("case", sorted(REPEATED_OUTPUTS))
def test_subgraph_output_used_several_times_through_the_flag_and_gluon(case, monkeypatch):
    sym = REPEATED_OUTPUTS[case](fc_relu())
    args, _ = random_params(sym, {"data": SHAPE})
    x = np.random.RandomState(1).uniform(-1, 1, SHAPE).astype("f")
    refs = forward(sym, args, {}, {"data": x})
    monkeypatch.setenv("MXNET_USE_TENSORRT", "1")
    ex = sym.simple_bind(mx.cpu(), data=SHAPE, grad_req="null", shared_buffer=dict(args))
    assert "_TensorRT" in op_names(ex.get_optimized_symbol())
    _check([o.asnumpy() for o in ex.forward(is_train=False, data=mx.nd.array(x))], refs)
    block = gluon.SymbolBlock(sym, [D])
    block.collect_params().load_dict(args)
    block.hybridize()
    _check([o.asnumpy() for o in block(mx.nd.array(x))], refs)


# --- values given to optimize_for, and simple_bind ---------------------------------------------


def conv_bn():
    x = mx.sym.Convolution(D, num_filter=4, kernel=(3, 3), pad=(1, 1), name="c")
    x = mx.sym.BatchNorm(x, fix_gamma=False, name="bn")
    return mx.sym.FullyConnected(mx.sym.relu(x, name="r"), num_hidden=3, name="fc")


IMG = (2, 3, 5, 5)


def test_simple_bind_runs_the_values_given_to_optimize_for():
    """MXNet 1.9's own TensorRT test does exactly this; the executor's arrays start as zeros."""
    sym = conv_bn()
    args, aux = random_params(sym, {"data": IMG})
    x = np.random.RandomState(2).uniform(-1, 1, IMG).astype("f")
    trt = sym.optimize_for("TensorRT", args, aux, ctx=mx.cpu())
    ex = trt.simple_bind(mx.cpu(), data=IMG, grad_req="null")
    out = ex.forward(is_train=False, data=mx.nd.array(x))[0].asnumpy()
    assert rel_err(out, forward(sym, args, aux, {"data": x})[0]) < 1e-5


def test_executor_writes_win_over_the_given_values_before_and_after_the_first_forward():
    sym = conv_bn()
    args, aux = random_params(sym, {"data": IMG})
    new_args, new_aux = random_params(sym, {"data": IMG}, seed=5)
    x = np.random.RandomState(3).uniform(-1, 1, IMG).astype("f")
    trt = sym.optimize_for("TensorRT", args, aux, ctx=mx.cpu())
    # Before the first forward: copy_params_from after bind is what runs.
    ex = trt.simple_bind(mx.cpu(), data=IMG, grad_req="null")
    ex.copy_params_from(new_args, new_aux)
    out = ex.forward(is_train=False, data=mx.nd.array(x))[0].asnumpy()
    assert rel_err(out, forward(sym, new_args, new_aux, {"data": x})[0]) < 1e-5
    # After the first forward, from the given values to new ones and back.
    ex = trt.simple_bind(mx.cpu(), data=IMG, grad_req="null")
    ex.forward(is_train=False, data=mx.nd.array(x))[0].wait_to_read()
    for a, b in ((new_args, new_aux), (args, aux)):
        ex.copy_params_from(a, b)
        out = ex.forward(is_train=False, data=mx.nd.array(x))[0].asnumpy()
        assert rel_err(out, forward(sym, a, b, {"data": x})[0]) < 1e-5
    # One array written through arg_dict.
    ex.arg_dict["fc_bias"][:] = 3.0
    out = ex.forward(is_train=False, data=mx.nd.array(x))[0].asnumpy()
    assert rel_err(out, forward(sym, dict(args, fc_bias=mx.nd.full((3,), 3.0)), aux,
                                {"data": x})[0]) < 1e-5


def test_bind_with_explicit_arrays_runs_those_arrays():
    sym = conv_bn()
    args, aux = random_params(sym, {"data": IMG})
    other_args, other_aux = random_params(sym, {"data": IMG}, seed=8)
    x = np.random.RandomState(4).uniform(-1, 1, IMG).astype("f")
    trt = sym.optimize_for("TensorRT", args, aux, ctx=mx.cpu())
    out = forward(trt, other_args, other_aux, {"data": x})[0]
    assert rel_err(out, forward(sym, other_args, other_aux, {"data": x})[0]) < 1e-5


def test_flag_takes_batchnorm_moments_from_shared_buffer(monkeypatch):
    """MXNet 1.3's TensorRT executor took every weight from shared_buffer; its test_cvnets binds
    that way and never calls copy_params_from."""
    sym = conv_bn()
    args, aux = random_params(sym, {"data": IMG})
    x = np.random.RandomState(5).uniform(-1, 1, IMG).astype("f")
    monkeypatch.setenv("MXNET_USE_TENSORRT", "1")
    ex = sym.simple_bind(mx.cpu(), data=IMG, grad_req="null", shared_buffer=dict(args, **aux),
                         force_rebind=True)
    assert "_TensorRT" in op_names(ex.get_optimized_symbol())
    out = ex.forward(is_train=False, data=mx.nd.array(x))[0].asnumpy()
    assert np.isfinite(out).all()
    assert rel_err(out, forward(sym, args, aux, {"data": x})[0]) < 1e-5
    # Later changes still take effect.
    new_args, new_aux = random_params(sym, {"data": IMG}, seed=6)
    ex.copy_params_from(new_args, new_aux)
    out = ex.forward(is_train=False, data=mx.nd.array(x))[0].asnumpy()
    assert rel_err(out, forward(sym, new_args, new_aux, {"data": x})[0]) < 1e-5


def test_data_given_to_optimize_for_stops_being_baked(caplog):
    """A common mistake: optimize_for('TensorRT', dict(args, data=x)). The first batches build
    engines for their values; then the input is taken for what it is, data."""
    from mxtrt_backend.engine.cache import ENGINES

    sym = conv_bn()
    args, aux = random_params(sym, {"data": IMG})
    rng = np.random.RandomState(6)
    first = mx.nd.array(rng.uniform(-1, 1, IMG))
    trt = sym.optimize_for("TensorRT", dict(args, data=first), aux, ctx=mx.cpu())
    ex = trt.bind(mx.cpu(), dict(args, data=first.copy()), aux_states=aux, grad_req="null")
    for _ in range(10):
        x = rng.uniform(-1, 1, IMG).astype("f")
        ex.arg_dict["data"][:] = x
        out = ex.forward(is_train=False)[0].asnumpy()
        assert rel_err(out, forward(sym, args, aux, {"data": x})[0]) < 1e-5
    assert ENGINES.lookups["built"] <= 3
    assert any("changes at every forward" in r.getMessage() for r in caplog.records)


# --- training mode ---------------------------------------------------------------------------


def test_training_forward_of_a_backend_executor_is_an_error_naming_the_fix():
    sym = conv_bn()
    args, aux = random_params(sym, {"data": IMG})
    ex = sym.optimize_for("TensorRT", args, aux, ctx=mx.cpu()).simple_bind(
        mx.cpu(), data=IMG, grad_req="null")
    with pytest.raises(TrainingModeError, match=r"bn: BatchNorm normalises with the batch's own "
                                                r"statistics.*forward\(is_train=False\)"):
        ex.forward(is_train=True, data=mx.nd.ones(IMG))
    ex.forward(is_train=False, data=mx.nd.ones(IMG))[0].wait_to_read()


def test_training_forward_without_training_only_ops_matches_mxnet():
    sym = mx.sym.FullyConnected(mx.sym.relu(mx.sym.Convolution(D, num_filter=4, kernel=(3, 3),
                                                               name="c")), num_hidden=3, name="fc")
    args, _ = random_params(sym, {"data": IMG})
    x = np.random.RandomState(7).uniform(-1, 1, IMG).astype("f")
    ex = sym.optimize_for("TensorRT", args, {}, ctx=mx.cpu()).bind(
        mx.cpu(), dict(args, data=mx.nd.array(x)), grad_req="null")
    out = ex.forward(is_train=True)[0].asnumpy()
    assert rel_err(out, forward(sym, args, {}, {"data": x})[0]) < 1e-5


def dropout_bn_block():
    net = gluon.nn.HybridSequential(prefix="t_")
    with net.name_scope():
        net.add(gluon.nn.Conv2D(4, 3, in_channels=3), gluon.nn.BatchNorm(in_channels=4),
                gluon.nn.Activation("relu"), gluon.nn.Dropout(0.5), gluon.nn.Dense(3, in_units=36))
    net.initialize(mx.init.Xavier())
    return net


@pytest.mark.parametrize("use_flag", [True, False], ids=["flag", "hybridize_backend"])
def test_gluon_training_computes_what_mxnet_computes(use_flag, monkeypatch):
    """Training-mode calls of a block hybridized with the backend run MXNet's own graph: same
    losses, gradients and updated weights as plain MXNet; inference then follows the new
    weights and statistics."""
    x = mx.nd.array(np.random.RandomState(8).uniform(-1, 1, (4, 3, 5, 5)))
    label = mx.nd.array([0, 1, 2, 1])
    plain, trt = dropout_bn_block(), dropout_bn_block()
    trt.collect_params().load_dict({k: v.data() for k, v in plain.collect_params().items()})
    plain.hybridize()  # Gluon's CachedOp applies no MKLDNN fusion
    if use_flag:
        monkeypatch.setenv("MXNET_USE_TENSORRT", "1")
        trt.hybridize()
    else:
        trt.hybridize(backend="TensorRT")
    assert rel_err(trt(x).asnumpy(), plain(x).asnumpy()) < 1e-5
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    trainers = [gluon.Trainer(n.collect_params(), "sgd", {"learning_rate": 0.1}) for n in (plain, trt)]
    for step in range(3):
        losses = []
        for net, trainer in zip((plain, trt), trainers):
            mx.random.seed(step)  # the same dropout masks on both sides
            with autograd.record():
                loss = loss_fn(net(x), label)
            loss.backward()
            trainer.step(x.shape[0])
            losses.append(loss.asnumpy())
        np.testing.assert_allclose(losses[1], losses[0], rtol=1e-5, atol=1e-6)
    for name, param in plain.collect_params().items():
        np.testing.assert_allclose(trt.collect_params()[name].data().asnumpy(),
                                   param.data().asnumpy(), rtol=1e-5, atol=1e-6)
    assert rel_err(trt(x).asnumpy(), plain(x).asnumpy()) < 1e-5
    assert "_TensorRT" in op_names(trt._cached_graph[1])
    assert "MXNET_SUBGRAPH_BACKEND" not in os.environ


def test_mxnet_nodes_of_a_partitioned_graph_follow_weights_changed_after_a_forward():
    """The nodes left to MXNet run without its MKLDNN fusion, whose fused convolution keeps the
    weights of its first forward after copy_params_from."""
    sym = mx.sym.Convolution(D, num_filter=4, kernel=(3, 3), pad=(1, 1), name="alone")
    sym = mx.sym.erf(sym, name="cut")
    args, _ = random_params(sym, {"data": IMG})
    new_args, _ = random_params(sym, {"data": IMG}, seed=11)
    x = np.random.RandomState(12).uniform(-1, 1, IMG).astype("f")
    trt = sym.optimize_for("TensorRT", args, {}, ctx=mx.cpu(), min_subgraph_size="2")
    assert "_TensorRT" not in op_names(trt)
    ex = trt.simple_bind(mx.cpu(), data=IMG, grad_req="null")
    ex.forward(is_train=False, data=mx.nd.array(x))[0].wait_to_read()
    ex.copy_params_from(new_args)
    out = ex.forward(is_train=False, data=mx.nd.array(x))[0].asnumpy()
    assert rel_err(out, forward(sym, new_args, {}, {"data": x})[0]) < 1e-5
