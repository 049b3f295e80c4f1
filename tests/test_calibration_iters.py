"""MXNet 1.9's online int8 calibration (``calibration_iters=N``), on CPU.

The engines are built by ``helpers.ReportingRuntime``: ONNX Runtime (it computes, in float32)
that reports what it was asked to build, with the calibration batches as TensorRT's calibrator
would receive them. The op, the engine cache and the calibration bookkeeping run for real.
"""
from __future__ import annotations

import gc
import logging

import mxnet as mx
import numpy as np
import pytest

from helpers import forward, random_params, rel_err, reporting_runtime, unfused
from mxtrt_backend import OptionError
from mxtrt_backend.config import resolve
from mxtrt_backend.engine import calibration
from mxtrt_backend.engine.calibration import OnlineCalibration

SHAPE = (2, 3, 6, 6)


def chain(before: str | None = None) -> mx.sym.Symbol:
    """conv -> relu -> fc, optionally after an op the backend leaves to MXNet."""
    x = mx.sym.var("data")
    if before:
        x = getattr(mx.sym, before)(x, name="pre")
    x = mx.sym.Convolution(x, num_filter=4, kernel=(3, 3), name="conv")
    x = mx.sym.Activation(x, act_type="relu", name="relu")
    return mx.sym.FullyConnected(x, num_hidden=5, name="fc")


