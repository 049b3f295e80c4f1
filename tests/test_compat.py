"""MXNet's own TensorRT API on this backend: ``mx.contrib.tensorrt`` (1.3 and 1.5),
``get_backend_symbol('TensorRT')``, their switches and semantics, and a 1.3-era script and a
saved partitioned symbol, each run in a fresh process."""
from __future__ import annotations

import importlib
import inspect
import json
import logging
import os
import subprocess
import sys

import mxnet as mx
import numpy as np
import pytest

import mxtrt_backend
from helpers import (TENSORRT_SWITCHES, conv_net, digits_as_mnist, forward, random_params,
                     rel_err, reporting_runtime, train_lenet_digits, trt_nodes, unfused,
                     unset_for_test)
from mxtrt_backend import OptionError, compat
from mxtrt_backend.config import resolve

DATA = (2, 3, 8, 8)

# The union of MXNet 1.3's and 1.5's mx.contrib.tensorrt, with their signatures.
API = {
    "set_use_tensorrt": "(status)",
    "get_use_tensorrt": "()",
    "tensorrt_bind": "(symbol, ctx, all_params, type_dict=None, stype_dict=None, group2ctx=None, "
                     "**kwargs)",
    "get_optimized_symbol": "(executor)",
    "init_tensorrt_params": "(sym, arg_params, aux_params)",
    "set_use_fp16": "(status)",
    "get_use_fp16": "()",
}


@pytest.fixture(autouse=True)
def clean_switches(monkeypatch):
    unset_for_test(monkeypatch, *TENSORRT_SWITCHES)


@pytest.fixture(scope="module")
def lenet(tmp_path_factory):
    return train_lenet_digits(tmp_path_factory.mktemp("lenet"))


def ops(sym) -> list[str]:
    return [n["op"] for n in json.loads(sym.tojson())["nodes"]]


# --- the module -----------------------------------------------------------------------------------


def test_the_module_imports_and_has_the_union_of_the_releases_api():
    module = importlib.import_module("mxnet.contrib.tensorrt")
    assert module is mx.contrib.tensorrt
    assert sorted(module.__all__) == sorted(API)
    for name, signature in API.items():
        found = inspect.signature(getattr(mx.contrib.tensorrt, name))
        unannotated = found.replace(
            parameters=[p.replace(annotation=p.empty) for p in found.parameters.values()],
            return_annotation=found.empty)
        assert str(unannotated) == signature, name
    # Names of our own do not leak into it.
    assert not hasattr(module, "install") and not hasattr(module, "activation")


def test_installing_twice_keeps_one_module_and_one_hook():
    module = mx.contrib.tensorrt
    hook = mx.sym.Symbol.get_backend_symbol
    compat.install()
    assert mx.contrib.tensorrt is module and mx.sym.Symbol.get_backend_symbol is hook


# --- the switches ---------------------------------------------------------------------------------


def test_set_and_get_use_tensorrt_read_the_variable_now(monkeypatch):
    assert mx.contrib.tensorrt.get_use_tensorrt() is False  # unset: off, as in 1.3
    mx.contrib.tensorrt.set_use_tensorrt(True)
    assert os.environ["MXNET_USE_TENSORRT"] == "1"
    assert mx.contrib.tensorrt.get_use_tensorrt() is True
    mx.contrib.tensorrt.set_use_tensorrt(False)
    assert mx.contrib.tensorrt.get_use_tensorrt() is False
    monkeypatch.setenv("MXNET_USE_TENSORRT", "true")  # what the flag's hooks accept
    assert mx.contrib.tensorrt.get_use_tensorrt() is True
    monkeypatch.setenv("MXNET_USE_TENSORRT", "maybe")
    with pytest.raises(OptionError, match="MXNET_USE_TENSORRT='maybe' is not understood"):
        mx.contrib.tensorrt.get_use_tensorrt()


