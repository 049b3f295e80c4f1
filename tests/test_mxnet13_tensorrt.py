"""MXNet 1.3's own TensorRT tests (tests/python/tensorrt/ of v1.3.x), ported to run on this machine.

What changed, everywhere: ``mx.gpu(0)`` is ``CTX`` (``mx.cpu()``: no GPU here, the backend runs
ONNX Runtime engines on CPU contexts); MNIST (downloaded) is scikit-learn's bundled digits, and
the LeNet that lenet5_train.py trained is the bundled demo's LeNet trained on them; gluoncv's
CIFAR nets are built with random weights instead of downloading the pretrained ones
(``helpers.gluoncv_model_zoo``); CIFAR-10 (downloaded) is a synthetic dataset of its layout; the
plain-MXNet side runs unfused (``MXNET_SUBGRAPH_BACKEND=NONE``: MKLDNN fusion is not ground
truth). Every call to the 1.3 API (``mx.contrib.tensorrt.*``, ``simple_bind``, ``forward``) is as
the original wrote it; each other change says why where it is made.
"""
from __future__ import annotations

import json

import mxnet as mx
import numpy as np
import pytest

import mxtrt_backend
from helpers import (CIFAR_MODELS, TENSORRT_SWITCHES, cifar_experiment, digits_as_mnist,
                     gluoncv_model_zoo, rel_err, train_lenet_digits, unset_for_test)
from mxtrt_backend.engine.cache import ENGINES


class gluoncv:  # noqa: N801  the originals call gluoncv.model_zoo.get_model(...)
    model_zoo = gluoncv_model_zoo


CTX = mx.cpu()


@pytest.fixture(autouse=True)
def mxnet_reference(monkeypatch, tmp_path):
    """The flag starts unset, the plain-MXNet side runs unfused, files the tests write (net.export)
    go to a temporary folder."""
    unset_for_test(monkeypatch, *TENSORRT_SWITCHES)
    monkeypatch.setenv("MXNET_SUBGRAPH_BACKEND", "NONE")
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def lenet(tmp_path_factory):
    return train_lenet_digits(tmp_path_factory.mktemp("lenet"))


# --- common.py ---------------------------------------------------------------------------------


def check_tensorrt_installation():
    # Was: find_library('nvinfer'). On CPU contexts the engines are ONNX Runtime's.
    assert mxtrt_backend.BACKEND == "TensorRT"
    import onnxruntime  # noqa: F401


def merge_dicts(*dict_args):
    """Merge arg_params and aux_params to populate shared_buffer"""
    result = {}
    for dictionary in dict_args:
        result.update(dictionary)
    return result


# --- lenet5_common.py --------------------------------------------------------------------------


def get_iters(mnist, batch_size):
    """Get MNIST iterators."""
    train_iter = mx.io.NDArrayIter(mnist['train_data'],
                                   mnist['train_label'],
                                   batch_size,
                                   shuffle=True)
    val_iter = mx.io.NDArrayIter(mnist['test_data'], mnist['test_label'], batch_size)
    test_iter = mx.io.NDArrayIter(mnist['test_data'], mnist['test_label'], batch_size)
    all_test_labels = np.array(mnist['test_label'])
    return train_iter, val_iter, test_iter, all_test_labels


# --- test_tensorrt_lenet5.py -------------------------------------------------------------------


