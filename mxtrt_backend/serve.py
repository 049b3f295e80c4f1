"""`serve`: a checkpoint or a `convert` folder behind NVIDIA Triton Inference Server (PyTriton).

PyTriton starts a real ``tritonserver`` (HTTP, gRPC, Prometheus metrics, dynamic batcher) whose
Python-backend model forwards each batch to this process, where one `Predictor` per model
instance runs MXNet with the TensorRT backend. Every engine is built (or loaded from the cache)
before the server starts, so it reports ready only when no request will wait for a build.
SIGINT and SIGTERM stop it: in-flight requests get ``--exit-timeout`` seconds to finish, then
tritonserver and its stub processes end with this process.
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import socket
import sys
import sysconfig
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from . import cli
from .cli import Device
from .predictor import Predictor, ServeError, Signature, load_model, signature

# Restricted to clients holding the server's token (PyTriton generates one per run): loading and
# unloading models, shared-memory registration, tracing and log settings. Health, metadata,
# inference and statistics stay open.
RESTRICTED_ENDPOINTS = ["shared-memory", "model-repository", "trace", "logging"]

@dataclass(frozen=True)
class ModelSettings:
    """What `serve` and `export-triton` share: the model, its shapes and how it is batched."""

    source: str
    epoch: int | None
    shapes: dict[str, tuple[int, ...]]
    options: dict[str, str]
    devices: tuple[Device, ...]  # one model instance each
    max_batch: int
    max_queue_delay_us: int
    name: str | None


@dataclass(frozen=True)
class ServerSettings:
    host: str
    http_port: int
    grpc_port: int
    metrics_port: int
    exit_timeout: int
    log_file: Path


PYTRITON = "nvidia-pytriton==0.7.0"


def require(module: str) -> None:
    """Serving's dependencies are optional for the rest of mxtrt: say how to get them."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise ServeError(f"serving needs {module} (pip install '{PYTRITON}', which brings "
                         "tritonserver and tritonclient; or pip install 'mxtrt[serve]')")


def parse_devices(text: str) -> tuple[Device, ...]:
    """``cpu``, or ``gpu:0,1,...`` (one instance per GPU listed; ``gpu`` is gpu:0)."""
    first, *more = text.split(",")
    device = cli.parse_ctx(first)
    if not more:
        return (device,)
    if device.kind != "gpu" or not all(m.strip().isdigit() for m in more):
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of devices: give cpu, or "
                                         "gpu:0,1,... (one model instance on each GPU)")
    gpus = (device, *(Device("gpu", int(m)) for m in more))
    if len(set(gpus)) != len(gpus):
        raise argparse.ArgumentTypeError(f"{text!r} names a GPU twice; use --instances for more "
                                         "instances on one GPU")
    return gpus


def devices(args: argparse.Namespace) -> tuple[Device, ...]:
    """Every instance's device: ``--instances`` on each ``--ctx`` device (default as for the
    other commands: gpu:0 when TensorRT can use it, else cpu), each checked; says which."""
    if args.ctx is not None:
        chosen, why = args.ctx, ""
    else:
        default, reason = cli.default_device()
        chosen, why = (default,), f" (the default: {reason})"
    for device in chosen:
        print(f"mxtrt {args.command}: --ctx {device}{why}: {cli.describe(device)}",
              file=sys.stderr, flush=True)
    return tuple(d for d in chosen for _ in range(args.instances))


def model_arguments(parser: argparse.ArgumentParser) -> None:
    """What `serve` and `export-triton` share (the checkpoint, -o and the device's parsing come
    from cli; --shape here is one sample's, without the batch)."""
    parser.add_argument("source", help="checkpoint prefix (PREFIX-symbol.json, PREFIX-EPOCH.params)"
                                       ", or a folder written by `convert` (then no EPOCH)")
    parser.add_argument("epoch", type=int, nargs="?", help="checkpoint epoch")
    parser.add_argument("--shape", action="append", type=cli.parse_input, default=[],
                        metavar="[NAME:]D1,D2,...",
                        help="one sample's shape, without the batch: 3,224,224 (input 'data', "
                             "or the model's only input) or NAME:3,224,224; one per input")
    cli.option_argument(parser)
    parser.add_argument("--ctx", type=parse_devices, default=None, metavar="cpu|gpu:N[,N...]",
                        help="where instances run: cpu, or gpu:0,1,... (one instance per GPU); "
                             "default: gpu:0 when a GPU and TensorRT are usable, else cpu")
    parser.add_argument("--instances", type=cli.positive_int, default=1,
                        help="model instances per device")
    parser.add_argument("--max-batch-size", type=cli.positive_int, default=8,
                        help="largest batch the dynamic batcher forms")
    parser.add_argument("--max-queue-delay-us", type=int, default=100,
                        help="how long a request may wait for others to batch with")
    parser.add_argument("--name", help="model name in Triton (default: the checkpoint's name)")


