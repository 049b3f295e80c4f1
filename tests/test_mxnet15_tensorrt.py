"""MXNet 1.5's own TensorRT tests (tests/python/tensorrt/ of v1.5.x), ported to run on this machine.

What changed, everywhere: ``mx.gpu()`` is ``CTX`` (``mx.cpu()``: no GPU here, the backend runs
ONNX Runtime engines on CPU contexts, which compute in float32 whatever the precision, so the
fp16 runs meet the fp32 tolerances too); ``pretrained=True`` nets (MXNet's and gluoncv's
model zoos) have random weights instead of downloaded ones (``helpers.pretrained_standin``),
the same at every call; downloads (MNIST, the cat picture, CIFAR-10) are
scikit-learn's digits or synthetic data; the plain-MXNet side runs unfused
(``MXNET_SUBGRAPH_BACKEND=NONE``: MKLDNN fusion is not ground truth). Every call to the 1.5 API
(``get_backend_symbol``, ``mx.contrib.tensorrt.*``, ``simple_bind``, ``copy_params_from``,
``forward``) is as the original wrote it; each other change says why where it is made.
"""
from __future__ import annotations

import json

import mxnet as mx
import numpy as np
import pytest
from mxnet.test_utils import assert_almost_equal

from helpers import (CIFAR_MODELS, TENSORRT_SWITCHES, cifar_experiment, digits_as_mnist,
                     gluoncv_model_zoo, seeded_zoo_model, train_lenet_digits, unset_for_test)
from mxtrt_backend import demo

CTX = mx.cpu()


class gluoncv:  # noqa: N801  the originals call gluoncv.model_zoo.get_model(...)
    model_zoo = gluoncv_model_zoo


class vision:  # noqa: N801  stands in for mxnet.gluon.model_zoo.vision (pretrained downloads)
    @staticmethod
    def resnet18_v2(pretrained=False):
        return seeded_zoo_model("resnet18_v2")


@pytest.fixture(autouse=True)
def mxnet_reference(monkeypatch, tmp_path):
    """The switches start unset, the plain-MXNet side runs unfused, files the tests write
    (net.export) go to a temporary folder."""
    unset_for_test(monkeypatch, *TENSORRT_SWITCHES)
    monkeypatch.setenv("MXNET_SUBGRAPH_BACKEND", "NONE")
    monkeypatch.chdir(tmp_path)


def trt_node_count(sym) -> int:
    """Added by the port: how many `_TensorRT` nodes a symbol has (the originals did not check
    that get_backend_symbol partitioned anything)."""
    return sum(n["op"] == "_TensorRT" for n in json.loads(sym.tojson())["nodes"])


# --- test_ops.py -------------------------------------------------------------------------------


def check_elementwise_random(op='sum', shape=(1, 3, 224, 224)):
    """
    Check elementwise operators with vanilla/TensorRT executors with uniform random tensors
    """
    a = mx.sym.Variable('a')
    b = mx.sym.Variable('b')
    if op == 'sum':
        sym = a + b
    elif op == 'sub':
        sym = a - b
    elif op == 'mul':
        sym = a * b

    a_data = mx.ndarray.random.uniform(shape=shape, ctx=CTX)
    b_data = mx.ndarray.random.uniform(shape=shape, ctx=CTX)

    executor = sym.simple_bind(ctx=CTX, a=shape, b=shape,
                               grad_req='null', force_rebind=True)
    y = executor.forward(is_train=False, a=a_data, b=b_data)
    trt_sym = sym.get_backend_symbol('TensorRT')
    assert trt_node_count(trt_sym) == 1  # added
    original_precision_value = mx.contrib.tensorrt.get_use_fp16()
    try:
        mx.contrib.tensorrt.set_use_fp16(True)
        executor = trt_sym.simple_bind(ctx=CTX, a=shape, b=shape,
                                       grad_req='null', force_rebind=True)
        y_trt = executor.forward(is_train=False, a=a_data, b=b_data)
        mx.contrib.tensorrt.set_use_fp16(False)
        executor = trt_sym.simple_bind(ctx=CTX, a=shape, b=shape,
                                       grad_req='null', force_rebind=True)
        y_trt_fp32 = executor.forward(is_train=False, a=a_data, b=b_data)
        assert_almost_equal(y[0].asnumpy(), y_trt[0].asnumpy(), 1e-1, 1e-2)
        assert_almost_equal(y[0].asnumpy(), y_trt_fp32[0].asnumpy(), 1e-4, 1e-4)
    finally:
        mx.contrib.tensorrt.set_use_fp16(original_precision_value)


