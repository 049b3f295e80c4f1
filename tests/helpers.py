"""Reusable test pieces: reference runs on unfused MXNet, random parameters, the op state of a
partitioned symbol, the ONNX graphs the pipeline hands to a runtime, and a LeNet trained on
scikit-learn's digits (the bundled demo's, so tests and demo train the same model), and real
Triton servers on loopback."""
from __future__ import annotations

import contextlib
import gc
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
from mxtrt_backend.config import variable
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
    with _env_lock, contextlib.ExitStack() as stack:
        for name, value in values.items():
            stack.enter_context(variable(name, value))
        yield


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
def digits_as_mnist() -> dict[str, np.ndarray]:
    """scikit-learn's digits in the layout of ``mx.test_utils.get_mnist()`` (which downloads):
    the stand-in for MNIST in MXNet's own TensorRT tests."""
    x_train, y_train, x_test, y_test = demo.digits()
    return {"train_data": x_train, "train_label": y_train,
            "test_data": x_test, "test_label": y_test}


def pretrained_standin(name: str, make: Callable[[], mx.gluon.HybridBlock],
                       image: tuple[int, int]) -> mx.gluon.HybridBlock:
    """What ``pretrained=True`` (a download) becomes in MXNet's ported tests: the net with
    ``zoo.build``'s deterministic random weights (layers normalised, BatchNorm statistics of its
    own inputs, as training leaves them), the same at every call, as pretrained weights are.
    ``image`` is the (height, width) the statistics are taken at."""
    import zoo  # it imports this module

    return zoo.build(zoo.ZooNet(name, "classification", make, (zoo.Input("data", (1, 3, *image)),)))


def seeded_zoo_model(name: str, image: tuple[int, int] = (224, 224)) -> mx.gluon.HybridBlock:
    """``mxnet.gluon.model_zoo.vision.get_model(name, pretrained=True)``, without the download."""
    return pretrained_standin(name, lambda: vision.get_model(name), image)


@dataclass
class Build:
    """What a runtime was asked to build: the precision and, for int8, the calibration batches
    (as TensorRT's calibrator would get them: the engine's input shapes and dtypes)."""

    precision: str
    calibration: list[dict[str, np.ndarray]] | None


class ReportingRuntime(OrtRuntime):
    """ONNX Runtime (it computes, in float32) that reports every engine it is asked to build.

    Installed for CPU contexts with ``reporting_runtime``; a real Runtime of the backend's own
    interface, so the op, the engine cache and the calibration bookkeeping all run for real."""

    name = "onnxruntime-reporting"

    def __init__(self, builds: list[Build]) -> None:
        self.builds = builds

    def build(self, onnx_bytes: bytes, input_names, output_names, options, device_id: int) -> bytes:
        from mxtrt_backend.engine import calibration, onnx_shapes

        batches = None
        if options.calibration_data:
            batches = calibration.batches(calibration.lookup(options.calibration_data),
                                          onnx_shapes.input_shapes(onnx_bytes, input_names),
                                          onnx_shapes.input_dtypes(onnx_bytes, input_names))
        self.builds.append(Build(options.precision, batches))
        return super().build(onnx_bytes, input_names, output_names, options, device_id)


@contextmanager
def reporting_runtime() -> Iterator[list[Build]]:
    """CPU contexts run ``ReportingRuntime`` (and start with an empty engine cache); yields the
    list of builds it reports."""
    from mxtrt_backend.engine import RUNTIMES

    builds: list[Build] = []
    ENGINES.clear_memory()
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(RUNTIMES, "cpu", lambda: ReportingRuntime(builds))
        yield builds
    ENGINES.clear_memory()


class _GluonCvModelZoo:
    """``gluoncv.model_zoo`` whose ``pretrained=True`` builds the net with random weights instead
    of downloading them (``pretrained_standin``), at CIFAR-10's image size."""

    def get_model(self, name: str, pretrained: bool = False) -> mx.gluon.HybridBlock:
        from gluoncv import model_zoo

        return pretrained_standin(name, lambda: model_zoo.get_model(name, pretrained=False),
                                  (32, 32))


gluoncv_model_zoo = _GluonCvModelZoo()


def synthetic_cifar10(size: int, seed: int = 0) -> mx.gluon.data.ArrayDataset:
    """CIFAR-10's test set layout (32x32x3 uint8 images, labels 0..9) with random content: the
    stand-in for ``gluon.data.vision.CIFAR10(train=False)``, which downloads."""
    rng = np.random.RandomState(seed)
    images = mx.nd.array(rng.randint(0, 256, (size, 32, 32, 3)), dtype=np.uint8)
    return mx.gluon.data.ArrayDataset(images, rng.randint(0, 10, size).astype(np.float32))


# --- MXNet 1.3's and 1.5's test_cvnets.py: the same experiment, around each release's own
# get_classif_model(model_name, use_tensorrt, ctx, batch_size), which is passed in. The code is
# the originals' apart from what the comments say.

CIFAR_MODELS = [
    'cifar_resnet20_v1',
    'cifar_resnet56_v1',
    'cifar_resnet110_v1',
    'cifar_resnet20_v2',
    'cifar_resnet56_v2',
    'cifar_resnet110_v2',
    'cifar_wideresnet16_10',
    'cifar_wideresnet28_10',
    'cifar_wideresnet40_8',
    'cifar_resnext29_16x64d'
]

