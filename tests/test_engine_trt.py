"""The TensorRT runtime as far as a machine without TensorRT or a GPU can check it: which runtime
GPU contexts get and its errors, cache keys and files, engines per device, the batch-range model
and its shape ranges, the fallback recorded in the cache. The TensorRT calls themselves
(engine/trt_build.py, engine/trt.py) are checked by .ci/typecheck against tensorrt-stubs."""
from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import textwrap

import mxnet as mx
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from mxtrt_backend import op
from mxtrt_backend.config import OptionError, resolve
from mxtrt_backend.engine import (RUNTIMES, BuildRejected, Serialized, TensorRef, cuda, gpu,
                                  onnx_shapes, runtime_for, trt, trt_build)
from mxtrt_backend.engine.cache import ENGINES, unpack
from mxtrt_backend.engine.ort import OrtRuntime, graph_of
from mxtrt_backend.engine.staged import StagedEngine, StagedOrtRuntime

from helpers import DATA, data_subgraph, forward, op_state, random_params, rel_err

NO_GPU = gpu.probe().cuda_problem is not None
needs_no_gpu = pytest.mark.skipif(not NO_GPU, reason="checks the behaviour without a usable GPU")


def test_importing_the_modules_does_not_import_tensorrt():
    code = ("import sys, mxtrt_backend.engine.trt, mxtrt_backend.engine.trt_build, "
            "mxtrt_backend.engine.gpu; print('tensorrt' in sys.modules)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "False"


@pytest.mark.skipif(gpu.tensorrt_version() is not None, reason="TensorRT is installed")
def test_type_stubs_alone_do_not_count_as_tensorrt():
    # tensorrt-stubs installs an importable, empty `tensorrt` namespace package.
    import tensorrt  # noqa: F401

    assert gpu.tensorrt_version() is None


# --- which runtime GPU contexts get


@pytest.mark.parametrize("found, mxnet_cuda, runtime, words", [
    (gpu.GpuProbe("10.13.0", 2, None), True, trt.TrtRuntime.name, "TensorRT 10.13.0"),
    (gpu.GpuProbe(None, 1, None), True, StagedOrtRuntime.name, "pip install tensorrt"),
    (gpu.GpuProbe("10.13.0", 0, "CUDA sees no GPU"), True, None, "CUDA sees no GPU"),
    (gpu.GpuProbe("10.13.0", 2, None), False, None, "pip install mxnet-cu112"),
])
def test_gpu_contexts_get_tensorrt_the_staged_fallback_or_a_reason(found, mxnet_cuda, runtime,
                                                                   words):
    support = gpu.gpu_support(found, mxnet_cuda)
    assert support.runtime == runtime
    assert words in support.detail


GPU_TWICE = textwrap.dedent("""
    import logging, sys
    logging.basicConfig(level=logging.WARNING, format="W %(message)s", stream=sys.stdout)
    from mxtrt_backend.engine import gpu, runtime_for
    for _ in range(2):
        try:
            runtime_for("gpu")
        except gpu.GpuUnavailable as err:
            print("E", err)
    print("P", gpu.probe().cuda_problem)
""")


@needs_no_gpu
def test_gpu_context_without_gpu_raises_once_warned_error_naming_the_fix():
    # A fresh process: what was warned is remembered for the process.
    run = subprocess.run([sys.executable, "-c", GPU_TWICE], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    errors = [line[2:] for line in lines if line.startswith("E ")]
    warnings = [line[2:] for line in lines if line.startswith("W ")]
    (problem,) = [line[2:] for line in lines if line.startswith("P ")]
    assert len(errors) == 2 and errors[0] == errors[1]
    message = errors[0]
    assert "pip install tensorrt" in message and "mxnet-cu112" in message and "mx.cpu()" in message
    assert problem in message
    assert warnings == [message]


@needs_no_gpu
def test_creating_the_op_on_a_gpu_context_fails_cleanly():
    """What MXNet's createOpState callback sees for ctx=mx.gpu(0) on this machine: an error with
    the fix, which the callback turns into an MXNetError instead of a crash."""
    x = mx.sym.Convolution(mx.sym.var("data"), num_filter=2, kernel=(1, 1), name="c")
    sym = mx.sym.Activation(x, act_type="relu", name="r")
    args = {"c_weight": mx.nd.ones((2, 3, 1, 1)), "c_bias": mx.nd.zeros(2)}
    part = sym.optimize_for("TensorRT", args, {}, ctx=mx.cpu())
    node = next(n for n in json.loads(part.tojson())["nodes"] if n["op"] == "_TensorRT")
    attrs = dict(node["attrs"], subgraph_sym_json=json.dumps(node["subgraphs"][0]))
    shapes = [(1, 3, 4, 4) if n.startswith("data") else (2, 3, 1, 1) if "weight" in n else (2,)
              for n in (v["name"] for v in node["subgraphs"][0]["nodes"] if v["op"] == "null")]
    with pytest.raises(gpu.GpuUnavailable, match="pip install tensorrt"):
        op.create_state(attrs, "gpu", 0, shapes, [np.dtype(np.float32)] * len(shapes))


def test_unknown_device_names_the_ones_served():
    with pytest.raises(RuntimeError, match="runs on cpu and gpu contexts"):
        runtime_for("tpu")


def test_cuda_reports_its_gpus_or_the_reason_there_are_none():
    try:
        count = cuda.device_count()
    except cuda.CudaError as err:
        # The user sees CUDA's own reason, with the failing call or the missing library named.
        assert re.search(r"cudaGetDeviceCount failed with CUDA error \d+: \w|libcudart", str(err))
        assert gpu.probe() == gpu.GpuProbe(gpu.tensorrt_version(), 0, str(err))
        return
    assert gpu.probe().gpus == count
    for device in range(count):
        assert re.fullmatch(r".+ sm_\d{2,3}", cuda.device_key(device))


# --- cache keys, and engines per device


class LabelledOrt(OrtRuntime):
    """ONNX Runtime standing in for another runtime version or device in the cache key."""

    def __init__(self, version: str, devices: dict[int, str] | str) -> None:
        self._version, self._devices = version, devices

    def version(self) -> str:
        return self._version

    def device_key(self, device_id: int) -> str:
        return self._devices if isinstance(self._devices, str) else self._devices[device_id]


def _bind_and_run(**options: str) -> np.ndarray:
    x = mx.sym.Convolution(mx.sym.var("data"), num_filter=2, kernel=(1, 1), name="c")
    sym = mx.sym.Activation(x, act_type="relu", name="r")
    args = {"c_weight": mx.nd.array(np.full((2, 3, 1, 1), 0.5)), "c_bias": mx.nd.zeros(2)}
    part = sym.optimize_for("TensorRT", args, {}, ctx=mx.cpu(), **options)
    ex = part.bind(mx.cpu(), dict(args, data=mx.nd.ones((1, 3, 2, 2))), grad_req="null")
    ex.forward(is_train=False)
    return ex.outputs[0].asnumpy()


def test_engine_cache_key_changes_with_runtime_version_device_and_engine_options(
        monkeypatch, isolated_cache):
    def engines() -> int:
        return len(list(isolated_cache.glob("*.engine")))

    def run(version: str, device: str, **options: str) -> int:
        monkeypatch.setitem(RUNTIMES, "cpu", lambda: LabelledOrt(version, device))
        np.testing.assert_allclose(_bind_and_run(**options), np.full((1, 2, 2, 2), 1.5), rtol=1e-6)
        return engines()

    assert run("10.0", "GPU-A sm_80") == 1
    assert run("10.0", "GPU-A sm_80") == 1                     # same inputs: same engine
    assert run("10.1", "GPU-A sm_80") == 2                     # TensorRT version
    assert run("10.0", "GPU-B sm_86") == 3                     # GPU name / compute capability
    assert run("10.0", "GPU-A sm_80", precision="fp16") == 4   # an engine option
    assert run("10.0", "GPU-A sm_80", batch_range="1,1,4") == 5
    assert run("10.0", "GPU-A sm_80", builder_optimization_level="1") == 6
    assert run("10.0", "GPU-A sm_80", max_workspace_size="4096") == 7
    # Options that do not change the engine reuse it.
    assert run("10.0", "GPU-A sm_80", min_subgraph_size="1", exclude_ops="Pooling") == 7


def test_devices_of_one_model_share_the_engine_file_and_each_loads_its_own(
        monkeypatch, isolated_cache):
    """Multi-GPU as far as a CPU can show it: op states on devices 0 and 1 (same GPU model) and
    2 (another model). 0 builds, 1 loads 0's file into its own engine, 2 builds its own."""
    devices = {0: "GPU-A sm_80", 1: "GPU-A sm_80", 2: "GPU-B sm_86"}
    monkeypatch.setitem(RUNTIMES, "cpu", lambda: LabelledOrt("10.0", devices))
    sym = mx.sym.FullyConnected(mx.sym.Activation(mx.sym.var("data"), act_type="tanh"),
                                num_hidden=3, name="fc")
    args, _ = random_params(sym, {"data": (2, 5)})
    part = sym.optimize_for("TensorRT", args, {}, ctx=mx.cpu())
    x = np.random.RandomState(0).uniform(-1, 1, (2, 5)).astype(np.float32)
    expected = forward(sym, args, {}, {"data": x})[0]
    shapes = {"data": (2, 5), "fc_weight": (3, 5), "fc_bias": (3,)}
    values = {"data": x, **{name: args[name].asnumpy() for name in ("fc_weight", "fc_bias")}}
    seen, engines = [], []
    with ENGINES.watch(lambda key, hit: seen.append((key, hit.source))):
        for device in (0, 1, 2):
            with op_state(part, shapes, device_id=device) as state:
                inputs = [values[name] for name in state.subgraph.source_names]
                out = np.zeros((2, 3), np.float32)
                op.run_state(state, [TensorRef(a.ctypes.data, a.shape, a.dtype) for a in inputs],
                             [TensorRef(out.ctypes.data, out.shape, out.dtype)], 0)
                assert rel_err(out, expected) < 1e-5
                engines.append(state.engine)
    assert [source for _, source in seen] == ["built", "disk", "built"]
    assert seen[0][0] == seen[1][0] != seen[2][0]
    assert len({id(engine) for engine in engines}) == 3
    assert len(list(isolated_cache.glob("*.engine"))) == 2


# --- batch_range: the model an engine is built from, and the shape ranges of its profile


class BatchRangeOrt(OrtRuntime):
    """Builds what TrtRuntime builds with batch_range, the model from the same
    ``onnx_shapes.build_input``, and keys it as TrtRuntime does, but runs it on ONNX Runtime:
    the TensorRT calls of the real build (``trt_build.build_plan``: parser, profile, builder)
    never run here. Their types are checked by .ci/typecheck against tensorrt-stubs."""

    def model_key(self, onnx_bytes, data_names, options):
        return trt.TrtRuntime().model_key(onnx_bytes, data_names, options)

    def build(self, onnx_bytes, input_names, output_names, options, device_id):
        model, _ = onnx_shapes.build_input(onnx_bytes, input_names, options.batch_range)
        return super().build(model, input_names, output_names, options, device_id)


@pytest.mark.parametrize("batch_range, engines", [("1,4,8", 1), ("", 2)])
def test_ops_of_other_batch_sizes_share_the_engine_with_batch_range(
        monkeypatch, isolated_cache, batch_range, engines):
    monkeypatch.setitem(RUNTIMES, "cpu", BatchRangeOrt)
    x = mx.sym.Convolution(mx.sym.var("data"), num_filter=2, kernel=(3, 3), pad=(1, 1), name="c")
    sym = mx.sym.FullyConnected(mx.sym.Activation(x, act_type="relu"), num_hidden=3, name="fc")
    args, _ = random_params(sym, {"data": (2, 3, 4, 4)})
    part = sym.optimize_for("TensorRT", args, {}, ctx=mx.cpu(), batch_range=batch_range)
    rng = np.random.RandomState(0)
    for batch in (2, 5):
        data = {"data": rng.uniform(-1, 1, (batch, 3, 4, 4)).astype(np.float32)}
        out, ref = forward(part, args, {}, data)[0], forward(sym, args, {}, data)[0]
        assert rel_err(out, ref) < 1e-5
    assert len(list(isolated_cache.glob("*.engine"))) == engines


def test_build_input_ranges_cover_the_batch_range_and_the_model_runs_all_of_it():
    graph = data_subgraph()
    (name,) = graph.input_names
    model, ranges = onnx_shapes.build_input(graph.onnx_bytes, graph.input_names, (1, 3, 6))
    assert ranges == {name: ((1, *DATA[1:]), (3, *DATA[1:]), (6, *DATA[1:]))}
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    for shape in ranges[name]:
        (out,) = session.run(None, {name: np.zeros(shape, np.float32)})
        assert out.shape[0] == shape[0]
    static, fixed = onnx_shapes.build_input(graph.onnx_bytes, graph.input_names, None)
    assert static == graph.onnx_bytes and fixed == {name: (DATA, DATA, DATA)}


def test_dynamic_batch_model_runs_any_batch_like_the_static_one():
    graph = data_subgraph()
    dynamic = onnx_shapes.with_dynamic_batch(graph.onnx_bytes, graph.input_names)
    model = onnx.load_from_string(dynamic)
    onnx.checker.check_model(model, full_check=True)
    (data,) = [vi for vi in model.graph.input if vi.name in graph.input_names]
    assert data.type.tensor_type.shape.dim[0].dim_param == "batch"
    rng = np.random.RandomState(0)
    static = ort.InferenceSession(graph.onnx_bytes, providers=["CPUExecutionProvider"])
    session = ort.InferenceSession(dynamic, providers=["CPUExecutionProvider"])
    x = rng.uniform(-1, 1, DATA).astype(np.float32)
    (ref,) = static.run(None, {graph.input_names[0]: x})
    for batch in (1, 2, 5):
        xb = np.concatenate([x] * 3)[:batch]
        (out,) = session.run(None, {graph.input_names[0]: xb})
        assert out.shape[0] == batch
        np.testing.assert_allclose(out[:min(batch, 2)], ref[:min(batch, 2)], rtol=1e-5, atol=1e-6)


def test_profile_shapes_vary_dim_0_only():
    shapes = onnx_shapes.profile_shapes({"data": (8, 3, 32, 32), "mask": (8, 5)}, (1, 4, 16))
    assert shapes == {"data": ((1, 3, 32, 32), (4, 3, 32, 32), (16, 3, 32, 32)),
                      "mask": ((1, 5), (4, 5), (16, 5))}


def test_with_batch_range_ops_of_other_batch_sizes_share_one_engine_key():
    small, large = data_subgraph((2, 3, 8, 8)), data_subgraph((5, 3, 8, 8))
    names = small.input_names
    ranged = resolve({"batch_range": "1,4,8"}, environ={})
    fixed = resolve({}, environ={})
    runtime = trt.TrtRuntime()
    assert runtime.model_key(small.onnx_bytes, names, ranged) == \
        runtime.model_key(large.onnx_bytes, names, ranged)
    assert runtime.model_key(small.onnx_bytes, names, fixed) != \
        runtime.model_key(large.onnx_bytes, names, fixed)
    assert OrtRuntime().model_key(small.onnx_bytes, names, ranged) != \
        OrtRuntime().model_key(large.onnx_bytes, names, ranged)


def test_input_shapes_read_from_the_model():
    graph = data_subgraph()
    assert onnx_shapes.input_shapes(graph.onnx_bytes, graph.input_names) == \
        {graph.input_names[0]: DATA}


# --- files beside the engines


def test_timing_cache_is_per_tensorrt_version_and_gpu_beside_the_engines(tmp_path):
    path = trt_build.timing_cache_path(str(tmp_path), "10.0", "GPU-A sm_80")
    assert path.parent == tmp_path and path.suffix == ".trtcache"
    assert path == trt_build.timing_cache_path(str(tmp_path), "10.0", "GPU-A sm_80")
    assert path != trt_build.timing_cache_path(str(tmp_path), "10.1", "GPU-A sm_80")
    assert path != trt_build.timing_cache_path(str(tmp_path), "10.0", "GPU-A sm_86")


def test_timing_cache_store_merges_with_what_is_on_disk_and_is_atomic(tmp_path):
    path = tmp_path / "sub" / "timing.trtcache"
    seen = []

    def merged(new: bytes):
        def combine(on_disk: bytes | None) -> bytes:
            seen.append(on_disk)
            return (on_disk or b"") + new
        return combine

    trt_build.store_timing_cache(path, merged(b"A"))
    trt_build.store_timing_cache(path, merged(b"B"))
    assert seen == [None, b"A"]
    assert path.read_bytes() == b"AB"

    def failing(on_disk: bytes | None) -> bytes:
        raise OSError("disk full")

    trt_build.store_timing_cache(path, failing)  # logged, not raised
    assert path.read_bytes() == b"AB"
    assert sorted(p.name for p in path.parent.iterdir()) == ["timing.trtcache", "timing.trtcache.lock"]


def test_timing_cache_in_an_unwritable_place_warns_and_goes_on(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with caplog.at_level(logging.WARNING, logger="mxtrt"):
        trt_build.store_timing_cache(blocker / "timing.trtcache", lambda old: b"x")
    assert "could not write the TensorRT timing cache" in caplog.text


def test_calibration_cache_file_depends_on_model_and_data(tmp_path):
    path = trt_build.calibration_cache_path
    a = path(str(tmp_path), b"model", "mxtrt-calibration:1")
    assert a == path(str(tmp_path), b"model", "mxtrt-calibration:1")
    assert a != path(str(tmp_path), b"model", "mxtrt-calibration:2")
    assert a != path(str(tmp_path), b"other", "mxtrt-calibration:1")


# --- the fallback: a rejected subgraph, recorded in the cache header


class RejectingOrt(OrtRuntime):
    """A runtime that rejects every graph, as TensorRT's parser rejects an op it lacks, with
    ONNX Runtime as its fallback (TrtRuntime's is ONNX Runtime staged through the host)."""

    name = "rejecting"

    def fallback(self):
        return OrtRuntime()

    def build(self, onnx_bytes, input_names, output_names, options, device_id):
        raise BuildRejected("the parser rejected op X")


def test_a_rejected_subgraph_runs_with_the_fallback_and_its_cache_entry_says_so(
        monkeypatch, isolated_cache, caplog):
    monkeypatch.setitem(RUNTIMES, "cpu", RejectingOrt)
    with caplog.at_level(logging.WARNING, logger="mxtrt"):
        np.testing.assert_allclose(_bind_and_run(), np.full((1, 2, 2, 2), 1.5), rtol=1e-6)
    assert "the parser rejected op X; this subgraph runs with onnxruntime instead" in caplog.text
    (path,) = isolated_cache.glob("*.engine")
    entry = unpack(path.read_bytes(), {"onnxruntime": ort.__version__})
    model, _ = graph_of(entry.data)  # an ONNX Runtime engine: an ONNX graph, weights
    assert entry.runtime == "onnxruntime" and model.graph.node
    ENGINES.clear_memory()  # a new process: the fallback's engine comes from disk, no build
    np.testing.assert_allclose(_bind_and_run(), np.full((1, 2, 2, 2), 1.5), rtol=1e-6)
    assert ENGINES.lookups == {"disk": 1}


def test_tensorrt_loads_its_fallbacks_entries_and_refuses_others():
    graph = data_subgraph()
    opts = resolve({}, environ={})
    staged = Serialized(graph.onnx_bytes, StagedOrtRuntime.name, ort.__version__)
    engine = trt.TrtRuntime().load_entry(staged, graph.input_names, graph.output_names, opts, 0)
    assert isinstance(engine, StagedEngine)
    with pytest.raises(ValueError, match="an engine of 'onnxruntime' cannot be loaded by 'tensorrt'"):
        trt.TrtRuntime().load_entry(staged._replace(runtime="onnxruntime"), ["x"], ["y"], opts, 0)


def test_int8_without_calibration_is_an_option_error_before_any_build():
    # Options are validated before anything is built: resolve itself refuses.
    with pytest.raises(OptionError, match="'int8' needs calibration: set calibration_iters"):
        resolve({"precision": "int8"}, environ={})