def test_set_and_get_use_fp16_with_the_1_5_default(monkeypatch):
    assert mx.contrib.tensorrt.get_use_fp16() is True  # unset: 1.5's default
    mx.contrib.tensorrt.set_use_fp16(False)
    assert mx.contrib.tensorrt.get_use_fp16() is False
    mx.contrib.tensorrt.set_use_fp16(True)
    assert mx.contrib.tensorrt.get_use_fp16() is True
    monkeypatch.setenv("MXNET_TENSORRT_USE_FP16", "2")
    with pytest.raises(OptionError, match=r"option 'use_fp16' = '2' \(from "
                       r"\$MXNET_TENSORRT_USE_FP16\) is invalid: must be 1 or 0"):
        mx.contrib.tensorrt.get_use_fp16()


@pytest.mark.parametrize("raw, environ, defaults, precision", [
    ({}, {}, {}, "fp32"),
    ({}, {"MXNET_TENSORRT_USE_FP16": "1"}, {}, "fp16"),
    ({}, {"MXNET_TENSORRT_USE_FP16": "0"}, {}, "fp32"),
    ({}, {}, {"use_fp16": "1"}, "fp16"),  # get_backend_symbol's default
    ({}, {"MXNET_TENSORRT_USE_FP16": "0"}, {"use_fp16": "1"}, "fp32"),  # the variable beats it
    ({}, {"MXNET_TENSORRT_USE_FP16": "1", "MXNET_TENSORRT_PRECISION": "fp32"}, {}, "fp32"),
    ({"precision": "fp32"}, {"MXNET_TENSORRT_USE_FP16": "1"}, {"use_fp16": "1"}, "fp32"),
    ({"use_fp16": "1"}, {}, {}, "fp16"),
])
def test_use_fp16_decides_the_precision_only_when_precision_is_unset(raw, environ, defaults,
                                                                     precision):
    assert resolve(raw, environ=environ, defaults=defaults).precision == precision


@pytest.mark.parametrize("given, canonical", [
    ("fp32", "fp32"), ("fp16", "fp16"), ("int8", "int8"), ("fp32_int8", "int8"),
    ("fp32_fp16", "fp16"), ("fp16_int8", "fp16_int8"), ("int8_fp16", "fp16_int8"),
    ("FP16_INT8", "fp16_int8"), ("fp32_fp16_int8", "fp16_int8"),
])
def test_precision_takes_mxnet_1_9_combinations(given, canonical):
    options = resolve({"precision": given, "calibration_iters": "1"}, environ={})
    assert options.precision == canonical
    # One engine per meaning: the spellings share a cache key.
    assert options.engine_key() == resolve({"precision": canonical, "calibration_iters": "1"},
                                           environ={}).engine_key()


def test_unknown_option_for_defaults_is_an_error_too():
    with pytest.raises(OptionError, match="did you mean 'use_fp16'"):
        resolve({}, environ={}, defaults={"use_fp_16": "1"})


# --- get_backend_symbol and init_tensorrt_params ----------------------------------------------------


def test_get_backend_symbol_partitions():
    sym = conv_net()
    partitioned = sym.get_backend_symbol("TensorRT")
    assert "_TensorRT" in ops(partitioned) and "_TensorRT" not in ops(sym)
    assert mxtrt_backend.last_report().converted_nodes == mxtrt_backend.last_report().compute_nodes
    # Other backends are MXNet's business, as before.
    assert "_TensorRT" not in ops(sym.get_backend_symbol("MKLDNN"))


def test_init_tensorrt_params_takes_what_the_nodes_read_and_returns_the_rest():
    data = mx.sym.var("data")
    x = mx.sym.Convolution(data, num_filter=4, kernel=(3, 3), name="conv")
    x = mx.sym.Activation(x, act_type="relu", name="relu")
    x = mx.sym.erf(x, name="erf")  # no converter: stays in MXNet, and so does the lone fc
    sym = mx.sym.FullyConnected(x, num_hidden=3, name="fc")
    args, aux = random_params(sym, {"data": DATA})
    trt_sym = sym.get_backend_symbol("TensorRT")
    arg_params, aux_params = dict(args), dict(aux)
    returned = mx.contrib.tensorrt.init_tensorrt_params(trt_sym, arg_params, aux_params)
    assert returned[0] is arg_params and returned[1] is aux_params
    assert sorted(arg_params) == ["fc_bias", "fc_weight"]

    executor = trt_sym.simple_bind(mx.cpu(), data=DATA, grad_req="null")
    executor.copy_params_from(arg_params, aux_params)
    x_in = np.random.RandomState(3).uniform(-1, 1, DATA).astype(np.float32)
    executor.forward(is_train=False, data=mx.nd.array(x_in))
    expected = forward(sym, args, aux, {"data": x_in})[0]
    assert rel_err(executor.outputs[0].asnumpy(), expected) < 1e-5