def run_inference(sym, arg_params, aux_params, mnist, all_test_labels, batch_size, use_tensorrt):
    """Run inference with either MXNet or TensorRT"""
    mx.contrib.tensorrt.set_use_tensorrt(use_tensorrt)

    data_size = (batch_size,) + mnist['test_data'].shape[1:]
    if use_tensorrt:
        all_params = merge_dicts(arg_params, aux_params)
        executor = mx.contrib.tensorrt.tensorrt_bind(sym, ctx=CTX, all_params=all_params,
                                                     data=data_size,
                                                     softmax_label=(batch_size,),
                                                     grad_req='null',
                                                     force_rebind=True)
    else:
        executor = sym.simple_bind(ctx=CTX,
                                   data=data_size,
                                   softmax_label=(batch_size,),
                                   grad_req='null',
                                   force_rebind=True)
        executor.copy_params_from(arg_params, aux_params)

    # Get this value from all_test_labels
    # Also get classes from the dataset
    num_ex = len(mnist['test_data'])  # was 10000: MNIST's test set; the digits' has 450
    all_preds = np.zeros([num_ex, 10])
    test_iter = mx.io.NDArrayIter(mnist['test_data'], mnist['test_label'], batch_size)

    example_ct = 0

    for idx, dbatch in enumerate(test_iter):
        executor.arg_dict["data"][:] = dbatch.data[0]
        executor.forward(is_train=False)
        offset = idx*batch_size
        extent = batch_size if num_ex - offset > batch_size else num_ex - offset
        all_preds[offset:offset+extent, :] = executor.outputs[0].asnumpy()[:extent]
        example_ct += extent

    all_preds = np.argmax(all_preds, axis=1)
    matches = (all_preds[:example_ct] == all_test_labels[:example_ct]).sum()

    percentage = 100.0 * matches / example_ct

    return percentage


def test_tensorrt_inference(lenet):
    """Run LeNet-5 inference comparison between MXNet and TensorRT."""
    original_try_value = mx.contrib.tensorrt.get_use_tensorrt()
    try:
        check_tensorrt_installation()
        mnist = digits_as_mnist()  # was mx.test_utils.get_mnist(), which downloads
        batch_size = 128
        # Was lenet5_train.py's checkpoint 'lenet5', epoch 10, trained on MNIST.
        model_name, num_epochs, _ = lenet

        _, _, _, all_test_labels = get_iters(mnist, batch_size)

        # Load serialized MXNet model (model-symbol.json + model-epoch.params)
        sym, arg_params, aux_params = mx.model.load_checkpoint(model_name, num_epochs)

        print("LeNet-5 test")
        print("Running inference in MXNet")
        mx_pct = run_inference(sym, arg_params, aux_params, mnist, all_test_labels,
                               batch_size=batch_size, use_tensorrt=False)

        print("Running inference in MXNet-TensorRT")
        ENGINES.lookups.clear()
        trt_pct = run_inference(sym, arg_params, aux_params, mnist, all_test_labels,
                                batch_size=batch_size, use_tensorrt=True)
        assert ENGINES.lookups["built"] >= 1  # added: the TensorRT run did run engines

        print("MXNet accuracy: %f" % mx_pct)
        print("MXNet-TensorRT accuracy: %f" % trt_pct)

        assert mx_pct > 90  # added: the model is a real one
        assert abs(mx_pct - trt_pct) < 1e-2, \
            """Diff. between MXNet & TensorRT accuracy too high:
               MXNet = %f, TensorRT = %f""" % (mx_pct, trt_pct)
    finally:
        mx.contrib.tensorrt.set_use_tensorrt(original_try_value)
    assert mx.contrib.tensorrt.get_use_tensorrt() is False


# --- test_cycle.py -----------------------------------------------------------------------------


def detect_cycle_from(sym, visited, stack):
    visited.add(sym.handle.value)
    stack.add(sym.handle.value)
    for s in sym.get_children():
        if s.handle.value not in visited:
            if detect_cycle_from(sym, visited, stack):
                return True
        elif s.handle.value in stack:
            return True
        stack.remove(sym.handle.value)
    return False


def has_no_cycle(sym):
    visited = set()
    stack = set()
    all_nodes = sym.get_internals()
    for s in all_nodes:
        if s.handle.value in visited:
            if detect_cycle_from(s, visited, stack):
                return False
    return True


def is_acyclic(sym) -> bool:
    """Added: the original check above never visits a node (``visited`` starts empty), so it
    passes on any graph. This one orders the graph's nodes topologically (Kahn's algorithm)."""
    nodes = json.loads(sym.tojson())["nodes"]
    waiting = [len({src for src, *_ in n["inputs"]}) for n in nodes]
    readers: dict[int, set[int]] = {}
    for i, n in enumerate(nodes):
        for src, *_ in n["inputs"]:
            readers.setdefault(src, set()).add(i)
    ready = [i for i, count in enumerate(waiting) if count == 0]
    done = 0
    while ready:
        done += 1
        for reader in readers.get(ready.pop(), ()):
            waiting[reader] -= 1
            if waiting[reader] == 0:
                ready.append(reader)
    return done == len(nodes)


