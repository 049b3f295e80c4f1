"""`export-triton`: the repository's config.pbtxt parses as Triton's ModelConfig and names files
that exist; the CPU repository's model.onnx (ONNX Runtime) equals plain MXNet at any batch; a
graph that does not convert whole becomes a Python-backend model that a real tritonserver
serves with the right answers."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as httpclient
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

from helpers import (NET_OUTPUT, NET_SAMPLE, forward, random_params, reference, rel_err, start_server,
                     tritonserver_command, zoo_checkpoint)

MODEL = "mobilenet0.25"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return zoo_checkpoint(tmp_path_factory.mktemp("checkpoint"))


def export(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mxtrt_backend", "export-triton", "--ctx", "cpu",
                           *args], capture_output=True, text=True, timeout=300)


def parsed_config(folder: Path) -> pb.ModelConfig:
    """config.pbtxt as Triton reads it; every file it names must exist."""
    cfg = text_format.Parse((folder / "config.pbtxt").read_text(), pb.ModelConfig())
    assert cfg.name == folder.name
    assert (folder / "1" / cfg.default_model_filename).is_file()
    return cfg


def test_cpu_repository_is_one_onnx_model_equal_to_mxnet(checkpoint, tmp_path):
    done = export(checkpoint, "0", "--shape", "3,32,32", "--out", str(tmp_path / "repo"),
                  "--max-batch-size", "16", "--instances", "2", "--max-queue-delay-us", "500")
    assert done.returncode == 0, done.stderr
    folder = tmp_path / "repo" / MODEL
    cfg = parsed_config(folder)
    assert cfg.backend == "onnxruntime" and cfg.default_model_filename == "model.onnx"
    assert cfg.max_batch_size == 16
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 500
    assert [(i.name, i.data_type, list(i.dims)) for i in cfg.input] == \
        [("data", pb.TYPE_FP32, list(NET_SAMPLE))]
    assert [(o.name, o.data_type, list(o.dims)) for o in cfg.output] == \
        [(NET_OUTPUT, pb.TYPE_FP32, [10])]
    assert [(g.kind, g.count) for g in cfg.instance_group] == \
        [(pb.ModelInstanceGroup.KIND_CPU, 2)]
    assert sorted(p.name for p in (folder / "1").iterdir()) == ["model.onnx"]

    session = ort.InferenceSession(str(folder / "1" / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    x = np.random.RandomState(2).uniform(-1, 1, (16, *NET_SAMPLE)).astype(np.float32)
    for batch in (1, 5, 16):  # one model for every batch the batcher forms
        out = session.run([NET_OUTPUT], {"data": x[:batch]})[0]
        ref = reference(checkpoint, x[:batch])
        assert out.shape == ref.shape and rel_err(out, ref) < 1e-4


def test_gpu_config_names_a_tensorrt_plan_and_gpu_instance_groups():
    from mxtrt_backend.cli import Device
    from mxtrt_backend.predictor import Signature, TensorSpec
    from mxtrt_backend.serve import ModelSettings
    from mxtrt_backend.triton_repo import model_config

    sig = Signature((TensorSpec("data", np.dtype(np.float16), (3, 8, 8)),),
                    (TensorSpec("out", np.dtype(np.float32), (10,)),))
    gpus = (Device("gpu", 0), Device("gpu", 0), Device("gpu", 2), Device("gpu", 2))
    settings = ModelSettings("m", 0, {}, {}, gpus, 32, 100, None)
    cfg = model_config("m", sig, settings, "tensorrt_plan", "model.plan")
    again = text_format.Parse(text_format.MessageToString(cfg), pb.ModelConfig())
    assert again.platform == "tensorrt_plan" and not again.backend
    assert again.input[0].data_type == pb.TYPE_FP16
    assert [(g.kind, g.count, list(g.gpus)) for g in again.instance_group] == \
        [(pb.ModelInstanceGroup.KIND_GPU, 2, [0, 2])]


def test_partial_graph_is_a_python_backend_model_that_tritonserver_serves(checkpoint, tmp_path):
    repo = tmp_path / "repo"
    done = export(checkpoint, "0", "--shape", "3,32,32", "--out", str(repo), "--name", "partial",
                  "--max-batch-size", "4", "-o", "exclude_ops=Pooling")
    assert done.returncode == 0, done.stderr
    assert "Python-backend model because" in done.stdout and "Pooling" in done.stdout
    folder = repo / "partial"
    cfg = parsed_config(folder)
    assert cfg.backend == "python" and cfg.default_model_filename == "model.py"
    assert {"model-symbol.json", "model-0000.params"} <= {p.name for p in (folder / "1").iterdir()}
    assert "mxnet==1.9.1" in (folder / "requirements.txt").read_text()

    command, env = tritonserver_command(repo, tmp_path)
    env["MXTRT_CACHE_DIR"] = str(tmp_path / "cache")
    server = start_server(command, tmp_path, env)
    try:
        server.wait_ready("partial")
        x = np.random.RandomState(3).uniform(-1, 1, (3, *NET_SAMPLE)).astype(np.float32)
        with httpclient.InferenceServerClient(server.http_url, network_timeout=30) as client:
            data = httpclient.InferInput("data", list(x.shape), "FP32")
            data.set_data_from_numpy(x)
            out = client.infer("partial", [data]).as_numpy(NET_OUTPUT)
        ref = reference(checkpoint, x)
        assert out.shape == ref.shape and rel_err(out, ref) < 1e-4
    finally:
        server.stop()


def test_cli_errors_are_one_line_and_nothing_foreign_is_overwritten(checkpoint, tmp_path):
    done = export(checkpoint, "0", "--out", str(tmp_path / "repo"))
    assert done.returncode == 2 and "needs its shape per sample" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "repo").exists()
    mine = tmp_path / "repo" / MODEL / "notes.txt"
    mine.parent.mkdir(parents=True)
    mine.write_text("keep me")
    done = export(checkpoint, "0", "--shape", "3,32,32", "--out", str(tmp_path / "repo"))
    assert done.returncode == 2 and "is no Triton model folder" in done.stderr
    assert "Traceback" not in done.stderr and mine.read_text() == "keep me"


def test_label_input_is_left_out_and_the_onnx_model_still_equals_mxnet(tmp_path):
    """A Module-style checkpoint: SoftmaxOutput's softmax_label is no input of the repository."""
    import mxnet as mx

    data = mx.sym.Variable("data")
    net = mx.sym.FullyConnected(mx.sym.Activation(mx.sym.FullyConnected(
        data, num_hidden=16, name="fc1"), act_type="relu"), num_hidden=5, name="fc2")
    sym = mx.sym.SoftmaxOutput(net, name="softmax")
    args, aux = random_params(sym, {"data": (2, 12), "softmax_label": (2,)})
    prefix = str(tmp_path / "mlp")
    mx.model.save_checkpoint(prefix, 3, sym, args, aux)
    done = export(prefix, "3", "--shape", "12", "--out", str(tmp_path / "repo"))
    assert done.returncode == 0, done.stderr
    folder = tmp_path / "repo" / "mlp"
    cfg = parsed_config(folder)
    assert cfg.backend == "onnxruntime"
    assert [i.name for i in cfg.input] == ["data"]
    assert [(o.name, list(o.dims)) for o in cfg.output] == [("softmax_output", [5])]
    x = np.random.RandomState(4).uniform(-1, 1, (6, 12)).astype(np.float32)
    session = ort.InferenceSession(str(folder / "1" / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    out = session.run(["softmax_output"], {"data": x})[0]
    ref = forward(sym, args, aux, {"data": x, "softmax_label": np.zeros(6, np.float32)})[0]
    assert rel_err(out, ref) < 1e-4
