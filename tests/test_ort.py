"""ONNX Runtime sessions as the backend makes them."""
from __future__ import annotations

import mxnet as mx
import numpy as np
import onnxruntime as ort
import pytest

from helpers import conv_net, forward, random_params, rel_err
from mxtrt_backend.config import resolve
from mxtrt_backend.engine.cache import ENGINES
from mxtrt_backend.engine.ort import session_options

LEVEL = ort.GraphOptimizationLevel.ORT_ENABLE_ALL


@pytest.mark.parametrize("raw, entry", [({}, "0"), ({"ort_spinning": "1"}, "1")])
def test_idle_threads_sleep_unless_spinning_is_asked_for(raw, entry):
    so = session_options(resolve(raw, environ={}), LEVEL)
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == entry


def test_spinning_setting_gives_another_engine_with_the_same_answer():
    sym = conv_net()
    shape = (2, 3, 8, 8)
    args, aux = random_params(sym, {"data": shape})
    x = np.random.RandomState(0).uniform(-1, 1, shape).astype(np.float32)
    ref = forward(sym, args, aux, {"data": x})[0]
    for spinning in ("0", "1"):
        part = sym.optimize_for("TensorRT", args, aux, ctx=mx.cpu(), ort_spinning=spinning,
                                exclude_ops="Pooling")
        assert rel_err(forward(part, args, aux, {"data": x})[0], ref) < 1e-4
    # Two subgraphs (the Pooling nodes stay in MXNet), one engine each per setting.
    assert ENGINES.lookups["built"] == 4


def conv_reshape_graph() -> bytes:
    """Conv (32 -> 32 channels: weights large enough to go apart) + Relu + Reshape (whose shape
    input ONNX Runtime reads while loading the graph)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.RandomState(0)
    weights = [numpy_helper.from_array(rng.uniform(-0.2, 0.2, (32, 32, 3, 3)).astype(np.float32),
                                       "w"),
               numpy_helper.from_array(rng.uniform(-0.2, 0.2, 32).astype(np.float32), "b"),
               numpy_helper.from_array(np.array([1, -1], np.int64), "shape")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Reshape", ["r", "shape"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 32, 8, 8])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, [1, 2048])], weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()


def test_engine_is_the_fully_optimised_graph_with_its_weights_apart():
    """The CPU engine holds ONNX Runtime's CPU-specific optimisations and its large weights
    outside the graph; loaded from a read-only view (as the cache maps its files), it computes
    what the exported graph computes."""
    import onnx

    from mxtrt_backend.engine import TensorRef
    from mxtrt_backend.engine.ort import OrtRuntime

    source = conv_reshape_graph()
    runtime, options = OrtRuntime(), resolve({}, environ={})
    blob = runtime.build(source, ["x"], ["y"], options, 0)
    (length,) = np.frombuffer(blob[:8], "<u8")
    model = onnx.ModelProto()
    model.ParseFromString(blob[8:8 + int(length)])
    apart = {t.name: t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer}
    assert sum(apart.values()) == 1 and apart["shape"] is False
    x = np.random.RandomState(1).uniform(-1, 1, (1, 32, 8, 8)).astype(np.float32)
    want = ort.InferenceSession(source, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    engine = runtime.load(memoryview(blob).toreadonly(), ["x"], ["y"], options, 0)
    got = np.empty_like(want)
    engine.run([TensorRef(x.ctypes.data, x.shape, x.dtype)],
               [TensorRef(got.ctypes.data, got.shape, got.dtype)], 0)
    assert rel_err(got, want) < 1e-5


def test_cpu_engines_are_keyed_by_the_cpu_and_the_host_fallback_is_portable():
    from mxtrt_backend.engine.ort import OrtRuntime, cpu_key
    from mxtrt_backend.engine.staged import StagedOrtRuntime

    assert OrtRuntime().device_key(0) == cpu_key() == cpu_key()
    assert cpu_key().startswith("cpu-") and cpu_key() != "cpu"
    assert StagedOrtRuntime().device_key(0) == "host"
    assert OrtRuntime(portable=True).device_key(0) == "cpu"


def wide_net() -> mx.sym.Symbol:
    """Weights of tens of KiB: stored apart from the engine's graph, mapped from cache files."""
    x = mx.sym.Convolution(mx.sym.var("data"), num_filter=32, kernel=(3, 3), pad=(1, 1), name="c1")
    x = mx.sym.Activation(x, act_type="relu", name="r1")
    x = mx.sym.Convolution(x, num_filter=32, kernel=(3, 3), pad=(1, 1), name="c2")
    return mx.sym.FullyConnected(mx.sym.Flatten(x), num_hidden=10, name="fc")