# Was 10000 downloaded CIFAR-10 test images; synthetic ones, fewer (CPU time).
CIFAR_NUM_EX = 96


def cifar10_infer(get_classif_model, model_name, use_tensorrt, num_workers, ctx=mx.cpu(),
                  batch_size=128):
    from time import time

    from mxnet.gluon.data.vision import transforms

    executor = get_classif_model(model_name, use_tensorrt, ctx, batch_size)

    num_ex = CIFAR_NUM_EX
    all_preds = np.zeros([num_ex, 10])

    all_label_test = np.zeros(num_ex)

    transform_test = transforms.Compose([
        transforms.ToTensor(),
        transforms.Normalize([0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010])
    ])

    data_loader = lambda: mx.gluon.data.DataLoader(  # noqa: E731
        synthetic_cifar10(CIFAR_NUM_EX).transform_first(transform_test),  # was CIFAR10(train=False)
        batch_size=batch_size, shuffle=False, num_workers=num_workers)

    val_data = data_loader()

    for idx, (data, label) in enumerate(val_data):
        # Skip last batch if it's undersized.
        if data.shape[0] < batch_size:
            continue
        offset = idx * batch_size
        all_label_test[offset:offset + batch_size] = label.asnumpy()

        # warm-up, but don't use result
        executor.forward(is_train=False, data=data)
        executor.outputs[0].wait_to_read()

    gc.collect()
    val_data = data_loader()
    example_ct = 0
    start = time()

    # if use_tensorrt:
    for idx, (data, label) in enumerate(val_data):
        # Skip last batch if it's undersized.
        if data.shape[0] < batch_size:
            continue
        executor.forward(is_train=False, data=data)
        preds = executor.outputs[0].asnumpy()
        offset = idx * batch_size
        all_preds[offset:offset + batch_size, :] = preds[:batch_size]
        example_ct += batch_size

    all_preds = np.argmax(all_preds, axis=1)
    matches = (all_preds[:example_ct] == all_label_test[:example_ct]).sum()
    duration = time() - start

    return duration, 100.0 * matches / example_ct


def run_experiment_for(get_classif_model, model_name, batch_size, num_workers):
    print("\n===========================================")
    print("Model: %s" % model_name)
    print("===========================================")
    print("*** Running inference using pure MXNet ***\n")
    mx_duration, mx_pct = cifar10_infer(get_classif_model, model_name=model_name,
                                        batch_size=batch_size, num_workers=num_workers,
                                        use_tensorrt=False)
    print("\nMXNet: time elapsed: %.3fs, accuracy: %.2f%%" % (mx_duration, mx_pct))
    print("\n*** Running inference using MXNet + TensorRT ***\n")
    trt_duration, trt_pct = cifar10_infer(get_classif_model, model_name=model_name,
                                          batch_size=batch_size, num_workers=num_workers,
                                          use_tensorrt=True)
    print("TensorRT: time elapsed: %.3fs, accuracy: %.2f%%" % (trt_duration, trt_pct))
    speedup = mx_duration / trt_duration
    print("TensorRT speed-up (not counting compilation): %.2fx" % speedup)

    acc_diff = abs(mx_pct - trt_pct)
    print("Absolute accuracy difference: %f" % acc_diff)
    return speedup, acc_diff


def cifar_experiment(get_classif_model, models, batch_size=32, tolerance=0.1, num_workers=1):
    """The body of test_tensorrt_on_cifar_resnets (its try/finally stays in each test)."""
    from time import time

    num_models = len(models)

    speedups = np.zeros(num_models, dtype=np.float32)
    acc_diffs = np.zeros(num_models, dtype=np.float32)

    test_start = time()

    for idx, model in enumerate(models):
        speedup, acc_diff = run_experiment_for(get_classif_model, model, batch_size, num_workers)
        speedups[idx] = speedup
        acc_diffs[idx] = acc_diff
        assert acc_diff < tolerance, "Accuracy difference between MXNet and TensorRT > %.2f%% for model %s" % (
            tolerance, model)

    print("Perf and correctness checks run on the following models:")
    print(models)
    mean_speedup = np.mean(speedups)
    std_speedup = np.std(speedups)
    print("\nSpeedups:")
    print(speedups)
    print("Speedup range: [%.2f, %.2f]" % (np.min(speedups), np.max(speedups)))
    print("Mean speedup: %.2f" % mean_speedup)
    print("St. dev. of speedups: %.2f" % std_speedup)
    print("\nAcc. differences: %s" % str(acc_diffs))

    test_duration = time() - test_start

    print("Test duration: %.2f seconds" % test_duration)


# The variables mx.contrib.tensorrt's set_use_tensorrt/set_use_fp16 write, and the precision.
TENSORRT_SWITCHES = ("MXNET_USE_TENSORRT", "MXNET_TENSORRT_USE_FP16", "MXNET_TENSORRT_PRECISION")


def unset_for_test(monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    """Unset variables for one test and restore them afterwards, also when the code under test
    sets them (``monkeypatch.delenv`` of an unset variable records nothing to restore)."""
    for name in names:
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
