"""Reusable test pieces: reference runs on unfused MXNet, random parameters, the op state of a
partitioned symbol, the ONNX graphs the pipeline hands to a runtime, and a LeNet trained on
scikit-learn's digits (the bundled demo's, so tests and demo train the same model), and real
Triton servers on loopback."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import mxnet as mx
import numpy as np
import onnx
import pytest
from mxnet.gluon.model_zoo import vision

from mxtrt_backend import demo, export
from mxtrt_backend.engine.cache import ENGINES
from mxtrt_backend.engine.ort import OrtRuntime

IterFactory = Callable[..., mx.io.NDArrayIter]


def train_lenet_digits(tmp_dir: str | Path, epochs: int = 8) -> tuple[str, int, IterFactory]:
    """Train LeNet on the digits' training split and save a checkpoint in ``tmp_dir``.

    Training binds with gradients, so it runs on plain MXNet even under MXNET_USE_TENSORRT=1.

    Returns ``(prefix, epoch, test_iter)``: ``mx.model.load_checkpoint(prefix, epoch)`` loads it,
    and ``test_iter(batch_size=64, **NDArrayIter_kwargs)`` iterates the test split (450 images:
    with batch 64 the last batch is partial).
    """
    prefix, epoch = demo.train_lenet_digits(str(tmp_dir), epochs)
    _, _, x_test, y_test = demo.digits()

    def test_iter(batch_size: int = demo.BATCH, **kwargs: object) -> mx.io.NDArrayIter:
        return mx.io.NDArrayIter(x_test, y_test, batch_size, label_name="softmax_label", **kwargs)

    return prefix, epoch, test_iter


def trt_nodes(sym: mx.sym.Symbol) -> list[dict]:
    """The `_TensorRT` nodes of a partitioned symbol, as MXNet serialises them."""
    return [n for n in json.loads(sym.tojson())["nodes"] if n["op"] == "_TensorRT"]


@contextmanager
def op_state(partitioned: mx.sym.Symbol, shapes: dict[str, tuple[int, ...]],
             device_id: int = 0) -> Iterator[Any]:
    """The state of the first `_TensorRT` node of ``partitioned``, made as MXNet makes it at bind
    (node attributes plus its subgraph), for inputs of these shapes (float32), on CPU device
    ``device_id`` (MXNet itself passes 0 for every CPU context)."""
    from mxtrt_backend import op

    node = trt_nodes(partitioned)[0]
    attrs = dict(node["attrs"], **{op.SUBGRAPH_ATTR: json.dumps(node["subgraphs"][0])})
    subgraph = node["subgraphs"][0]
    sources = [n.get("attrs", {}).get("argName", n["name"]) for n in subgraph["nodes"]
               if n["op"] == "null"]
    in_shapes = [shapes[name] for name in sources]
    handle = op.create_state(attrs, "cpu", device_id, in_shapes,
                             [np.dtype("float32")] * len(sources))
    try:
        yield op.state(handle)
    finally:
        op.destroy_state(handle)


def rel_err(out: np.ndarray, ref: np.ndarray) -> float:
    """max|out - ref| / max|ref|: the tolerance measure used throughout the tests."""
    return float(np.abs(out - ref).max() / max(np.abs(ref).max(), 1e-12))


def op_names(sym: mx.sym.Symbol) -> list[str]:
    return [n["op"] for n in json.loads(sym.tojson())["nodes"]]


def random_params(sym: mx.sym.Symbol, data_shapes: dict[str, tuple[int, ...]], seed: int = 0):
    """Random arg/aux values for every non-data input of a symbol; variances kept positive."""
    rng = np.random.RandomState(seed)
    arg_shapes, _, aux_shapes = sym.infer_shape(**data_shapes)
    args = {n: mx.nd.array(rng.uniform(-0.5, 0.5, s))
            for n, s in zip(sym.list_arguments(), arg_shapes) if n not in data_shapes}
    aux = {n: mx.nd.array(rng.uniform(0.5, 1.5, s) if n.endswith("var") else rng.uniform(-0.1, 0.1, s))
           for n, s in zip(sym.list_auxiliary_states(), aux_shapes)}
    return args, aux


_env_lock = threading.RLock()


@contextmanager
def environ(**values: str) -> Iterator[None]:
    """These environment variables for the duration (MXNet and the backend read theirs at
    bind), restored afterwards; one thread at a time."""
    with _env_lock:
        previous = {name: os.environ.get(name) for name in values}
        os.environ.update(values)
        try:
            yield
        finally:
            for name, value in previous.items():
                if value is None:
                    del os.environ[name]
                else:
                    os.environ[name] = value


def unfused():
    """Binds without MXNet's default MKLDNN fusion, which gives wrong answers on some nets
    (MXNET_SUBGRAPH_BACKEND is read at bind): the reference the tests compare against."""
    return environ(MXNET_SUBGRAPH_BACKEND="NONE")


def flag_on():
    """MXNET_USE_TENSORRT=1 for the binds and hybridize() calls inside."""
    return environ(MXNET_USE_TENSORRT="1")


def forward(sym: mx.sym.Symbol, args, aux, data: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Bind (unfused), run once in inference mode, return every output."""
    with unfused():
        ex = sym.bind(mx.cpu(), dict(args, **{k: mx.nd.array(v) for k, v in data.items()}),
                      aux_states=dict(aux), grad_req="null")
    ex.forward(is_train=False)
    return [o.asnumpy() for o in ex.outputs]