def test_simple_cycle(monkeypatch):
    # The cycle this guards against came from 1.3's TensorRT graph pass: the flag is on (the
    # original ran in the TensorRT CI job).
    monkeypatch.setenv("MXNET_USE_TENSORRT", "1")
    inp = mx.sym.Variable('input', shape=[1,10])
    A = mx.sym.FullyConnected(data=inp, num_hidden=10, no_bias=False, name='A')
    B = mx.sym.FullyConnected(data=A, num_hidden=10, no_bias=False, name='B')
    D = mx.sym.sin(data=A, name='D')
    C = mx.sym.elemwise_add(lhs=B, rhs=D, name='C')
    arg_params = {
                'I_weight': mx.nd.zeros([10,10]),
                'I_bias': mx.nd.zeros([10]),
                'A_weight': mx.nd.zeros([10,10]),
                'A_bias': mx.nd.zeros([10]),
                'B_weight': mx.nd.zeros([10,10]),
                'B_bias': mx.nd.zeros([10]),
               }

    executor = C.simple_bind(ctx=CTX, data=(1,10), softmax_label=(1,),
                           shared_buffer=arg_params, grad_req='null', force_rebind=True)
    optimized_graph = mx.contrib.tensorrt.get_optimized_symbol(executor)
    assert has_no_cycle(optimized_graph), "The graph optimized by TRT contains a cycle"
    # Added: the optimized graph is TensorRT's, it is acyclic, and it runs.
    assert any(n["op"] == "_TensorRT" for n in json.loads(optimized_graph.tojson())["nodes"])
    assert is_acyclic(optimized_graph)
    executor.forward(is_train=False, input=mx.nd.ones((1, 10)))
    assert np.array_equal(executor.outputs[0].asnumpy(), np.zeros((1, 10), np.float32))


def test_cycle_around_an_op_left_to_mxnet(monkeypatch):
    """Added: the same graph with D an op the backend leaves to MXNet (erf), the case where one
    subgraph holding A, B and C would read its own output through D. The partition must split."""
    monkeypatch.setenv("MXNET_USE_TENSORRT", "1")
    inp = mx.sym.Variable('input', shape=[1, 10])
    A = mx.sym.FullyConnected(data=inp, num_hidden=10, name='A')
    B = mx.sym.FullyConnected(data=A, num_hidden=10, name='B')
    D = mx.sym.erf(data=A, name='D')
    C = mx.sym.elemwise_add(lhs=B, rhs=D, name='C')
    rng = np.random.RandomState(0)
    params = {n: mx.nd.array(rng.uniform(-1, 1, s))
              for n, s in zip(C.list_arguments(), C.infer_shape()[0]) if n != "input"}
    x = mx.nd.array(rng.uniform(-1, 1, (1, 10)))
    executor = C.simple_bind(ctx=CTX, shared_buffer=params, grad_req='null', force_rebind=True)
    optimized_graph = mx.contrib.tensorrt.get_optimized_symbol(executor)
    ops = [n["op"] for n in json.loads(optimized_graph.tojson())["nodes"]]
    assert "_TensorRT" in ops and "erf" in ops
    assert is_acyclic(optimized_graph)
    executor.forward(is_train=False, input=x)
    monkeypatch.setenv("MXNET_USE_TENSORRT", "0")
    reference = C.simple_bind(ctx=CTX, shared_buffer=params, grad_req='null', force_rebind=True)
    reference.forward(is_train=False, input=x)
    assert rel_err(executor.outputs[0].asnumpy(), reference.outputs[0].asnumpy()) < 1e-5


# --- test_training_warning.py ------------------------------------------------------------------


def assertRaises(expected_exception, func, *args, **kwargs):  # noqa: N802
    # Was tests/python/unittest/common.py's (MXNet's test helpers are not installed).
    with pytest.raises(expected_exception):
        func(*args, **kwargs)


def test_training_without_trt():
    run_resnet(is_train=True, use_tensorrt=False)


