"""Real Triton servers for tests: a small model-zoo net, free loopback ports, start, wait, stop.

Every wait is bounded; a server that does not come up fails the test with the tail of its output,
and every process a test started is ended by its id when the test is done.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import mxnet as mx
import numpy as np

HOST = "127.0.0.1"
SAMPLE = (3, 32, 32)  # one sample of the test net; small so requests are quick
CLASSES = 10
OUTPUT = "net_dense0_fwd_output"  # the test net's output (fixed prefix: Gluon counts nets)


def make_checkpoint(folder: Path, name: str = "mobilenet0.25") -> str:
    """A model-zoo net with random weights (He init, random BatchNorm statistics, so every
    layer matters), exported as a checkpoint; returns its prefix (epoch 0)."""
    mx.random.seed(0)
    net = mx.gluon.model_zoo.vision.get_model(name, classes=CLASSES, prefix="net_")
    net.initialize(mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2))
    net.hybridize()
    net(mx.nd.zeros((1, *SAMPLE)))
    rng = np.random.RandomState(0)
    for pname, param in net.collect_params().items():
        if pname.endswith(("running_mean", "beta")):
            param.set_data(mx.nd.array(rng.uniform(-0.1, 0.1, param.shape)))
        elif pname.endswith(("running_var", "gamma")):
            param.set_data(mx.nd.array(rng.uniform(0.5, 1.5, param.shape)))
    prefix = str(folder / name)
    net.export(prefix, 0)
    return prefix


def reference(prefix: str, x: np.ndarray) -> np.ndarray:
    """Plain, unfused MXNet (MXNET_SUBGRAPH_BACKEND=NONE at bind) on the same checkpoint."""
    sym, args, aux = mx.model.load_checkpoint(prefix, 0)
    previous = os.environ.get("MXNET_SUBGRAPH_BACKEND")
    os.environ["MXNET_SUBGRAPH_BACKEND"] = "NONE"
    try:
        ex = sym.bind(mx.cpu(), dict(args, data=mx.nd.array(x)), aux_states=aux, grad_req="null")
    finally:
        if previous is None:
            del os.environ["MXNET_SUBGRAPH_BACKEND"]
        else:
            os.environ["MXNET_SUBGRAPH_BACKEND"] = previous
    ex.forward(is_train=False)
    return ex.outputs[0].asnumpy()


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind((HOST, 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@dataclass
class Server:
    process: subprocess.Popen
    http: int
    grpc: int
    metrics: int
    log: Path

    @property
    def http_url(self) -> str:
        return f"{HOST}:{self.http}"

    @property
    def grpc_url(self) -> str:
        return f"{HOST}:{self.grpc}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""

    def wait_ready(self, model: str, timeout: float = 120.0) -> None:
        import tritonclient.http as http

        deadline = time.monotonic() + timeout
        with http.InferenceServerClient(self.http_url, connection_timeout=2.0,
                                        network_timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise AssertionError(f"server exited with {self.process.returncode}:\n"
                                         f"{self.output()}")
                try:
                    if client.is_server_ready() and client.is_model_ready(model):
                        return
                except Exception:  # noqa: BLE001 - not listening yet
                    pass
                time.sleep(0.25)
        raise AssertionError(f"server not ready after {timeout} s:\n{self.output()}")

    def stop(self) -> None:
        """End the server and whatever it started, by id, if a test left them running."""
        left = descendants(self.process.pid)
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        for pid in left:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def start(command: Sequence[str], folder: Path, env: dict[str, str] | None = None) -> Server:
    """Run ``command`` + the three port options; its output goes to a file in ``folder``."""
    http_port, grpc_port, metrics_port = free_ports(3)
    log = folder / f"server-{http_port}.out"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [*command, "--http-port", str(http_port), "--grpc-port", str(grpc_port),
             "--metrics-port", str(metrics_port)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env if env is not None else dict(os.environ))
    return Server(process, http_port, grpc_port, metrics_port, log)


def serve_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "mxtrt_backend", "serve", *args]


def tritonserver_command(repo: Path, workdir: Path) -> tuple[list[str], dict[str, str]]:
    """The tritonserver PyTriton bundles, run directly on a model repository (as a stock Triton
    would), with its Python backend set up as PyTriton sets it up: the stub of this Python
    version, this venv first on PATH (the stub's interpreter finds its packages there) and this
    interpreter's libpython first on the library path."""
    import shutil

    import pytriton
    from pytriton.utils.distribution import get_libs_path

    from mxtrt_backend.serve import python_backend_env

    dist = Path(pytriton.__file__).parent / "tritonserver"
    server = workdir / "tritonserver"
    shutil.copytree(dist, server, ignore=shutil.ignore_patterns("python_backend_stubs"))
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    shutil.copy(dist / "python_backend_stubs" / version / "triton_python_backend_stub",
                server / "backends" / "python" / "triton_python_backend_stub")
    env = python_backend_env(os.environ)
    env["LD_LIBRARY_PATH"] += ":" + str(get_libs_path())
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    command = [str(server / "bin" / "tritonserver"), "--model-repository", str(repo),
               "--backend-directory", str(server / "backends"), "--http-address", HOST,
               "--grpc-address", HOST, "--metrics-address", HOST, "--allow-gpu-metrics", "false",
               "--exit-timeout-secs", "5", "--strict-readiness", "true"]
    return command, env
