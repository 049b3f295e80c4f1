"""The _TensorRT op on CPU: each supported op alone against plain MXNet, and the op's life cycle."""
from __future__ import annotations

import logging

import mxnet as mx
import numpy as np
import pytest

from helpers import forward, op_names, random_params, rel_err

D = mx.sym.var("data")
IMG = (2, 4, 9, 9)

# (id, symbol, data shape): every op of the support registry, several attribute variants each.
CASES = [
    ("conv", mx.sym.Convolution(D, num_filter=6, kernel=(3, 3)), IMG),
    ("conv_stride_pad_dilate", mx.sym.Convolution(D, num_filter=6, kernel=(3, 3), stride=(2, 2), pad=(1, 1), dilate=(2, 2)), IMG),
    ("conv_groups_no_bias", mx.sym.Convolution(D, num_filter=8, kernel=(1, 1), num_group=4, no_bias=True), IMG),
    ("conv_1d", mx.sym.Convolution(D, num_filter=3, kernel=(3,)), (2, 4, 9)),
    ("batchnorm", mx.sym.BatchNorm(D, fix_gamma=False, eps=1e-5), IMG),
    ("batchnorm_fix_gamma", mx.sym.BatchNorm(D, fix_gamma=True), IMG),
    ("relu", mx.sym.Activation(D, act_type="relu"), IMG),
    ("sigmoid", mx.sym.Activation(D, act_type="sigmoid"), IMG),
    ("tanh", mx.sym.Activation(D, act_type="tanh"), IMG),
    ("softrelu", mx.sym.Activation(D, act_type="softrelu"), IMG),
    ("softsign", mx.sym.Activation(D, act_type="softsign"), IMG),
    ("maxpool", mx.sym.Pooling(D, kernel=(3, 3), stride=(2, 2), pool_type="max"), IMG),
    ("maxpool_full", mx.sym.Pooling(D, kernel=(3, 3), stride=(2, 2), pool_type="max", pooling_convention="full"), (2, 4, 10, 10)),
    ("avgpool_pad", mx.sym.Pooling(D, kernel=(3, 3), stride=(1, 1), pad=(1, 1), pool_type="avg"), IMG),
    ("avgpool_exclude_pad", mx.sym.Pooling(D, kernel=(3, 3), pad=(1, 1), pool_type="avg", count_include_pad=False), IMG),
    ("global_avg", mx.sym.Pooling(D, kernel=(1, 1), global_pool=True, pool_type="avg"), IMG),
    ("global_max", mx.sym.Pooling(D, kernel=(1, 1), global_pool=True, pool_type="max"), IMG),
    ("fc", mx.sym.FullyConnected(D, num_hidden=5), IMG),
    ("fc_no_flatten", mx.sym.FullyConnected(D, num_hidden=5, flatten=False), (2, 3, 7)),
    ("fc_no_bias", mx.sym.FullyConnected(D, num_hidden=5, no_bias=True), (3, 11)),
    ("flatten", mx.sym.Flatten(D), IMG),
    ("add", mx.sym.elemwise_add(D, mx.sym.Activation(D, act_type="tanh")), IMG),
    ("concat", mx.sym.Concat(D, mx.sym.Activation(D, act_type="relu"), dim=1), IMG),
    ("concat_last_axis", mx.sym.Concat(D, D, dim=3), IMG),
    ("dropout", mx.sym.Dropout(D, p=0.5), IMG),
    ("clip", mx.sym.clip(D, a_min=-0.3, a_max=0.4), IMG),
]