def test_init_tensorrt_params_needs_the_symbol_get_backend_symbol_made(tmp_path):
    path = tmp_path / "trt-symbol.json"
    conv_net().get_backend_symbol("TensorRT").save(str(path))
    with pytest.raises(TypeError, match="needs the symbol returned by get_backend_symbol"):
        mx.contrib.tensorrt.init_tensorrt_params(mx.sym.load(str(path)), {}, {})


def built_precisions(partitioned, set_fp16) -> list[str]:
    with reporting_runtime() as builds:
        if set_fp16 is not None:
            mx.contrib.tensorrt.set_use_fp16(set_fp16)
        with unfused():
            executor = partitioned.simple_bind(mx.cpu(), data=DATA, grad_req="null")
        executor.forward(is_train=False)
        executor.outputs[0].wait_to_read()
    return [b.precision for b in builds]


@pytest.mark.parametrize("set_fp16, precision", [(None, "fp16"), (False, "fp32"), (True, "fp16")])
def test_get_backend_symbol_engines_default_to_fp16_as_in_1_5(set_fp16, precision):
    assert built_precisions(conv_net().get_backend_symbol("TensorRT"), set_fp16) == [precision]


@pytest.mark.parametrize("set_fp16, precision", [(None, "fp32"), (True, "fp16"), (False, "fp32")])
def test_optimize_for_engines_default_to_fp32_and_follow_set_use_fp16(set_fp16, precision):
    assert built_precisions(conv_net().optimize_for("TensorRT"), set_fp16) == [precision]


def test_precision_variable_beats_the_1_5_default(monkeypatch):
    monkeypatch.setenv("MXNET_TENSORRT_PRECISION", "fp32")
    assert built_precisions(conv_net().get_backend_symbol("TensorRT"), None) == ["fp32"]


# --- MXNet 1.3: tensorrt_bind, training binds, the flag ---------------------------------------------


def bn_net() -> mx.sym.Symbol:
    data = mx.sym.var("data")
    x = mx.sym.Convolution(data, num_filter=4, kernel=(3, 3), name="conv")
    x = mx.sym.BatchNorm(x, fix_gamma=False, name="bn")
    x = mx.sym.Activation(x, act_type="relu", name="relu")
    x = mx.sym.FullyConnected(x, num_hidden=3, name="fc")
    return mx.sym.SoftmaxOutput(x, name="softmax")


def bn_case() -> tuple[mx.sym.Symbol, dict, dict, np.ndarray, np.ndarray]:
    """bn_net, random parameters, an input and unfused MXNet's output for it."""
    sym = bn_net()
    args, aux = random_params(sym, {"data": DATA, "softmax_label": (DATA[0],)})
    x = np.random.RandomState(4).uniform(-1, 1, DATA).astype(np.float32)
    expected = forward(sym, args, aux, {"data": x, "softmax_label": np.zeros(DATA[0])})[0]
    return sym, args, aux, x, expected


def test_tensorrt_bind_runs_shared_buffer_weights_and_batchnorm_moments():
    sym, args, aux, x, expected = bn_case()
    mx.contrib.tensorrt.set_use_tensorrt(True)
    executor = mx.contrib.tensorrt.tensorrt_bind(sym, ctx=mx.cpu(), all_params=dict(args, **aux),
                                                 data=DATA, softmax_label=(DATA[0],),
                                                 grad_req="null", force_rebind=True)
    executor.forward(is_train=False, data=mx.nd.array(x))
    assert "_TensorRT" in ops(mx.contrib.tensorrt.get_optimized_symbol(executor))
    assert rel_err(executor.outputs[0].asnumpy(), expected) < 1e-5