def batches(count: int, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.RandomState(seed)
    return [rng.uniform(-1, 1, SHAPE).astype(np.float32) for _ in range(count)]


def bound(sym, args, aux, **options):
    part = sym.optimize_for("TensorRT", args, aux, ctx=mx.cpu(), **options)
    with unfused():
        return part.simple_bind(mx.cpu(), data=SHAPE, grad_req="null")


def run(executor, data: np.ndarray) -> np.ndarray:
    executor.forward(is_train=False, data=mx.nd.array(data))
    return executor.outputs[0].asnumpy()


def calibrated_samples(build) -> np.ndarray:
    (name,) = build.calibration[0]
    return np.concatenate([batch[name] for batch in build.calibration])


# --- the switch ---------------------------------------------------------------------------------


def test_first_n_forwards_calibrate_then_the_int8_engine_runs():
    sym = chain()
    args, aux = random_params(sym, {"data": SHAPE})
    inputs = batches(5)
    with reporting_runtime() as builds:
        executor = bound(sym, args, aux, precision="fp16_int8", calibration_iters=3)
        seen = []
        for data in inputs:
            out = run(executor, data)
            seen.append(len(builds))
            assert rel_err(out, forward(sym, args, aux, {"data": data})[0]) < 1e-5
    # One engine for the three calibration forwards, the int8 engine from the fourth on.
    assert seen == [1, 1, 1, 2, 2]
    assert [b.precision for b in builds] == ["fp16", "fp16_int8"]
    assert builds[0].calibration is None
    # Calibrated from exactly what the first three forwards got, in engine-sized batches.
    assert all(b["data0"].shape == SHAPE for b in builds[1].calibration)
    assert np.array_equal(calibrated_samples(builds[1]), np.concatenate(inputs[:3]))


@pytest.mark.parametrize("precision, before, after", [
    ("int8", "fp32", "int8"), ("fp32_int8", "fp32", "int8"),
    ("int8_fp16", "fp16", "fp16_int8"), ("fp32_fp16_int8", "fp16", "fp16_int8"),
])
def test_calibration_runs_at_the_precision_without_int8(precision, before, after):
    # MXNet 1.9's meaning: fp16 overrides fp32, int8 adds int8 (so int8 alone is int8 + fp32).
    sym = chain()
    args, aux = random_params(sym, {"data": SHAPE})
    with reporting_runtime() as builds:
        executor = bound(sym, args, aux, precision=precision, calibration_iters=1)
        for data in batches(2):
            run(executor, data)
    assert [b.precision for b in builds] == [before, after]


def test_a_subgraph_after_an_op_left_to_mxnet_calibrates_from_its_own_inputs():
    """The op's own inputs are what calibrates it, computed upstream by MXNet (erf has no
    converter) -- what calibration_data, which feeds the network's inputs, cannot do."""
    sym = chain(before="erf")
    args, aux = random_params(sym, {"data": SHAPE})
    inputs = batches(2)
    with reporting_runtime() as builds:
        executor = bound(sym, args, aux, precision="int8", calibration_iters=2)
        for data in inputs + batches(1, seed=5):
            run(executor, data)
    assert [b.precision for b in builds] == ["fp32", "int8"]
    erf = np.concatenate([mx.nd.erf(mx.nd.array(x)).asnumpy() for x in inputs])
    np.testing.assert_allclose(calibrated_samples(builds[1]), erf, rtol=1e-6)


def test_new_weights_after_calibration_rebuild_int8_from_the_same_inputs():
    sym = chain()
    args, aux = random_params(sym, {"data": SHAPE})
    new_args, _ = random_params(sym, {"data": SHAPE}, seed=7)
    inputs = batches(3)
    with reporting_runtime() as builds:
        executor = bound(sym, args, aux, precision="int8", calibration_iters=2)
        for data in inputs:
            run(executor, data)
        executor.copy_params_from(new_args)
        out = run(executor, inputs[0])
    assert [b.precision for b in builds] == ["fp32", "int8", "int8"]
    assert np.array_equal(calibrated_samples(builds[2]), calibrated_samples(builds[1]))
    assert rel_err(out, forward(sym, new_args, aux, {"data": inputs[0]})[0]) < 1e-5


def test_forwards_that_stop_before_n_say_so(caplog):
    sym = chain()
    args, aux = random_params(sym, {"data": SHAPE})
    with reporting_runtime() as builds, caplog.at_level(logging.WARNING, logger="mxtrt"):
        executor = bound(sym, args, aux, precision="int8", calibration_iters=3)
        for data in batches(2):
            run(executor, data)
        del executor
        gc.collect()
        mx.nd.waitall()
    assert [b.precision for b in builds] == ["fp32"]
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("stopped after 2 of calibration_iters=3 forwards, so no int8 engine was built "
               "and every forward ran at fp32" in m for m in messages), messages


def test_gluon_without_static_alloc_never_completes_and_says_so_once(caplog):
    """Gluon without static_alloc makes a new op at every call (so did MXNet 1.9, whose
    tutorial asks for static_alloc and static_shape): calibration restarts each time."""
    net = mx.gluon.nn.HybridSequential()
    net.add(mx.gluon.nn.Dense(8, activation="relu"), mx.gluon.nn.Dense(3))
    net.initialize()
    x = mx.nd.ones((4, 5))
    with reporting_runtime() as builds, caplog.at_level(logging.WARNING, logger="mxtrt"):
        net.hybridize(backend="TensorRT", backend_opts={"precision": "int8",
                                                        "calibration_iters": 2})
        for _ in range(3):
            net(x).wait_to_read()
        mx.nd.waitall()
    assert [b.precision for b in builds] == ["fp32"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "hybridize(static_alloc=True, static_shape=True)" in warnings[0]


def test_gluon_static_alloc_calibrates_then_switches():
    net = mx.gluon.nn.HybridSequential()
    net.add(mx.gluon.nn.Dense(8, activation="relu"), mx.gluon.nn.Dense(3))
    net.initialize()
    x = mx.nd.array(np.random.RandomState(0).uniform(size=(4, 5)))
    reference = net(x).asnumpy()
    with reporting_runtime() as builds:
        net.hybridize(backend="TensorRT", static_alloc=True, static_shape=True,
                      backend_opts={"precision": "int8", "calibration_iters": 2})
        outputs = [net(x).asnumpy() for _ in range(3)]
    assert [b.precision for b in builds] == ["fp32", "int8"]
    for out in outputs:
        assert rel_err(out, reference) < 1e-5


# --- the class itself ---------------------------------------------------------------------------


def test_online_calibration_counts_keeps_inputs_and_switches_once():
    options = resolve({"precision": "fp16_int8", "calibration_iters": "2"}, environ={})
    online = OnlineCalibration(options, "abc")
    fed = [{"x": np.full((1, 2), i, np.float32)} for i in range(2)]
    first = online.options(lambda: fed[0])
    assert (first.precision, first.calibration_data, online.forwards) == ("fp16", None, 1)
    second = online.options(lambda: fed[1])
    assert second == first and online.forwards == 2
    done = online.options(lambda: pytest.fail("inputs are not read once calibration is done"))
    assert done.precision == "fp16_int8" and done.calibration_iters == 0
    assert np.array_equal(calibration.lookup(done.calibration_data).samples["x"],
                          np.array([[0, 0], [1, 1]], np.float32))
    assert online.options(lambda: pytest.fail("read")) == done


def test_calibration_batches_take_the_engine_input_dtype():
    token = calibration.register([np.ones((2, 3), np.float32)])
    (batch,) = calibration.batches(calibration.lookup(token), {"x": (2, 3)},
                                   {"x": np.dtype(np.float16)})
    assert batch["x"].dtype == np.float16


# --- the options ------------------------------------------------------------------------------


def test_int8_without_calibration_names_the_three_ways():
    sym = chain()
    args, aux = random_params(sym, {"data": SHAPE})
    with pytest.raises(OptionError, match="'int8' needs calibration: set calibration_iters .*"
                       "calibration_data .*calibration_cache"):
        sym.optimize_for("TensorRT", args, aux, ctx=mx.cpu(), precision="int8")


@pytest.mark.parametrize("raw, message", [
    ({"calibration_iters": "-1"}, r"option 'calibration_iters' = '-1' \(given\) is invalid: must be >= 0"),
    ({"calibration_iters": "many"}, r"option 'calibration_iters' = 'many' \(given\) is invalid"),
    ({"calibration_iter": "3"}, "did you mean 'calibration_iters'"),
    ({"precision": "int8", "calibration_iters": "2", "calibration_data": "@"},
     "calibration_data"),  # an invalid token is refused first
])
def test_calibration_iters_is_validated(raw, message):
    with pytest.raises(OptionError, match=message):
        resolve(raw, environ={})


def test_calibration_iters_and_offline_calibration_are_alternatives():
    token = calibration.register([np.ones((2, 3), np.float32)])
    with pytest.raises(OptionError, match="calibration_iters and calibration_data are alternatives"):
        resolve({"precision": "int8", "calibration_iters": "2", "calibration_data": token},
                environ={})


def test_calibration_iters_from_its_environment_variable():
    options = resolve({"precision": "int8"}, environ={"MXNET_TENSORRT_CALIBRATION_ITERS": "4"})
    assert options.calibration_iters == 4
    # Not part of the engine key: the int8 engine's key holds the data's digest instead.
    assert "calibration_iters" not in options.engine_key()
