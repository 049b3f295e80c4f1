"""`serve`: a real tritonserver (PyTriton) on loopback, real tritonclient HTTP and gRPC clients.

The server runs MXNet + the TensorRT backend (ONNX Runtime on mx.cpu()); every answer is
compared, sample by sample, with plain unfused MXNet on the same checkpoint.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from helpers import (NET_OUTPUT, NET_SAMPLE, alive, descendants, free_ports, reference, rel_err,
                     serve_command, start_server, zoo_checkpoint)


MODEL = "mobilenet0.25"
MAX_BATCH = 8
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return zoo_checkpoint(tmp_path_factory.mktemp("checkpoint"))


@pytest.fixture(scope="module")
def samples(checkpoint):
    x = np.random.RandomState(1).uniform(-1, 1, (32, *NET_SAMPLE)).astype(np.float32)
    return x, reference(checkpoint, x)


@pytest.fixture(scope="module")
def server(checkpoint, tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve")
    env = dict(os.environ, MXTRT_CACHE_DIR=str(folder / "cache"))
    srv = start_server(serve_command(checkpoint, "0", "--ctx", "cpu", "--shape",
                                     ",".join(map(str, NET_SAMPLE)),
                                     "--max-batch-size", str(MAX_BATCH), "--instances", "2",
                                     "--max-queue-delay-us", "2000",
                                     "--log-file", str(folder / "triton.log")), folder, env)
    try:
        srv.wait_ready(MODEL)
        yield srv
    finally:
        srv.stop()


def _http_infer(client, x: np.ndarray, model: str = MODEL, dtype: str = "FP32") -> np.ndarray:
    data = httpclient.InferInput("data", list(x.shape), dtype)
    data.set_data_from_numpy(x)
    return client.infer(model, [data]).as_numpy(NET_OUTPUT)


def _grpc_infer(client, x: np.ndarray, model: str = MODEL) -> np.ndarray:
    data = grpcclient.InferInput("data", list(x.shape), "FP32")
    data.set_data_from_numpy(x)
    return client.infer(model, [data], client_timeout=30).as_numpy(NET_OUTPUT)


def _assert_rows_match(out: np.ndarray, ref: np.ndarray) -> None:
    assert out.shape == ref.shape
    for row, (o, r) in enumerate(zip(out, ref)):
        assert rel_err(o, r) < TOLERANCE, f"sample {row}: rel err {rel_err(o, r)}"


def test_http_and_grpc_answers_equal_plain_mxnet(server, samples):
    x, ref = samples
    with httpclient.InferenceServerClient(server.http_url, network_timeout=30) as client:
        assert client.is_server_live() and client.is_server_ready()
        meta = client.get_model_metadata(MODEL)
        assert [i["name"] for i in meta["inputs"]] == ["data"]
        assert meta["inputs"][0]["shape"] == [-1, *NET_SAMPLE]
        assert [o["name"] for o in meta["outputs"]] == [NET_OUTPUT]
        for batch in (1, 3, MAX_BATCH):  # 3 runs as chunks 2 + 1 on CPU
            _assert_rows_match(_http_infer(client, x[:batch]), ref[:batch])
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        assert client.is_server_ready()
        for batch in (1, 5):
            _assert_rows_match(_grpc_infer(client, x[8:8 + batch]), ref[8:8 + batch])


def test_dynamic_batching_batches_concurrent_clients_and_every_answer_is_right(server, samples):
    x, ref = samples
    clients, per_client = 8, 50
    with httpclient.InferenceServerClient(server.http_url) as stats_client:
        before = stats_client.get_inference_statistics(MODEL)["model_stats"][0]
    wrong: list[str] = []
    lock = threading.Lock()

    def one_client(c: int) -> int:
        use_grpc = c % 2 == 1
        client = (grpcclient.InferenceServerClient(server.grpc_url) if use_grpc else
                  httpclient.InferenceServerClient(server.http_url, network_timeout=30))
        done = 0
        try:
            for i in range(per_client):
                k = (c * per_client + i) % len(x)
                out = (_grpc_infer if use_grpc else _http_infer)(client, x[k:k + 1])
                if rel_err(out[0], ref[k]) >= TOLERANCE:
                    with lock:
                        wrong.append(f"client {c} request {i}: rel err {rel_err(out[0], ref[k])}")
                done += 1
        finally:
            client.close()
        return done

    with ThreadPoolExecutor(clients) as pool:
        futures = [pool.submit(one_client, c) for c in range(clients)]
        completed = sum(f.result(timeout=50) for f in futures)
    assert completed == clients * per_client  # any failed request raised above
    assert not wrong, wrong[:5]
    with httpclient.InferenceServerClient(server.http_url) as stats_client:
        after = stats_client.get_inference_statistics(MODEL)["model_stats"][0]
    requests = after["inference_count"] - before["inference_count"]
    executions = after["execution_count"] - before["execution_count"]
    assert requests == clients * per_client
    assert after["inference_stats"]["fail"]["count"] == before["inference_stats"]["fail"]["count"]
    assert 0 < executions < requests, (executions, requests)


@pytest.mark.parametrize("case", ["shape", "dtype", "missing", "batch", "model"])
def test_bad_request_gets_a_clear_error_and_the_server_keeps_serving(server, samples, case):
    x, ref = samples
    expected = {"shape": "unexpected shape for input 'data'", "dtype": "data-type is 'FP64'",
                "missing": "missing required input(s) ['data']",
                "batch": f"batch-size must be <= {MAX_BATCH}", "model": "unknown model"}[case]
    with httpclient.InferenceServerClient(server.http_url, network_timeout=30) as client:
        with pytest.raises(InferenceServerException) as caught:
            if case == "shape":
                _http_infer(client, x[:1, :, :16])
            elif case == "dtype":
                _http_infer(client, x[:1].astype(np.float64), dtype="FP64")
            elif case == "missing":
                client.infer(MODEL, [])
            elif case == "batch":
                _http_infer(client, np.concatenate([x[:MAX_BATCH], x[:1]]))
            else:
                _http_infer(client, x[:1], model="no_such_model")
        assert expected in str(caught.value)
        _assert_rows_match(_http_infer(client, x[2:4]), ref[2:4])
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        if case in ("shape", "model"):
            with pytest.raises(InferenceServerException) as caught:
                _grpc_infer(client, x[:1, :, :16] if case == "shape" else x[:1],
                            model=MODEL if case == "shape" else "no_such_model")
            assert expected in str(caught.value)
        _assert_rows_match(_grpc_infer(client, x[4:5]), ref[4:5])


def test_serves_a_converted_folder_and_sigterm_ends_it_and_all_its_processes(
        checkpoint, samples, tmp_path):
    from mxtrt_backend.convert import convert

    x, ref = samples
    convert(checkpoint, 0, str(tmp_path / "converted"), {"data": (1, *NET_SAMPLE)})
    env = dict(os.environ, MXTRT_CACHE_DIR=str(tmp_path / "cache"))
    srv = start_server(serve_command(str(tmp_path / "converted"), "--ctx", "cpu", "--shape",
                                     ",".join(map(str, NET_SAMPLE)), "--max-batch-size", "4",
                                     "--name", "converted",
                                     "--log-file", str(tmp_path / "triton.log")), tmp_path, env)
    try:
        srv.wait_ready("converted")
        with grpcclient.InferenceServerClient(srv.grpc_url) as client:
            data = grpcclient.InferInput("data", [3, *NET_SAMPLE], "FP32")
            data.set_data_from_numpy(x[:3])
            _assert_rows_match(client.infer("converted", [data]).as_numpy(NET_OUTPUT), ref[:3])
        children = descendants(srv.process.pid)
        assert any("tritonserver" in _cmdline(p) for p in children)
        start_time = time.monotonic()
        srv.process.send_signal(signal.SIGTERM)
        assert srv.process.wait(timeout=15) == 0, srv.output()
        took = time.monotonic() - start_time
        deadline = time.monotonic() + 5
        while any(alive(p) for p in children) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [p for p in children if alive(p)], "processes left after SIGTERM"
        assert took < 10, f"shutdown took {took:.1f} s"
        assert "stopping" in srv.output()
    finally:
        srv.stop()


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@pytest.mark.parametrize("args, message", [
    (["{prefix}-missing", "0", "--shape", "3,32,32"], "no checkpoint"),
    (["{prefix}", "0"], "needs its shape per sample"),
    (["{prefix}", "0", "--shape", "3,32,32", "--ctx", "tpu"], "'tpu' is not a context"),
    (["{prefix}", "0", "--shape", "3,32,32", "--ctx", "gpu:0,0"], "names a GPU twice"),
    (["{prefix}", "0", "--shape", "3,32,32", "-o", "precison=fp16"], "did you mean 'precision'"),
    (["{prefix}", "0", "--shape", "foo:3,32,32"], "has no input 'foo'"),
    (["{prefix}", "0", "--shape", "3,32,32", "--http-port", "{busy}"], "choose another port"),
    (["{prefix}", "0", "--shape", "3,32,32", "--name", "my model"], "does not accept"),
])
def test_cli_errors_are_one_line_without_traceback(checkpoint, args, message):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        argv = [a.format(prefix=checkpoint, busy=port) for a in args]
        ports = [str(p) for p in free_ports(3)]
        # A free port of each kind first; a case's own --http-port comes later and wins.
        done = subprocess.run([sys.executable, "-m", "mxtrt_backend", "serve", "--http-port",
                               ports[0], "--grpc-port", ports[1], "--metrics-port", ports[2],
                               *argv],
                              capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and message in errors[0], done.stderr
    assert "Traceback" not in done.stderr