def test_tensorrt_bind_does_not_need_the_weights_at_bind_time():
    """MXNet 1.3 refused an empty shared_buffer; here weights copied in later are what runs."""
    sym, args, aux, x, expected = bn_case()
    mx.contrib.tensorrt.set_use_tensorrt(True)
    executor = mx.contrib.tensorrt.tensorrt_bind(sym, ctx=mx.cpu(), all_params={}, data=DATA,
                                                 softmax_label=(DATA[0],), grad_req="null")
    executor.copy_params_from(args, aux)
    executor.forward(is_train=False, data=mx.nd.array(x))
    assert rel_err(executor.outputs[0].asnumpy(), expected) < 1e-5


def test_tensorrt_bind_for_training_is_1_3s_error_with_its_advice():
    sym = bn_net()
    mx.contrib.tensorrt.set_use_tensorrt(True)
    for kwargs in ({"grad_req": "write"}, {}):  # simple_bind's default is 'write'
        with pytest.raises(compat.InferenceOnlyError,
                           match="TensorRT is an inference only library.*set the "
                                 "MXNET_USE_TENSORRT environment variable to 0, or call "
                                 r"mx.contrib.tensorrt.set_use_tensorrt\(False\)"):
            mx.contrib.tensorrt.tensorrt_bind(sym, mx.cpu(), {}, data=DATA,
                                              softmax_label=(DATA[0],), **kwargs)
    assert issubclass(compat.InferenceOnlyError, mx.base.MXNetError)


def test_tensorrt_bind_with_the_flag_off_is_plain_simple_bind_as_in_1_3():
    sym = bn_net()
    mx.contrib.tensorrt.set_use_tensorrt(False)
    executor = mx.contrib.tensorrt.tensorrt_bind(sym, mx.cpu(), {}, data=DATA,
                                                 softmax_label=(DATA[0],), grad_req="write")
    assert "_TensorRT" not in ops(executor.get_optimized_symbol())
    executor.forward(is_train=True, data=mx.nd.ones(DATA))
    executor.backward()
    assert executor.grad_dict["conv_weight"].shape == (4, 3, 3, 3)


def test_flag_on_plain_training_bind_falls_back_with_a_warning(monkeypatch, caplog):
    monkeypatch.setenv("MXNET_USE_TENSORRT", "1")
    with caplog.at_level(logging.WARNING, logger="mxtrt"):
        executor = bn_net().simple_bind(mx.cpu(), data=DATA, softmax_label=(DATA[0],))
    assert "_TensorRT" not in ops(executor.get_optimized_symbol())
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == "mxtrt"]
    assert len(warnings) == 1 and "computes gradients" in warnings[0].getMessage()


@pytest.mark.parametrize("make", ["optimize_for", "get_backend_symbol"])
def test_flag_on_binds_a_partitioned_symbol_as_it_is_with_its_values(monkeypatch, make):
    """The values given to optimize_for (or init_tensorrt_params) stay what runs when the flag is
    on too: the symbol is not partitioned a second time, which would drop them."""
    sym = conv_net()
    args, aux = random_params(sym, {"data": DATA})
    if make == "optimize_for":
        partitioned = sym.optimize_for("TensorRT", args, aux, ctx=mx.cpu())
    else:
        partitioned = sym.get_backend_symbol("TensorRT")
        mx.contrib.tensorrt.init_tensorrt_params(partitioned, dict(args), dict(aux))
    monkeypatch.setenv("MXNET_USE_TENSORRT", "1")
    executor = partitioned.simple_bind(mx.cpu(), data=DATA, grad_req="null")
    x = np.random.RandomState(5).uniform(-1, 1, DATA).astype(np.float32)
    executor.forward(is_train=False, data=mx.nd.array(x))
    assert ops(executor.get_optimized_symbol()).count("_TensorRT") == len(trt_nodes(partitioned))
    assert rel_err(executor.outputs[0].asnumpy(), forward(sym, args, aux, {"data": x})[0]) < 1e-5


# --- fresh processes --------------------------------------------------------------------------------

