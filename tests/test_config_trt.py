"""The TensorRT options of config.py: parsing, environment variables, errors, cache-key role."""
from __future__ import annotations

import numpy as np
import pytest

import mxtrt_backend
from mxtrt_backend.config import OPTIONS, OptionError, resolve

TRT_OPTIONS = ("precision", "max_workspace_size", "batch_range", "builder_optimization_level",
               "calibration_cache", "calibration_data")


def test_defaults():
    opts = resolve({}, environ={})
    assert (opts.precision, opts.max_workspace_size, opts.batch_range,
            opts.builder_optimization_level, opts.calibration_cache,
            opts.calibration_data) == ("fp32", 1 << 30, None, 3, None, None)


def test_values_are_parsed(tmp_path):
    cache = tmp_path / "calib.cache"
    cache.write_bytes(b"scales")
    opts = resolve({"precision": " FP16", "max_workspace_size": "4096", "batch_range": "1, 8,32",
                    "builder_optimization_level": "5", "calibration_cache": str(cache)}, environ={})
    assert opts.precision == "fp16"
    assert opts.max_workspace_size == 4096
    assert opts.batch_range == (1, 8, 32)
    assert opts.builder_optimization_level == 5
    assert opts.calibration_cache == str(cache)


@pytest.mark.parametrize("name", TRT_OPTIONS)
def test_each_option_has_its_environment_variable_and_affects_the_engine(name):
    spec = next(s for s in OPTIONS if s.name == name)
    assert spec.env == f"MXNET_TENSORRT_{name.upper()}"
    assert spec.affects_engine


def test_environment_is_used_and_explicit_wins():
    env = {"MXNET_TENSORRT_PRECISION": "int8", "MXNET_TENSORRT_BATCH_RANGE": "2,2,4",
           "MXNET_TENSORRT_CALIBRATION_ITERS": "3"}
    assert resolve({}, environ=env).precision == "int8"
    assert resolve({}, environ=env).batch_range == (2, 2, 4)
    assert resolve({"precision": "fp16"}, environ=env).precision == "fp16"


@pytest.mark.parametrize("raw, message", [
    ({"precision": "fp64"}, r"option 'precision' = 'fp64' \(given\) is invalid: 'fp64' is not a "
                            r"precision; did you mean 'fp16'\? give fp32, fp16 or int8, or MXNet "
                            r"1.9's combinations joined by '_': fp16_int8, fp32_int8, fp32_fp16"),
    ({"max_workspace_size": "0"}, r"option 'max_workspace_size' = '0' \(given\) is invalid: must be >= 1"),
    ({"max_workspace_size": "1GB"}, r"option 'max_workspace_size' = '1GB' \(given\) is invalid"),
    ({"batch_range": "8,4,16"}, r"option 'batch_range' = '8,4,16' \(given\) is invalid: must satisfy 1 <= min <= opt <= max"),
    ({"batch_range": "0,1,2"}, r"option 'batch_range' = '0,1,2' \(given\) is invalid: must satisfy"),
    ({"batch_range": "1,8"}, r"option 'batch_range' = '1,8' \(given\) is invalid: expected \"min,opt,max\""),
    ({"builder_optimization_level": "6"}, r"option 'builder_optimization_level' = '6' \(given\) is invalid: must be between 0 and 5"),
    ({"calibration_cache": "/no/such/file.cache"}, r"option 'calibration_cache' = '/no/such/file.cache' \(given\) is invalid: no such file"),
    ({"calibration_data": "<mxnet.io.io.NDArrayIter object at 0x7f>"},
     r"option 'calibration_data' = .*NDArrayIter.* is invalid: must be the token returned by mxtrt_backend.calibration_data"),
    ({"calibration_data": "mxtrt-calibration:0123"}, r"is invalid: no calibration data with this token in this process"),
])
def test_bad_values_name_option_and_value(raw, message):
    with pytest.raises(OptionError, match=message):
        resolve(raw, environ={})


def test_bad_environment_value_names_the_variable():
    with pytest.raises(OptionError, match=r"from \$MXNET_TENSORRT_PRECISION"):
        resolve({}, environ={"MXNET_TENSORRT_PRECISION": "half"})


def test_misspelt_option_suggests_the_right_one():
    with pytest.raises(OptionError, match="did you mean 'precision'"):
        resolve({"precison": "fp16"}, environ={})


def test_calibration_data_token_resolves_in_this_process():
    token = mxtrt_backend.calibration_data([np.ones((2, 3), "f")])
    assert resolve({"calibration_data": token}, environ={}).calibration_data == token


@pytest.mark.parametrize("name, a, b", [
    ("precision", "fp32", "fp16"), ("max_workspace_size", "1024", "2048"),
    ("batch_range", "1,2,4", "1,4,4"), ("builder_optimization_level", "1", "2"),
])
def test_engine_key_changes_with_each_trt_option(name, a, b):
    assert resolve({name: a}, environ={}).engine_key() != resolve({name: b}, environ={}).engine_key()


def test_engine_key_follows_the_calibration_cache_content_not_its_path(tmp_path):
    one, two = tmp_path / "one.cache", tmp_path / "two.cache"
    one.write_bytes(b"scales A")
    two.write_bytes(b"scales A")
    key = lambda path: resolve({"calibration_cache": str(path)}, environ={}).engine_key()  # noqa: E731
    assert key(one) == key(two)
    two.write_bytes(b"scales B")
    assert key(one) != key(two)
    assert key(one)["calibration_cache"] != str(one)


def test_engine_key_changes_with_calibration_data_content():
    a = mxtrt_backend.calibration_data([np.zeros((2, 3), "f")])
    b = mxtrt_backend.calibration_data([np.ones((2, 3), "f")])
    same = mxtrt_backend.calibration_data([np.ones((2, 3), "f")])
    keys = [resolve({"calibration_data": t}, environ={}).engine_key() for t in (a, b, same)]
    assert keys[0] != keys[1] and keys[1] == keys[2]


def test_options_not_about_the_engine_stay_out_of_its_key(tmp_path):
    base = resolve({}, environ={}).engine_key()
    assert resolve({"min_subgraph_size": "7", "exclude_ops": "Pooling", "cache_dir": str(tmp_path)},
                   environ={}).engine_key() == base
    assert set(TRT_OPTIONS) <= set(base)