def model_settings(args: argparse.Namespace) -> ModelSettings:
    if args.max_queue_delay_us < 0:
        raise ServeError(f"--max-queue-delay-us must be >= 0, not {args.max_queue_delay_us}")
    return ModelSettings(args.source, args.epoch, dict(args.shape), cli.options(args),
                         devices(args), args.max_batch_size, args.max_queue_delay_us, args.name)


def arguments(parser: argparse.ArgumentParser) -> None:
    model_arguments(parser)
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1; 0.0.0.0 for every "
                             "interface, e.g. in a container)")
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--exit-timeout", type=int, default=5,
                        help="seconds in-flight requests get to finish at shutdown (default 5)")
    parser.add_argument("--log-file", type=Path,
                        help="Triton's own log (default: a file in the temporary folder)")


def server_settings(args: argparse.Namespace) -> ServerSettings:
    log_file = args.log_file or Path(tempfile.gettempdir()) / f"mxtrt-serve-{os.getpid()}.log"
    ports = {"--http-port": args.http_port, "--grpc-port": args.grpc_port,
             "--metrics-port": args.metrics_port}
    if len(set(ports.values())) != len(ports):
        raise ServeError(f"the ports must differ: {ports}")
    for flag, port in ports.items():
        _check_port_free(args.host, port, flag)
    return ServerSettings(args.host, args.http_port, args.grpc_port, args.metrics_port,
                          args.exit_timeout, log_file)


def _check_port_free(host: str, port: int, flag: str) -> None:
    """tritonserver exits on a taken port; saying so here is clearer than its log. SO_REUSEADDR
    as servers set it: connections of a previous server still closing do not count."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as err:
            raise ServeError(f"cannot listen on {host}:{port} ({err.strerror}): choose another "
                             f"port with {flag}") from None


def python_backend_env(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` for tritonserver with this interpreter's libpython first on the library path.

    Triton's Python-backend stub links ``libpython3.X.so.1.0`` through the system linker. When
    this interpreter is not the system's (pyenv, conda), the linker finds the system's copy of
    another patch release, and model start fails with "'_thread.RLock' object has no attribute
    '_recursion_count'"."""
    env = dict(environ)
    libdir = sysconfig.get_config_var("LIBDIR")
    paths = [p for p in env.get("LD_LIBRARY_PATH", "").split(":") if p and p != libdir]
    env["LD_LIBRARY_PATH"] = ":".join([libdir, *paths] if libdir else paths)
    return env


def triton_name(name: str) -> str:
    """A model name Triton accepts (it is also the repository's folder name)."""
    if not re.fullmatch(r"[A-Za-z0-9._-]+", name):
        raise ServeError(f"model name {name!r} has characters Triton does not accept: give "
                         "--name with letters, digits, '.', '_' and '-' only")
    return name


def build_predictors(settings: ModelSettings) -> tuple[str, Signature, list[Predictor]]:
    """The model's name, signature and warm instances (engines built or loaded)."""
    model = load_model(settings.source, settings.epoch)
    name = triton_name(settings.name or model.name)
    sig = signature(model, settings.shapes)
    predictors = [Predictor(model, sig, device.context(), settings.max_batch, settings.options)
                  for device in settings.devices]
    return name, sig, predictors


def _infer_function(predictor: Predictor) -> Callable[..., Any]:
    from pytriton.decorators import batch

    @batch
    def infer(**inputs: Any) -> dict[str, Any]:
        return predictor(inputs)

    return infer


