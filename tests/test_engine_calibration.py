"""int8 calibration batches: collected on the host from a DataIter or an iterable, regrouped to
the engine's batch, content-addressed by their token."""
from __future__ import annotations

import logging

import mxnet as mx
import numpy as np
import pytest

import mxtrt_backend
from mxtrt_backend.engine import calibration, cuda

SAMPLES = np.arange(10 * 3 * 2 * 2, dtype=np.float64).reshape(10, 3, 2, 2)


def test_data_iter_padded_last_batch_is_trimmed_to_real_samples():
    it = mx.io.NDArrayIter(SAMPLES, batch_size=4, last_batch_handle="pad", data_name="data")
    found = calibration.collect(it)
    arr = found.samples["data"]
    assert arr.dtype == np.float32 and arr.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(arr, SAMPLES.astype(np.float32))
    # The iterator is left reset, ready for the caller's own use.
    assert next(iter(it)).data[0].shape == (4, 3, 2, 2)


def test_data_iter_discarding_its_last_batch_gives_whole_batches_only():
    it = mx.io.NDArrayIter(SAMPLES, batch_size=4, last_batch_handle="discard")
    assert calibration.collect(it).samples["data"].shape == (8, 3, 2, 2)


def test_iterable_of_ndarrays_and_numpy_batches():
    batches = [mx.nd.array(SAMPLES[:6]), SAMPLES[6:]]
    found = calibration.collect(batches)
    assert list(found.samples) == [None]
    np.testing.assert_array_equal(found.samples[None], SAMPLES.astype(np.float32))


def test_batches_regroup_to_the_engine_batch_and_drop_the_partial_rest(caplog):
    found = calibration.collect([SAMPLES[:3], SAMPLES[3:]])  # batches of another size than 4
    with caplog.at_level(logging.INFO, logger="mxtrt"):
        out = calibration.batches(found, {"data0": (4, 3, 2, 2)})
    assert len(out) == 2
    for i, batch in enumerate(out):
        arr = batch["data0"]
        assert arr.shape == (4, 3, 2, 2) and arr.dtype == np.float32 and arr.flags["C_CONTIGUOUS"]
        np.testing.assert_array_equal(arr, SAMPLES[4 * i:4 * i + 4].astype(np.float32))
    assert "the last 2 (a partial batch) are dropped" in caplog.text


def test_exactly_whole_batches_drop_nothing(caplog):
    found = calibration.collect([SAMPLES[:8]])
    with caplog.at_level(logging.INFO, logger="mxtrt"):
        assert len(calibration.batches(found, {"x": (2, 3, 2, 2)})) == 4
    assert "dropped" not in caplog.text


def test_fewer_samples_than_one_batch_is_an_error():
    found = calibration.collect([SAMPLES[:3]])
    with pytest.raises(ValueError, match="has 3 sample\\(s\\), fewer than one batch of 4"):
        calibration.batches(found, {"data": (4, 3, 2, 2)})


def test_sample_shape_must_match_the_engine_input():
    found = calibration.collect([SAMPLES])
    with pytest.raises(ValueError, match=r"have shape \[3, 2, 2\], the engine input has \[3, 4, 4\]"):
        calibration.batches(found, {"data": (2, 3, 4, 4)})


def test_several_inputs_need_named_batches():
    unnamed = calibration.collect([SAMPLES])
    with pytest.raises(ValueError, match="give calibration batches as dicts"):
        calibration.batches(unnamed, {"a": (2, 3, 2, 2), "b": (2, 3, 2, 2)})
    named = calibration.collect([{"a": SAMPLES, "b": SAMPLES * 2}])
    out = calibration.batches(named, {"a": (5, 3, 2, 2), "b": (5, 3, 2, 2)})
    assert len(out) == 2
    np.testing.assert_array_equal(out[1]["b"], (SAMPLES[5:] * 2).astype(np.float32))


def test_missing_input_names_calibration_cache_as_the_way_out():
    found = calibration.collect([{"data": SAMPLES}])
    with pytest.raises(ValueError, match="no batches for input 'conv0_output'.*calibration_cache"):
        calibration.batches(found, {"conv0_output": (2, 3, 2, 2)})


def test_no_batches_is_an_error():
    with pytest.raises(ValueError, match="holds no batches"):
        calibration.collect([])


def test_token_names_the_content():
    a = mxtrt_backend.calibration_data([SAMPLES])
    assert a == mxtrt_backend.calibration_data([SAMPLES[:5], SAMPLES[5:]])
    assert a != mxtrt_backend.calibration_data([SAMPLES + 1])
    assert calibration.problem(a) is None
    assert calibration.lookup(a).samples[None].shape == SAMPLES.shape


def test_unknown_token_lookup_says_why():
    with pytest.raises(ValueError, match="tokens do not survive the process"):
        calibration.lookup(calibration.TOKEN_PREFIX + "feed")


def _gpu_visible() -> bool:
    try:
        return cuda.device_count() > 0
    except cuda.CudaError:
        return False


@pytest.mark.skipif(_gpu_visible(), reason="checks the error without a GPU")
def test_device_batches_without_a_gpu_raise_a_cuda_error():
    batches = calibration.batches(calibration.collect([SAMPLES]), {"data": (5, 3, 2, 2)})
    with pytest.raises(cuda.CudaError):
        calibration.DeviceBatches(batches)


def test_a_data_iter_feeds_the_engine_input_mxnet_renamed():
    """MXNet names a subgraph's input 'data0'; the DataIter's batches are named 'data'. The
    exported graph records each input's own name, and calibration finds the batches by it."""
    from mxtrt_backend.engine.onnx_shapes import source_names
    from helpers import DATA, data_subgraph

    graph = data_subgraph()
    assert source_names(graph.onnx_bytes)["data0"] == "data"
    x = np.random.RandomState(0).uniform(-1, 1, (4, *DATA[1:])).astype("f")
    found = calibration.lookup(mxtrt_backend.calibration_data(
        mx.io.NDArrayIter(x, batch_size=2, data_name="data")))
    got = calibration.batches(found, {"data0": (2, *DATA[1:])}, None,
                              source_names(graph.onnx_bytes))
    assert len(got) == 2 and np.array_equal(got[1]["data0"], x[2:])
