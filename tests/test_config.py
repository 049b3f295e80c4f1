from __future__ import annotations

import pytest

from mxtrt_backend import config
from mxtrt_backend.config import OptionError, Options, resolve


def test_defaults_when_nothing_is_set():
    opts = resolve({}, environ={})
    assert opts.min_subgraph_size == 2
    assert opts.exclude_ops == ()
    assert opts.cache_dir.endswith("mxtrt")


def test_strings_are_parsed():
    opts = resolve({"min_subgraph_size": "5", "exclude_ops": "Pooling, Concat,Pooling"}, environ={})
    assert opts.min_subgraph_size == 5
    assert opts.exclude_ops == ("Concat", "Pooling")


def test_explicit_option_beats_environment_beats_default():
    env = {"MXNET_TENSORRT_MIN_SUBGRAPH_SIZE": "7"}
    assert resolve({}, environ=env).min_subgraph_size == 7
    assert resolve({"min_subgraph_size": "3"}, environ=env).min_subgraph_size == 3


def test_cache_dir_from_its_environment_variable(tmp_path):
    assert resolve({}, environ={"MXTRT_CACHE_DIR": str(tmp_path)}).cache_dir == str(tmp_path)


def test_unknown_option_names_the_closest_valid_one():
    with pytest.raises(OptionError, match="option 'min_subgraph_sise' is unknown; did you mean 'min_subgraph_size'"):
        resolve({"min_subgraph_sise": "2"}, environ={})


def test_unknown_option_without_a_close_match_lists_the_valid_ones():
    with pytest.raises(OptionError, match="valid options: .*min_subgraph_size"):
        resolve({"zzz": "1"}, environ={})


@pytest.mark.parametrize("raw, message", [
    ({"min_subgraph_size": "-1"}, "option 'min_subgraph_size' = '-1' \\(given\\) is invalid: must be >= 1"),
    ({"min_subgraph_size": "two"}, "option 'min_subgraph_size' = 'two' \\(given\\) is invalid"),
    ({"ort_threads": "-3"}, "option 'ort_threads' = '-3' \\(given\\) is invalid: must be between 0 "
                            "and [0-9]+, the CPUs this process may use"),
    ({"ort_spinning": "maybe"}, "option 'ort_spinning' = 'maybe' \\(given\\) is invalid: expected 1 or 0"),
])
def test_bad_values_name_option_and_value(raw, message):
    with pytest.raises(OptionError, match=message):
        resolve(raw, environ={})


@pytest.mark.parametrize("raw, value", [("1", True), (" On", True), ("no", False), ("0", False)])
def test_switches_take_the_usual_words(raw, value):
    assert resolve({"ort_spinning": raw}, environ={}).ort_spinning is value


def test_bad_environment_value_names_the_variable():
    with pytest.raises(OptionError, match="from \\$MXNET_TENSORRT_MIN_SUBGRAPH_SIZE"):
        resolve({}, environ={"MXNET_TENSORRT_MIN_SUBGRAPH_SIZE": "0"})


def test_engine_key_holds_only_engine_options():
    key = Options().engine_key()
    assert "min_subgraph_size" not in key and "cache_dir" not in key
    assert "ort_threads" in key
    # The in-memory cache holds ONNX Runtime sessions: a session made with other thread settings
    # is another engine.
    assert "ort_spinning" in key


def test_every_option_has_its_own_environment_variable():
    envs = [spec.env for spec in config.OPTIONS]
    assert all(envs) and len(set(envs)) == len(envs)