@pytest.fixture
def single_op_subgraphs(monkeypatch):
    # A graph of one element-wise op: MXNet 1.5's TensorRT took it; ours (as 1.9's) wants two
    # operators per subgraph by default, so the port lowers the minimum to 1.
    monkeypatch.setenv("MXNET_TENSORRT_MIN_SUBGRAPH_SIZE", "1")


def check_elementwise(shapes, tries):
    # Was test_elementwise with shapes and tries inline; CI runs fewer of them (CPU time).
    for op in ['sum', 'sub', 'mul']:
        for shape in shapes:
            for itry in range(tries):
                check_elementwise_random(op, shape)


def test_elementwise(single_op_subgraphs):
    check_elementwise([(20, 25), (3, 4, 20), (1, 3, 20, 25)], tries=1)


@pytest.mark.slow
def test_elementwise_all(single_op_subgraphs):
    check_elementwise([(20, 25), (3, 4, 20), (1, 3, 20, 25), (10, 10, 100, 100)], tries=10)


# --- test_resnet18.py --------------------------------------------------------------------------

batch_shape = (1, 3, 224, 224)
model_file_name = 'resnet18_v2_trt_test'


def get_image(seed=0):
    # Was get_image(url): the cat picture, downloaded, resized to 224x224, in [0, 1]. A random
    # image of that layout.
    img = np.random.RandomState(seed).randint(0, 256, (224, 224, 3)).astype(np.uint8)
    img = mx.nd.array(img, dtype=np.uint8)
    img = img.transpose((2, 0, 1))  # Channel first
    img = img.expand_dims(axis=0)  # Batchify
    img = mx.nd.cast(img, dtype=np.float32)
    return img / 255.0


def test_tensorrt_resnet18_feature_vect():
    print("downloading sample input")
    input_data = get_image()
    gluon_resnet18 = vision.resnet18_v2(pretrained=True)
    gluon_resnet18.hybridize()
    gluon_resnet18.forward(input_data)
    gluon_resnet18.export(model_file_name)
    sym, arg_params, aux_params = mx.model.load_checkpoint(model_file_name, 0)

    executor = sym.simple_bind(ctx=CTX, data=batch_shape,
                               grad_req='null', force_rebind=True)
    executor.copy_params_from(arg_params, aux_params)
    y = executor.forward(is_train=False, data=input_data)
    trt_sym = sym.get_backend_symbol('TensorRT')
    assert trt_node_count(trt_sym) == 1  # added: all of resnet18_v2 is one subgraph
    mx.contrib.tensorrt.init_tensorrt_params(trt_sym, arg_params, aux_params)
    assert not arg_params and not aux_params  # added: every weight went to the TensorRT node
    original_precision_value = mx.contrib.tensorrt.get_use_fp16()
    try:
        mx.contrib.tensorrt.set_use_fp16(True)
        executor = trt_sym.simple_bind(ctx=CTX, data=batch_shape,
                                       grad_req='null', force_rebind=True)
        executor.copy_params_from(arg_params, aux_params)
        y_trt = executor.forward(is_train=False, data=input_data)
        mx.contrib.tensorrt.set_use_fp16(False)
        executor = trt_sym.simple_bind(ctx=CTX, data=batch_shape,
                                       grad_req='null', force_rebind=True)
        executor.copy_params_from(arg_params, aux_params)
        y_trt_fp32 = executor.forward(is_train=False, data=input_data)
        no_trt_output = y[0].asnumpy()[0]
        trt_output = y_trt[0].asnumpy()[0]
        trt_fp32_output = y_trt_fp32[0].asnumpy()[0]
        assert_almost_equal(no_trt_output, trt_output, 1e-1, 1e-2)
        assert_almost_equal(no_trt_output, trt_fp32_output, 1e-4, 1e-4)
    finally:
        mx.contrib.tensorrt.set_use_fp16(original_precision_value)


# --- test_tensorrt_batchnorm.py ----------------------------------------------------------------


def get_params_batchnorm():  # was get_params (test_tensorrt_deconv.py has its own)
    arg_params = {}
    aux_params = {}
    arg_params["trt_bn_test_conv_weight"] = mx.nd.ones((1, 1, 3, 3))
    arg_params["trt_bn_test_bn_gamma"] = mx.nd.zeros((1,))
    arg_params["trt_bn_test_bn_beta"] = mx.nd.zeros((1,))
    aux_params["trt_bn_test_bn_moving_mean"] = mx.nd.ones(1)
    aux_params["trt_bn_test_bn_moving_var"] = mx.nd.ones(1)
    return arg_params, aux_params


def get_symbol_batchnorm():  # was get_symbol
    data = mx.sym.Variable("data")
    conv = mx.sym.Convolution(data=data, kernel=(3,3), no_bias=True, num_filter=1, num_group=1,
                              name="trt_bn_test_conv")
    bn = mx.sym.BatchNorm(data=conv, fix_gamma=True, use_global_stats=False, name="trt_bn_test_bn")
    return bn