def test_inference_without_trt():
    run_resnet(is_train=False, use_tensorrt=False)


def test_training_with_trt():
    assertRaises(RuntimeError, run_resnet, is_train=True, use_tensorrt=True)
    # Added: it is 1.3's error, with its advice.
    with pytest.raises(mx.base.MXNetError, match="TensorRT is an inference only library.*"
                       "set_use_tensorrt\\(False\\)"):
        run_resnet(is_train=True, use_tensorrt=True)


def test_inference_with_trt():
    run_resnet(is_train=False, use_tensorrt=True)


def run_resnet(is_train, use_tensorrt):
    original_trt_value = mx.contrib.tensorrt.get_use_tensorrt()
    try:
        mx.contrib.tensorrt.set_use_tensorrt(use_tensorrt)
        ctx = CTX
        batch_size = 1
        h = 32
        w = 32
        model_name = 'cifar_resnet20_v1'
        resnet = gluoncv.model_zoo.get_model(model_name, pretrained=True)
        data = mx.sym.var('data')
        out = resnet(data)
        softmax = mx.sym.SoftmaxOutput(out, name='softmax')
        if is_train:
            grad_req = 'write'
        else:
            grad_req = 'null'
        if use_tensorrt:
            all_params = dict([(k, v.data()) for k, v in resnet.collect_params().items()])
            mx.contrib.tensorrt.tensorrt_bind(softmax, ctx=ctx, all_params=all_params,
                                              data=(batch_size, 3, h, w), softmax_label=(batch_size,),
                                              force_rebind=True, grad_req=grad_req)
        else:
            softmax.simple_bind(ctx=ctx, data=(batch_size, 3, h, w), softmax_label=(batch_size,),
                                force_rebind=True, grad_req=grad_req)
    finally:
        mx.contrib.tensorrt.set_use_tensorrt(original_trt_value)


# --- test_cvnets.py ----------------------------------------------------------------------------


def get_classif_model(model_name, use_tensorrt, ctx=CTX, batch_size=128):
    mx.contrib.tensorrt.set_use_tensorrt(use_tensorrt)
    h, w = 32, 32
    net = gluoncv.model_zoo.get_model(model_name, pretrained=True)
    data = mx.sym.var('data')

    if use_tensorrt:
        out = net(data)
        softmax = mx.sym.SoftmaxOutput(out, name='softmax')
        all_params = dict([(k, v.data()) for k, v in net.collect_params().items()])
        executor = mx.contrib.tensorrt.tensorrt_bind(softmax, ctx=ctx, all_params=all_params,
                                                     data=(batch_size,3, h, w),
                                                     softmax_label=(batch_size,), grad_req='null',
                                                     force_rebind=True)
    else:
        # Convert gluon model to Symbolic
        net.hybridize()
        net.forward(mx.ndarray.zeros((batch_size, 3, h, w)))
        net.export(model_name)
        symbol, arg_params, aux_params = mx.model.load_checkpoint(model_name, 0)
        executor = symbol.simple_bind(ctx=ctx, data=(batch_size, 3, h, w),
                                      softmax_label=(batch_size,))
        executor.copy_params_from(arg_params, aux_params)
    return executor


def check_tensorrt_on_cifar_resnets(models):
    # Was test_tensorrt_on_cifar_resnets(batch_size=32, tolerance=0.1, num_workers=1) with the
    # model list inline; the list is an argument so that CI runs one model and the slow test
    # all ten. The experiment loop, cifar10_infer and run_experiment_for are the same in 1.3 and
    # 1.5: they are helpers.cifar_experiment, ... (get_classif_model passed in).
    original_try_value = mx.contrib.tensorrt.get_use_tensorrt()
    try:
        cifar_experiment(get_classif_model, models, batch_size=32, tolerance=0.1, num_workers=1)
    finally:
        mx.contrib.tensorrt.set_use_tensorrt(original_try_value)


def test_tensorrt_on_cifar_resnets():
    check_tensorrt_on_cifar_resnets(CIFAR_MODELS[:1])


@pytest.mark.slow
def test_tensorrt_on_cifar_resnets_all_models():
    check_tensorrt_on_cifar_resnets(CIFAR_MODELS)