def _bind(triton: Any, name: str, sig: Signature, predictors: Sequence[Predictor],
          model: ModelSettings) -> None:
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor

    triton.bind(
        model_name=name,
        infer_func=[_infer_function(p) for p in predictors],
        inputs=[Tensor(name=t.name, dtype=t.dtype.type, shape=t.shape) for t in sig.inputs],
        outputs=[Tensor(name=t.name, dtype=t.dtype.type, shape=t.shape) for t in sig.outputs],
        config=ModelConfig(max_batch_size=model.max_batch, batcher=DynamicBatcher(
            max_queue_delay_microseconds=model.max_queue_delay_us)))


def _model_ready(server: ServerSettings, name: str, timeout: float) -> bool:
    """Whether Triton says the model is ready (PyTriton only logs a model that failed to load)."""
    import tritonclient.http as httpclient

    host = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(server.host, server.host)
    host = f"[{host}]" if ":" in host and not host.startswith("[") else host
    deadline = time.monotonic() + timeout
    with httpclient.InferenceServerClient(f"{host}:{server.http_port}") as client:
        while time.monotonic() < deadline:
            try:
                if client.is_model_ready(name):
                    return True
            except Exception:  # noqa: BLE001 - any failure to answer means not ready yet
                pass
            time.sleep(0.2)
    return False


def serve(name: str, sig: Signature, predictors: Sequence[Predictor], model: ModelSettings,
          server: ServerSettings, stop: threading.Event) -> int:
    """Start Triton with the model bound, say so on stdout, serve until ``stop`` is set."""
    from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig

    os.environ.update(python_backend_env(os.environ))  # tritonserver inherits our environment
    # PyTriton warns when tritonserver needed its exit timeout; we say what happens ourselves.
    logging.getLogger("pytriton").setLevel(logging.ERROR)
    config = TritonConfig(
        http_address=server.host, http_port=server.http_port, grpc_address=server.host,
        grpc_port=server.grpc_port, metrics_address=server.host,
        metrics_port=server.metrics_port, exit_timeout_secs=server.exit_timeout,
        strict_readiness=True, log_file=server.log_file,
        allow_gpu_metrics=any(device.kind == "gpu" for device in model.devices))
    triton = Triton(config=config,
                    security_config=TritonSecurityConfig(restricted_endpoints=RESTRICTED_ENDPOINTS))
    try:
        _bind(triton, name, sig, predictors, model)
        triton.run()
        if not _model_ready(server, name, timeout=30.0):
            print(f"mxtrt serve: error: Triton did not load the model; see {server.log_file}",
                  file=sys.stderr)
            return 1
        inputs = ", ".join(f"{t.name} {t.dtype}[-1,{','.join(map(str, t.shape))}]"
                           for t in sig.inputs)
        print(f"mxtrt serve: model '{name}' ready ({inputs}; {len(predictors)} instance(s); "
              f"batches up to {model.max_batch}, executors for {list(predictors[0].sizes)}): "
              f"HTTP {server.host}:{server.http_port}, gRPC {server.host}:{server.grpc_port}, "
              f"metrics http://{server.host}:{server.metrics_port}/metrics; Triton's log: "
              f"{server.log_file}", flush=True)
        while not stop.wait(0.2):
            if not triton.is_alive():
                print(f"mxtrt serve: error: Triton stopped unexpectedly; see {server.log_file}",
                      file=sys.stderr)
                return 1
        return 0
    finally:
        print(f"mxtrt serve: stopping (in-flight requests get {server.exit_timeout} s)",
              file=sys.stderr, flush=True)
        triton.stop()


def run(args: argparse.Namespace) -> int:
    require("pytriton")
    model = model_settings(args)
    server = server_settings(args)
    name, sig, predictors = build_predictors(model)
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return serve(name, sig, predictors, model, server, stop)
    except Exception as err:  # noqa: BLE001 - a Triton failure: one line and where its log is
        print(f"mxtrt serve: error: Triton: {type(err).__name__}: {cli.one_line(err)}; see "
              f"{server.log_file}", file=sys.stderr)
        return 1
    finally:
        for sig_num, handler in previous.items():
            signal.signal(sig_num, handler)