def test_batch_norm_runs_correctly_with_fix_gamma():
    arg_params, aux_params = get_params_batchnorm()
    arg_params_trt, aux_params_trt = get_params_batchnorm()

    sym = get_symbol_batchnorm()
    sym_trt = get_symbol_batchnorm().get_backend_symbol("TensorRT")
    assert trt_node_count(sym_trt) == 1  # added

    mx.contrib.tensorrt.init_tensorrt_params(sym_trt, arg_params_trt, aux_params_trt)

    executor = sym.simple_bind(ctx=CTX, data=(1, 1, 3, 3), grad_req='null', force_rebind=True)
    executor.copy_params_from(arg_params, aux_params)

    executor_trt = sym_trt.simple_bind(ctx=CTX, data=(1, 1, 3, 3), grad_req='null',
                                  force_rebind=True)
    executor_trt.copy_params_from(arg_params_trt, aux_params_trt)

    input_data = mx.nd.random.uniform(low=0, high=1, shape=(1, 1, 3, 3))

    y = executor.forward(is_train=False, data=input_data)
    y_trt = executor_trt.forward(is_train=False, data=input_data)

    print(y[0].asnumpy())
    print(y_trt[0].asnumpy())
    assert_almost_equal(y[0].asnumpy(), y_trt[0].asnumpy(), 1e-4, 1e-4)
    assert y[0].asnumpy().item() != 0  # added: the weights reached both executors


# --- test_tensorrt_deconv.py -------------------------------------------------------------------


def get_params_deconv():  # was get_params
    arg_params = {}
    aux_params = {}
    arg_params["trt_bn_test_conv_weight"] = mx.nd.ones((1, 1, 3, 3))
    arg_params["trt_bn_test_deconv_weight"] = mx.nd.ones((1, 1, 3, 3))
    return arg_params, aux_params


def get_symbol_deconv():  # was get_symbol
    data = mx.sym.Variable("data")
    conv = mx.sym.Convolution(data=data, kernel=(3,3), no_bias=True, num_filter=1, num_group=1,
                              name="trt_bn_test_conv")
    deconv = mx.sym.Deconvolution(data=conv, kernel=(3, 3), no_bias=True, num_filter=1,
                                  num_group=1, name="trt_bn_test_deconv")
    return deconv


def test_deconvolution_produce_same_output_as_tensorrt():
    arg_params, aux_params = get_params_deconv()
    arg_params_trt, aux_params_trt = get_params_deconv()

    sym = get_symbol_deconv()
    sym_trt = get_symbol_deconv().get_backend_symbol("TensorRT")
    assert trt_node_count(sym_trt) == 1  # added

    mx.contrib.tensorrt.init_tensorrt_params(sym_trt, arg_params_trt, aux_params_trt)

    executor = sym.simple_bind(ctx=CTX, data=(1, 1, 3, 3), grad_req='null', force_rebind=True)
    executor.copy_params_from(arg_params, aux_params)

    executor_trt = sym_trt.simple_bind(ctx=CTX, data=(1, 1, 3, 3), grad_req='null',
                                  force_rebind=True)
    executor_trt.copy_params_from(arg_params_trt, aux_params_trt)

    input_data = mx.nd.random.uniform(low=0, high=1, shape=(1, 1, 3, 3))

    y = executor.forward(is_train=False, data=input_data)
    y_trt = executor_trt.forward(is_train=False, data=input_data)

    print(y[0].asnumpy())
    print(y_trt[0].asnumpy())
    assert_almost_equal(y[0].asnumpy(), y_trt[0].asnumpy(), 1e-4, 1e-4)
    assert np.abs(y[0].asnumpy()).max() > 0  # added: the weights reached both executors


# --- lenet5_train.py / test_tensorrt_lenet5.py -------------------------------------------------


def lenet5_fp16():
    """1.5's lenet5_train.py ran LeNet in float16 (a Cast after the data, a Cast back before the
    loss). The same two Casts around the bundled demo's LeNet (MNIST's 28x28 LeNet-5 does not fit
    the digits' 8x8 images), so that the digits-trained weights fit it, cast to float16."""
    fp32 = demo.lenet()
    fc1 = fp32.get_internals()["fc1_output"]
    data = mx.sym.Cast(mx.sym.Variable('data'), 'float16')
    body = fc1(data=data)
    return mx.sym.SoftmaxOutput(data=mx.sym.Cast(body, 'float32'), name='softmax')


