"""The TensorRT runtime as far as a machine without TensorRT or a GPU can check it: runtime
selection and its errors, cache keys and files, the dynamic-batch model, blob handling."""
from __future__ import annotations

import json
import logging
import subprocess
import sys

import mxnet as mx
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from mxtrt_backend import op
from mxtrt_backend.config import OptionError, resolve
from mxtrt_backend.engine import RUNTIMES, cuda, runtime_for, trt
from mxtrt_backend.engine.ort import OrtRuntime
from mxtrt_backend.engine.staged import StagedEngine

from helpers import DATA, data_subgraph, forward, random_params, rel_err

NO_GPU = trt.probe().cuda_problem is not None
needs_no_gpu = pytest.mark.skipif(not NO_GPU, reason="checks the behaviour without a usable GPU")


@pytest.fixture
def fresh_warnings(monkeypatch):
    monkeypatch.setattr(trt, "_warned", set())


def test_importing_the_module_does_not_import_tensorrt():
    code = "import sys, mxtrt_backend.engine.trt; print('tensorrt' in sys.modules)"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "False"


@pytest.mark.skipif(trt.tensorrt_version() is not None, reason="TensorRT is installed")
def test_type_stubs_alone_do_not_count_as_tensorrt():
    # tensorrt-stubs installs an importable, empty `tensorrt` namespace package.
    import tensorrt  # noqa: F401

    assert trt.tensorrt_version() is None


@needs_no_gpu
def test_gpu_context_without_gpu_raises_once_warned_error_naming_the_fix(caplog, fresh_warnings):
    with caplog.at_level(logging.WARNING, logger="mxtrt"):
        for _ in range(2):
            with pytest.raises(trt.GpuUnavailable) as err:
                runtime_for("gpu")
    message = str(err.value)
    assert "pip install tensorrt" in message and "mxnet-cu112" in message and "mx.cpu()" in message
    assert NO_GPU and trt.probe().cuda_problem in message
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].getMessage() == message


@needs_no_gpu
def test_creating_the_op_on_a_gpu_context_fails_cleanly(fresh_warnings):
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
    with pytest.raises(trt.GpuUnavailable, match="pip install tensorrt"):
        op.create_state(attrs, "gpu", 0, shapes, [np.dtype(np.float32)] * len(shapes))


def test_unknown_device_names_the_ones_served():
    with pytest.raises(RuntimeError, match="runs on cpu and gpu contexts"):
        runtime_for("tpu")


def test_cuda_probe_reports_a_reason_when_no_gpu_is_usable():
    found = trt.probe()
    assert (found.gpus > 0) == (found.cuda_problem is None)


# --- cache keys and files


class LabelledOrt(OrtRuntime):
    """ONNX Runtime standing in for another runtime version or device in the cache key."""

    def __init__(self, version: str, device: str) -> None:
        self._version, self._device = version, device

    def version(self) -> str:
        return self._version

    def device_key(self, device_id: int) -> str:
        return self._device


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


class BatchRangeOrt(OrtRuntime):
    """ONNX Runtime keyed and built as TrtRuntime does with batch_range (batch-agnostic model)."""

    def model_key(self, onnx_bytes, data_names, options):
        return trt.TrtRuntime().model_key(onnx_bytes, data_names, options)

    def build(self, onnx_bytes, input_names, output_names, options, device_id):
        dynamic = trt.with_dynamic_batch(onnx_bytes, input_names) if options.batch_range else onnx_bytes
        return super().build(dynamic, input_names, output_names, options, device_id)


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


def test_timing_cache_is_per_tensorrt_version_and_gpu_beside_the_engines(tmp_path):
    path = trt.timing_cache_path(str(tmp_path), "10.0", "GPU-A sm_80")
    assert path.parent == tmp_path and path.suffix == ".trtcache"
    assert path == trt.timing_cache_path(str(tmp_path), "10.0", "GPU-A sm_80")
    assert path != trt.timing_cache_path(str(tmp_path), "10.1", "GPU-A sm_80")
    assert path != trt.timing_cache_path(str(tmp_path), "10.0", "GPU-A sm_86")


def test_timing_cache_store_merges_with_what_is_on_disk_and_is_atomic(tmp_path):
    path = tmp_path / "sub" / "timing.trtcache"
    seen = []

    def merged(new: bytes):
        def combine(on_disk: bytes | None) -> bytes:
            seen.append(on_disk)
            return (on_disk or b"") + new
        return combine

    trt.store_timing_cache(path, merged(b"A"))
    trt.store_timing_cache(path, merged(b"B"))
    assert seen == [None, b"A"]
    assert path.read_bytes() == b"AB"

    def failing(on_disk: bytes | None) -> bytes:
        raise OSError("disk full")

    trt.store_timing_cache(path, failing)  # logged, not raised
    assert path.read_bytes() == b"AB"
    assert sorted(p.name for p in path.parent.iterdir()) == ["timing.trtcache", "timing.trtcache.lock"]


def test_timing_cache_in_an_unwritable_place_warns_and_goes_on(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with caplog.at_level(logging.WARNING, logger="mxtrt"):
        trt.store_timing_cache(blocker / "timing.trtcache", lambda old: b"x")
    assert "could not write the TensorRT timing cache" in caplog.text


def test_calibration_cache_file_depends_on_model_and_data(tmp_path):
    a = trt.calibration_cache_path(str(tmp_path), b"model", "mxtrt-calibration:1")
    assert a == trt.calibration_cache_path(str(tmp_path), b"model", "mxtrt-calibration:1")
    assert a != trt.calibration_cache_path(str(tmp_path), b"model", "mxtrt-calibration:2")
    assert a != trt.calibration_cache_path(str(tmp_path), b"other", "mxtrt-calibration:1")


# --- batch_range: the model TensorRT parses, and the profile


def test_dynamic_batch_model_runs_any_batch_like_the_static_one():
    graph = data_subgraph()
    dynamic = trt.with_dynamic_batch(graph.onnx_bytes, graph.input_names)
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
    shapes = trt.profile_shapes({"data": (8, 3, 32, 32), "mask": (8, 5)}, (1, 4, 16))
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
    assert trt.input_shapes(graph.onnx_bytes, graph.input_names) == {graph.input_names[0]: DATA}


# --- blobs and build preconditions (no TensorRT needed)


def test_blob_from_a_rejected_subgraph_loads_as_host_onnx_runtime():
    graph = data_subgraph()
    opts = resolve({}, environ={})
    engine = trt.TrtRuntime().load(b"ORT\0" + graph.onnx_bytes, graph.input_names,
                                   graph.output_names, opts, 0)
    assert isinstance(engine, StagedEngine)


def test_blob_of_unknown_origin_is_refused():
    with pytest.raises(ValueError, match="not a serialized mxtrt TensorRT engine"):
        trt.TrtRuntime().load(b"junk", ["x"], ["y"], resolve({}, environ={}), 0)


def test_int8_without_calibration_is_an_option_error_before_any_build():
    opts = resolve({"precision": "int8"}, environ={})
    with pytest.raises(OptionError, match="'int8' needs calibration: set calibration_data"):
        trt.TrtRuntime().build(b"", ["x"], ["y"], opts, 0)


def test_cuda_runtime_errors_are_typed_and_readable():
    try:
        count = cuda.device_count()
    except cuda.CudaError as err:
        assert "cudaGetDeviceCount" in str(err) or "libcudart" in str(err)
    else:
        assert count >= 0