# A user's MXNet 1.3-era script, as it would have been written then (no mxtrt import in it).
SCRIPT_13 = '''
import sys
import mxnet as mx
import numpy as np

prefix, epoch, test_file, preds_file, symbol_file = sys.argv[1:6]
batch_size = 64
sym, arg_params, aux_params = mx.model.load_checkpoint(prefix, int(epoch))
all_params = dict(arg_params, **aux_params)

mx.contrib.tensorrt.set_use_tensorrt(True)
executor = mx.contrib.tensorrt.tensorrt_bind(sym, ctx=mx.cpu(), all_params=all_params,
                                             data=(batch_size, 1, 8, 8),
                                             softmax_label=(batch_size,),
                                             grad_req='null', force_rebind=True)
test_iter = mx.io.NDArrayIter(np.load(test_file), batch_size=batch_size)
preds = []
for dbatch in test_iter:
    executor.arg_dict["data"][:] = dbatch.data[0]
    executor.forward(is_train=False)
    preds.append(executor.outputs[0].asnumpy()[:batch_size - dbatch.pad])
np.save(preds_file, np.concatenate(preds))
mx.contrib.tensorrt.get_optimized_symbol(executor).save(symbol_file)
'''

# Only the import of the plugin comes before the unchanged script.
RUN_WITH_PLUGIN = ("import mxtrt_backend, runpy, sys; sys.argv = sys.argv[1:]; "
                   "runpy.run_path(sys.argv[0], run_name='__main__')")


def run_python(*args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_a_1_3_era_script_runs_unchanged(lenet, tmp_path):
    prefix, epoch, _ = lenet
    x_test = digits_as_mnist()["test_data"]
    np.save(tmp_path / "test.npy", x_test)
    (tmp_path / "script.py").write_text(SCRIPT_13)
    run_python("-c", RUN_WITH_PLUGIN, str(tmp_path / "script.py"), prefix, str(epoch),
               str(tmp_path / "test.npy"), str(tmp_path / "preds.npy"), str(tmp_path / "opt.json"))

    sym, args, aux = mx.model.load_checkpoint(prefix, epoch)
    expected = forward(sym, args, aux, {"data": x_test, "softmax_label": np.zeros(len(x_test))})[0]
    preds = np.load(tmp_path / "preds.npy")
    assert preds.shape == expected.shape and rel_err(preds, expected) < 1e-5
    assert "_TensorRT" in ops(mx.sym.load(str(tmp_path / "opt.json")))


LOAD_AND_RUN = '''
import sys
import mxnet as mx
import numpy as np
import mxtrt_backend

prefix, data_file, out_file = sys.argv[1:4]
sym, arg_params, aux_params = mx.model.load_checkpoint(prefix, 0)
assert type(sym) is mx.sym.Symbol  # loaded from JSON: no values given to optimize_for here
x = np.load(data_file)
executor = sym.simple_bind(mx.cpu(), data=x.shape, grad_req="null")
executor.copy_params_from(arg_params, aux_params)
executor.forward(is_train=False, data=mx.nd.array(x))
np.save(out_file, executor.outputs[0].asnumpy())
print(" ".join(n["op"] for n in __import__("json").loads(sym.tojson())["nodes"]))
'''


def test_a_symbol_saved_after_optimize_for_binds_and_runs_in_a_fresh_process(tmp_path):
    sym = conv_net()
    args, aux = random_params(sym, {"data": DATA})
    partitioned = sym.optimize_for("TensorRT", args, aux, ctx=mx.cpu())
    assert trt_nodes(partitioned)
    prefix = str(tmp_path / "model")
    mx.model.save_checkpoint(prefix, 0, partitioned, args, aux)
    x = np.random.RandomState(6).uniform(-1, 1, DATA).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "load.py").write_text(LOAD_AND_RUN)
    done = run_python(str(tmp_path / "load.py"), prefix, str(tmp_path / "x.npy"),
                      str(tmp_path / "out.npy"))
    assert "_TensorRT" in done.stdout.split()
    expected = forward(sym, args, aux, {"data": x})[0]
    assert rel_err(np.load(tmp_path / "out.npy"), expected) < 1e-5