DATA = (2, 3, 8, 8)


def conv_net() -> mx.sym.Symbol:
    data = mx.sym.var("data")
    x = mx.sym.Convolution(data, num_filter=4, kernel=(3, 3), pad=(1, 1), name="c1")
    x = mx.sym.BatchNorm(x, fix_gamma=False, name="bn1")
    x = mx.sym.Activation(x, act_type="relu", name="r1")
    y = mx.sym.Convolution(x, num_filter=4, kernel=(1, 1), name="c2")
    x = mx.sym.elemwise_add(x, y, name="res")
    x = mx.sym.Concat(x, mx.sym.Activation(y, act_type="sigmoid", name="s1"), dim=1, name="cat")
    x = mx.sym.Pooling(x, kernel=(2, 2), stride=(2, 2), pool_type="max", name="p1")
    x = mx.sym.Pooling(x, kernel=(1, 1), global_pool=True, pool_type="avg", name="gap")
    x = mx.sym.Flatten(x, name="flat")
    return mx.sym.FullyConnected(x, num_hidden=5, name="fc")


def pipeline_graphs(sym: mx.sym.Symbol, data_shape: tuple[int, ...]) -> list[export.ExportedGraph]:
    """The ONNX graphs the real pipeline hands to a runtime's build, as TensorRT's parser would get
    them: optimize_for, bind and forward on a CPU context; the op exports each subgraph
    (export_structure) and bakes its parameters (bake_params) before calling Runtime.build."""
    args, aux = random_params(sym, {"data": data_shape})
    handed: list[bytes] = []
    original = OrtRuntime.build

    def build(self, onnx_bytes, *rest):  # records what the runtime is given, then builds it
        handed.append(onnx_bytes)
        return original(self, onnx_bytes, *rest)

    ENGINES.clear_memory()  # so every engine is built here
    with tempfile.TemporaryDirectory() as folder, pytest.MonkeyPatch.context() as patch:
        patch.setattr(OrtRuntime, "build", build)
        part = sym.optimize_for("TensorRT", args, aux, ctx=mx.cpu(), cache_dir=folder)
        forward(part, args, aux, {"data": np.zeros(data_shape, np.float32)})
    assert handed, "nothing was converted"
    models = [onnx.load_from_string(b) for b in handed]
    return [export.ExportedGraph(b, tuple(i.name for i in m.graph.input),
                                 tuple(o.name for o in m.graph.output))
            for b, m in zip(handed, models)]


def data_subgraph(data_shape: tuple[int, ...] = DATA) -> export.ExportedGraph:
    """The conv net's exported subgraph that starts at the network's data input."""
    return next(g for g in pipeline_graphs(conv_net(), data_shape) if g.input_names == ("data0",))


def zoo_symbol(name: str) -> tuple[mx.sym.Symbol, tuple[int, ...]]:
    shape = (1, 3, 299, 299) if name == "inceptionv3" else (1, 3, 224, 224)
    net = vision.get_model(name, pretrained=False)
    net.initialize()
    net.hybridize()
    net(mx.nd.zeros(shape))
    return net._cached_graph[1], shape


# --- Real Triton servers: a small model-zoo net, free loopback ports, start, wait, stop. Every wait
# is bounded; a server that does not come up fails the test with the tail of its output, and every
# process a test started is ended by its id when the test is done.

HOST = "127.0.0.1"
NET_SAMPLE = (3, 32, 32)  # one sample of the test net; small so requests are quick
NET_CLASSES = 10
NET_OUTPUT = "net_dense0_fwd_output"  # the test net's output (fixed prefix: Gluon counts nets)


def zoo_checkpoint(folder: Path, name: str = "mobilenet0.25") -> str:
    """A model-zoo net with random weights (He init, random BatchNorm statistics, so every
    layer matters), exported as a checkpoint; returns its prefix (epoch 0)."""
    mx.random.seed(0)
    net = mx.gluon.model_zoo.vision.get_model(name, classes=NET_CLASSES, prefix="net_")
    net.initialize(mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2))
    net.hybridize()
    net(mx.nd.zeros((1, *NET_SAMPLE)))
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
    """Plain, unfused MXNet on a checkpoint's first output (epoch 0)."""
    sym, args, aux = mx.model.load_checkpoint(prefix, 0)
    return forward(sym, args, aux, {"data": x})[0]


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


def start_server(command: Sequence[str], folder: Path, env: dict[str, str] | None = None) -> Server:
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
