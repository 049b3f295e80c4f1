"""Serving benchmark (not a test): `python benchmarks/serve.py` (CPU, about two minutes).

1. Through the server vs in-process: requests/s and p50/p99 latency of batch-1 requests from 1, 4
   and 16 concurrent clients, (a) calling a `Predictor` (the executor) directly in this process,
   (b) through `python -m mxtrt_backend serve` (Triton, dynamic batching) over HTTP and gRPC,
   measured one right after the other at each level, so machine load affects all alike.
2. Chunk sizes on CPU: the time of a batch of n on an engine made for n, padded to the next
   power of two, or split into power-of-two chunks (what `Predictor` does), from the same
   executors, with the engines each choice builds at start-up.
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import mxnet as mx
import numpy as np

import mxtrt_backend  # noqa: F401  registers the backend
from mxtrt_backend.predictor import Predictor, load_model, signature, split

NET = "resnet18_v1"
SAMPLE = (3, 224, 224)
HOST = "127.0.0.1"


def make_checkpoint(folder: str) -> str:
    net = mx.gluon.model_zoo.vision.get_model(NET)
    net.initialize(mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2))
    net.hybridize()
    net(mx.nd.zeros((1, *SAMPLE)))
    net.export(os.path.join(folder, NET), 0)
    return os.path.join(folder, NET)


def latencies(clients: int, total: int, connect: Callable[[], Callable[[int], object]]
              ) -> tuple[float, np.ndarray]:
    """Wall time and per-request latencies (ms) of ``total`` calls from ``clients`` threads;
    each thread makes its own connection first (tritonclient's HTTP client stays in the thread
    that made it), outside the timing."""
    per_client = total // clients
    times: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients + 1)

    def client(c: int) -> None:
        call = connect()
        call(0)
        barrier.wait()
        mine = []
        for i in range(per_client):
            start = time.perf_counter()
            call(c * per_client + i)
            mine.append((time.perf_counter() - start) * 1e3)
        with lock:
            times.extend(mine)

    with ThreadPoolExecutor(clients) as pool:
        futures = [pool.submit(client, c) for c in range(clients)]
        barrier.wait(timeout=120)
        start = time.perf_counter()
        for future in futures:
            future.result(timeout=600)
        wall = time.perf_counter() - start
    return wall, np.array(times)


def start_server(prefix: str, folder: str, max_batch: int) -> tuple[subprocess.Popen, int, int]:
    import socket

    import tritonclient.http as httpclient

    sockets = [socket.socket() for _ in range(3)]
    for s in sockets:
        s.bind((HOST, 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    process = subprocess.Popen(
        [sys.executable, "-m", "mxtrt_backend", "serve", prefix, "0", "--shape",
         ",".join(map(str, SAMPLE)), "--max-batch-size", str(max_batch), "--http-port",
         str(ports[0]), "--grpc-port", str(ports[1]), "--metrics-port", str(ports[2]),
         "--log-file", os.path.join(folder, "triton.log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=dict(os.environ, MXTRT_CACHE_DIR=os.path.join(folder, "cache")))
    deadline = time.monotonic() + 300
    with httpclient.InferenceServerClient(f"{HOST}:{ports[0]}") as client:
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if client.is_model_ready(NET):
                    return process, ports[0], ports[1]
            except Exception:  # noqa: BLE001 - not listening yet
                pass
            time.sleep(0.5)
    process.kill()
    raise SystemExit("the server did not become ready; see " + os.path.join(folder, "triton.log"))


def server_vs_direct(prefix: str, folder: str, total: int, max_batch: int) -> None:
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    model = load_model(prefix, 0)
    sig = signature(model, {"data": SAMPLE})
    output = sig.outputs[0].name
    direct = Predictor(model, sig, mx.cpu(), max_batch)
    x = np.random.RandomState(0).uniform(-1, 1, (64, 1, *SAMPLE)).astype(np.float32)
    process, http_port, grpc_port = start_server(prefix, folder, max_batch)
    print(f"== {NET}, batch-1 requests; server: --max-batch-size {max_batch}, 1 instance, "
          f"default queue delay; {total} requests per row")
    print(f"{'clients':>7}  {'path':<20}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'avg batch':>15}")
    try:
        stats = httpclient.InferenceServerClient(f"{HOST}:{http_port}")
        for clients in (1, 4, 16):
            def via_http() -> Callable[[int], object]:
                client = httpclient.InferenceServerClient(f"{HOST}:{http_port}",
                                                          network_timeout=120)

                def call(i: int) -> object:
                    data = httpclient.InferInput("data", [1, *SAMPLE], "FP32")
                    data.set_data_from_numpy(x[i % len(x)])
                    return client.infer(NET, [data]).as_numpy(output)
                return call

            def via_grpc() -> Callable[[int], object]:
                client = grpcclient.InferenceServerClient(f"{HOST}:{grpc_port}")

                def call(i: int) -> object:
                    data = grpcclient.InferInput("data", [1, *SAMPLE], "FP32")
                    data.set_data_from_numpy(x[i % len(x)])
                    return client.infer(NET, [data]).as_numpy(output)
                return call

            def in_process() -> Callable[[int], object]:
                return lambda i: direct({"data": x[i % len(x)]})

            paths: list[tuple[str, Callable[[], Callable[[int], object]], bool]] = [
                ("direct (in-process)", in_process, False), ("Triton HTTP", via_http, True),
                ("Triton gRPC", via_grpc, True)]
            for name, connect, served in paths:
                before = stats.get_inference_statistics(NET)["model_stats"][0]
                wall, ms = latencies(clients, total, connect)
                after = stats.get_inference_statistics(NET)["model_stats"][0]
                runs = after["execution_count"] - before["execution_count"]
                requests = after["inference_count"] - before["inference_count"]
                batch = f"{requests / runs:.2f}" if served and runs else "1 (no batcher)"
                print(f"{clients:>7}  {name:<20}{len(ms) / wall:>8.1f}{np.percentile(ms, 50):>9.1f}"
                      f"{np.percentile(ms, 99):>9.1f}{batch:>15}", flush=True)
        stats.close()
    finally:
        process.terminate()
        process.wait(timeout=60)


def chunk_sizes(prefix: str, largest: int) -> None:
    """Engines per size vs padding vs splitting, on the same executors."""
    model = load_model(prefix, 0)
    sig = signature(model, {"data": SAMPLE})
    build_s: dict[int, float] = {}
    executors = {}
    sym = model.sym.optimize_for("TensorRT", model.args, model.aux, ctx=mx.cpu())
    os.environ["MXNET_SUBGRAPH_BACKEND"] = "NONE"
    for n in range(1, largest + 1):
        start = time.perf_counter()
        ex = sym.bind(mx.cpu(), dict(model.args, data=mx.nd.zeros((n, *SAMPLE))),
                      aux_states=model.aux, grad_req="null")
        ex.forward(is_train=False)
        ex.outputs[0].wait_to_read()
        build_s[n] = time.perf_counter() - start
        executors[n] = ex
    del os.environ["MXNET_SUBGRAPH_BACKEND"]

    def ms(n: int) -> float:
        runs = []
        for _ in range(7):
            start = time.perf_counter()
            executors[n].forward(is_train=False)
            executors[n].outputs[0].wait_to_read()
            runs.append((time.perf_counter() - start) * 1e3)
        return float(np.median(runs))

    rounds = [[ms(n) for n in range(1, largest + 1)] for _ in range(3)]
    exact = {n: float(np.median([r[n - 1] for r in rounds])) for n in range(1, largest + 1)}
    powers = [1 << k for k in range(largest.bit_length()) if 1 << k <= largest]
    sizes = sorted(set(powers) | {largest})
    padded = {n: exact[min(s for s in sizes if s >= n)] for n in exact}
    chunked = {n: sum(exact[s] for s in split(n, sizes)) for n in exact}
    print(f"\n== CPU chunk sizes, {NET}: ms per batch of n (median of 3 x 7 runs; 'split' adds "
          "up the chunks' times)")
    print(f"{'n':>3}{'engine per n':>14}{'pad to 2^k':>12}{'split 2^k':>11}{'split/exact':>13}"
          f"{'pad/exact':>11}")
    for n in exact:
        print(f"{n:>3}{exact[n]:>14.1f}{padded[n]:>12.1f}{chunked[n]:>11.1f}"
              f"{chunked[n] / exact[n]:>13.2f}{padded[n] / exact[n]:>11.2f}")
    print(f"start-up: engine per n builds {largest} engines in {sum(build_s.values()):.1f} s; "
          f"pad or split build {len(sizes)} ({sizes}) in {sum(build_s[s] for s in sizes):.1f} s")
    for label, pick in (("worst", max), ("mean", lambda r: sum(r) / len(r))):
        split_ratio = pick([chunked[n] / exact[n] for n in exact])
        pad_ratio = pick([padded[n] / exact[n] for n in exact])
        print(f"{label} over n: split {split_ratio:.2f}x, pad {pad_ratio:.2f}x the engine per n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=240, help="requests per row")
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--chunk-max", type=int, default=16, help="largest n of part 2")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}; "
          f"Python {platform.python_version()}; mxnet {mx.__version__}")
    with tempfile.TemporaryDirectory(prefix="mxtrt-bench-serve-") as folder:
        os.environ["MXTRT_CACHE_DIR"] = str(Path(folder) / "cache")
        prefix = make_checkpoint(folder)
        server_vs_direct(prefix, folder, args.requests, args.max_batch_size)
        chunk_sizes(prefix, args.chunk_max)


if __name__ == "__main__":
    main()