def mapped_files(folder) -> set[str]:
    """The files of ``folder`` this process has memory-mapped."""
    with open("/proc/self/maps") as maps:
        return {line.split(maxsplit=5)[-1].strip() for line in maps if str(folder) in line}


def test_an_engine_from_the_cache_maps_its_weights_from_the_file_and_keeps_that_file(
        isolated_cache):
    """Read from disk, the engine's weights are mapped from the cache file, not copied. The
    running engine keeps the file it checked: deleting the entry, or renaming another file over
    its path, changes nothing for it."""
    sym, shape = wide_net(), (2, 16, 8, 8)
    args, aux = random_params(sym, {"data": shape})
    x = np.random.RandomState(0).uniform(-1, 1, shape).astype(np.float32)
    ref = forward(sym, args, aux, {"data": x})[0]
    part = sym.optimize_for("TensorRT", args, aux, ctx=mx.cpu())
    assert rel_err(forward(part, args, aux, {"data": x})[0], ref) < 1e-4  # built, then stored
    ENGINES.clear_memory()  # as in a new process
    ex = part.bind(mx.cpu(), dict(args, data=mx.nd.array(x)), aux_states=aux, grad_req="null")
    ex.forward(is_train=False)
    assert rel_err(ex.outputs[0].asnumpy(), ref) < 1e-4
    assert ENGINES.lookups["disk"] == 1
    (entry,) = isolated_cache.glob("*.engine")
    assert str(entry) in mapped_files(isolated_cache)
    data = entry.read_bytes()
    tmp = isolated_cache / "other.tmp"
    tmp.write_bytes(data[:len(data) // 2] + bytes(len(data) - len(data) // 2))  # zeroed weights
    tmp.rename(entry)
    ex.forward(is_train=False)
    assert rel_err(ex.outputs[0].asnumpy(), ref) < 1e-4
    entry.unlink()
    ex.forward(is_train=False)
    assert rel_err(ex.outputs[0].asnumpy(), ref) < 1e-4


def test_weights_are_handed_over_when_onnx_runtime_cannot_map_them(tmp_path, caplog):
    """A region ONNX Runtime cannot read the weights from (here: an empty file), or one whose
    weights would not be aligned, leaves the engine to copy them; same answer."""
    import logging
    import os

    from mxtrt_backend.engine import FileRegion, TensorRef
    from mxtrt_backend.engine.ort import OrtRuntime

    source = conv_reshape_graph()
    runtime, options = OrtRuntime(), resolve({}, environ={})
    blob = runtime.build(source, ["x"], ["y"], options, 0)
    x = np.random.RandomState(1).uniform(-1, 1, (1, 32, 8, 8)).astype(np.float32)
    want = ort.InferenceSession(source, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    for offset, says in ((0, True), (1, False)):
        caplog.clear()
        region = FileRegion(os.open(empty, os.O_RDONLY), offset)
        with caplog.at_level(logging.INFO, logger="mxtrt"):
            engine = runtime.load(blob, ["x"], ["y"], options, 0, region)
        assert ("did not map the engine's weights" in caplog.text) is says
        got = np.empty_like(want)
        engine.run([TensorRef(x.ctypes.data, x.shape, x.dtype)],
                   [TensorRef(got.ctypes.data, got.shape, got.dtype)], 0)
        assert rel_err(got, want) < 1e-5