@pytest.mark.parametrize("sym, shape", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_op_alone_matches_mxnet(sym, shape):
    args, aux = random_params(sym, {"data": shape})
    trt = sym.optimize_for("TensorRT", args, aux, ctx=mx.cpu(), min_subgraph_size="1")
    assert "_TensorRT" in op_names(trt)
    x = np.random.RandomState(7).uniform(-1, 1, shape).astype("f")
    for out, ref in zip(forward(trt, args, aux, {"data": x}), forward(sym, args, aux, {"data": x})):
        assert out.shape == ref.shape
        assert rel_err(out, ref) < 1e-5


def small_net():
    x = mx.sym.Convolution(D, num_filter=4, kernel=(3, 3), name="c")
    return mx.sym.Activation(x, act_type="relu", name="r")


def bound(sym, args, shape=(2, 3, 6, 6)):
    trt = sym.optimize_for("TensorRT", args, {}, ctx=mx.cpu())
    return trt.bind(mx.cpu(), dict(args, data=mx.nd.zeros(shape)), grad_req="null")


def test_new_data_each_forward_and_one_engine_build(caplog):
    sym = small_net()
    args, _ = random_params(sym, {"data": (2, 3, 6, 6)})
    ex = bound(sym, args)
    rng = np.random.RandomState(0)
    with caplog.at_level(logging.INFO, logger="mxtrt"):
        for _ in range(3):
            x = rng.uniform(-1, 1, (2, 3, 6, 6)).astype("f")
            ex.arg_dict["data"][:] = x
            ex.forward(is_train=False)
            ref = forward(sym, args, {}, {"data": x})[0]
            assert rel_err(ex.outputs[0].asnumpy(), ref) < 1e-5
    built = [r for r in caplog.records if r.name == "mxtrt" and "runtime onnxruntime" in r.message]
    assert len(built) == 1 and "2 nodes" in built[0].message and "cache miss" in built[0].message


def test_changed_weights_after_first_forward_rebuild_the_engine():
    sym = small_net()
    args, _ = random_params(sym, {"data": (2, 3, 6, 6)})
    ex = bound(sym, args)
    x = np.random.RandomState(1).uniform(-1, 1, (2, 3, 6, 6)).astype("f")
    ex.arg_dict["data"][:] = x
    ex.forward(is_train=False)
    ex.outputs[0].wait_to_read()
    new_args, _ = random_params(sym, {"data": (2, 3, 6, 6)}, seed=5)
    ex.copy_params_from(new_args)
    ex.forward(is_train=False)
    ref = forward(sym, new_args, {}, {"data": x})[0]
    assert rel_err(ex.outputs[0].asnumpy(), ref) < 1e-5


def test_error_in_the_python_callback_reaches_mxnet_and_the_process_stays_usable(monkeypatch):
    from mxtrt_backend import op

    sym = small_net()
    args, _ = random_params(sym, {"data": (2, 3, 6, 6)})
    ex = bound(sym, args)

    def broken(*_):
        raise RuntimeError("engine exploded")

    monkeypatch.setattr(op, "run_state", broken)
    ex.forward(is_train=False)
    with pytest.raises(mx.MXNetError, match="RuntimeError: engine exploded .python traceback: .*in broken"):
        ex.outputs[0].asnumpy()
    monkeypatch.undo()
    ex.forward(is_train=False)
    assert np.isfinite(ex.outputs[0].asnumpy()).all()


def bn_block(prefix: str) -> mx.gluon.HybridBlock:
    net = mx.gluon.nn.HybridSequential(prefix=prefix)
    with net.name_scope():
        net.add(mx.gluon.nn.Conv2D(4, 3, padding=1, in_channels=3),
                mx.gluon.nn.BatchNorm(in_channels=4), mx.gluon.nn.Activation("relu"))
    net.initialize()
    return net


def test_gluon_static_forwards_reuse_the_engine_and_follow_changed_statistics():
    """CachedOp counts each forward as a write of the BatchNorm statistics (one version each):
    that must not rebuild the engine, while a real change of the statistics must."""
    from mxtrt_backend.engine.cache import ENGINES

    x = mx.nd.array(np.random.RandomState(0).uniform(-1, 1, (2, 3, 6, 6)))
    plain, trt = bn_block("p_"), bn_block("p_")
    trt.collect_params().load_dict({k: v.data() for k, v in plain.collect_params().items()})
    trt.hybridize(static_alloc=True, static_shape=True, backend="TensorRT")
    for _ in range(5):
        out = trt(x).asnumpy()
    assert sum(ENGINES.lookups.values()) == 1
    assert rel_err(out, plain(x).asnumpy()) < 1e-5
    mean = np.random.RandomState(3).uniform(-1, 1, 4)
    for net in (plain, trt):
        net.collect_params()["p_batchnorm0_running_mean"].set_data(mx.nd.array(mean))
    out = trt(x).asnumpy()
    assert sum(ENGINES.lookups.values()) == 2
    assert rel_err(out, plain(x).asnumpy()) < 1e-5


def test_executor_follows_changed_statistics_after_several_forwards():
    x = mx.sym.BatchNorm(mx.sym.Convolution(D, num_filter=4, kernel=(1, 1), name="c"), name="bn")
    sym = mx.sym.Activation(x, act_type="relu", name="r")
    args, aux = random_params(sym, {"data": (2, 3, 5, 5)})
    ex = sym.optimize_for("TensorRT", args, aux, ctx=mx.cpu()).bind(
        mx.cpu(), dict(args, data=mx.nd.ones((2, 3, 5, 5))), aux_states=aux, grad_req="null")
    for _ in range(3):
        ex.forward(is_train=False)
        ex.outputs[0].wait_to_read()
    _, new_aux = random_params(sym, {"data": (2, 3, 5, 5)}, seed=9)
    ex.copy_params_from(args, new_aux)
    ex.forward(is_train=False)
    ref = forward(sym, args, new_aux, {"data": np.ones((2, 3, 5, 5), "f")})[0]
    assert rel_err(ex.outputs[0].asnumpy(), ref) < 1e-5


def test_gluon_without_static_alloc_hashes_the_weights_once(monkeypatch):
    """Without static_alloc Gluon makes a new op state per forward and bumps the BatchNorm
    statistics' versions: the weights must still be hashed once, not at every forward."""
    from mxtrt_backend.engine.ort import OrtRuntime

    x = mx.nd.array(np.random.RandomState(0).uniform(-1, 1, (2, 3, 6, 6)))
    plain, trt = bn_block("d_"), bn_block("d_")
    trt.collect_params().load_dict({k: v.data() for k, v in plain.collect_params().items()})
    trt.hybridize(backend="TensorRT")
    trt(x).wait_to_read()
    reads = []
    original = OrtRuntime.to_host
    monkeypatch.setattr(OrtRuntime, "to_host", lambda self, ref: reads.append(1) or original(self, ref))
    for _ in range(4):
        out = trt(x).asnumpy()
    assert reads == []
    assert rel_err(out, plain(x).asnumpy()) < 1e-5