def run_inference(sym, arg_params, aux_params, mnist, all_test_labels, batch_size, use_tensorrt):
    """Run inference with either MXNet or TensorRT"""

    data_size = (batch_size,) + mnist['test_data'].shape[1:]
    type_dict = {'data': 'float32', 'softmax_label': 'float32'}
    if use_tensorrt:
        _sym = sym.get_backend_symbol('TensorRT')
        mx.contrib.tensorrt.init_tensorrt_params(_sym, arg_params, aux_params)
    else:
        _sym = sym
    for k, v in arg_params.items():
        type_dict[k] = v.dtype
    for k, v in aux_params.items():
        type_dict[k] = v.dtype
    executor = _sym.simple_bind(ctx=CTX,
                                type_dict=type_dict,
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


def test_tensorrt_inference(tmp_path):
    """Run LeNet-5 inference comparison between MXNet and TensorRT."""
    mnist = digits_as_mnist()  # was mx.test_utils.get_mnist(), which downloads
    batch_size = 128
    all_test_labels = np.array(mnist['test_label'])  # was get_iters(mnist, batch_size)[3]

    # Was mx.model.load_checkpoint('lenet5', 10) of the float16 LeNet lenet5_train.py trained.
    # MXNet's CPU build has no float16 matrix product, so the MXNet side runs the same weights
    # in float32 (demo LeNet); the TensorRT side runs 1.5's float16 network.
    prefix, epoch, _ = train_lenet_digits(tmp_path)
    sym, arg_params, aux_params = mx.model.load_checkpoint(prefix, epoch)
    sym16 = lenet5_fp16()
    arg16 = {k: v.astype('float16') for k, v in arg_params.items()}
    aux16 = {k: v.astype('float16') for k, v in aux_params.items()}

    print("LeNet-5 test")
    print("Running inference in MXNet")
    mx_pct = run_inference(sym, arg_params, aux_params, mnist, all_test_labels,
                           batch_size=batch_size, use_tensorrt=False)

    print("Running inference in MXNet-TensorRT")
    trt_pct = run_inference(sym16, arg16, aux16, mnist, all_test_labels,
                            batch_size=batch_size, use_tensorrt=True)
    assert not arg16 and not aux16  # added: every weight went to the TensorRT node

    print("MXNet accuracy: %f" % mx_pct)
    print("MXNet-TensorRT accuracy: %f" % trt_pct)

    assert mx_pct > 90  # added: the model is a real one
    absolute_accuracy_diff = abs(mx_pct - trt_pct)
    epsilon = 1.01e-2
    assert absolute_accuracy_diff < epsilon, \
        """Absolute diff. between MXNet & TensorRT accuracy (%f) exceeds threshold (%f):
           MXNet = %f, TensorRT = %f""" % (absolute_accuracy_diff, epsilon, mx_pct, trt_pct)


# --- test_cvnets.py ----------------------------------------------------------------------------


def get_classif_model(model_name, use_tensorrt, ctx=CTX, batch_size=128):
    mx.contrib.tensorrt.set_use_fp16(False)
    h, w = 32, 32
    net = gluoncv.model_zoo.get_model(model_name, pretrained=True)
    net.hybridize()
    net.forward(mx.nd.zeros((batch_size, 3, h, w)))
    net.export(model_name)
    _sym, arg_params, aux_params = mx.model.load_checkpoint(model_name, 0)
    if use_tensorrt:
        sym = _sym.get_backend_symbol('TensorRT')
        mx.contrib.tensorrt.init_tensorrt_params(sym, arg_params, aux_params)
    else:
        sym = _sym
    executor = sym.simple_bind(ctx=ctx, data=(batch_size, 3, h, w),
                               softmax_label=(batch_size,),
                               grad_req='null', force_rebind=True)
    executor.copy_params_from(arg_params, aux_params)
    return executor


def check_tensorrt_on_cifar_resnets(models):
    # Was test_tensorrt_on_cifar_resnets(batch_size=32, tolerance=0.1, num_workers=1) with the
    # model list inline; CI runs one model, the slow test all ten. The experiment loop,
    # cifar10_infer and run_experiment_for are 1.3's: helpers.cifar_experiment.
    original_use_fp16 = mx.contrib.tensorrt.get_use_fp16()
    try:
        cifar_experiment(get_classif_model, models, batch_size=32, tolerance=0.1, num_workers=1)
    finally:
        mx.contrib.tensorrt.set_use_fp16(original_use_fp16)


def test_tensorrt_on_cifar_resnets():
    check_tensorrt_on_cifar_resnets(CIFAR_MODELS[:1])


@pytest.mark.slow
def test_tensorrt_on_cifar_resnets_all_models():
    check_tensorrt_on_cifar_resnets(CIFAR_MODELS)
