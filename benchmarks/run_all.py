"""All benchmarks in one run: `python benchmarks/run_all.py` (CPU; prints ratios side by side).

Each comparison measures both sides in this one process, one right after the other, as medians
of repeated runs, so machine load affects both alike. Nothing here is a pass/fail test; the goals
printed beside the figures are the ones of issue #6.
"""
from __future__ import annotations

import os
import tempfile
import time
from typing import Callable

import mxnet as mx
import numpy as np
from mxnet.gluon.model_zoo import vision

import mxtrt_backend  # noqa: F401  registers the backend
from mxtrt_backend import callbacks, export, extension, params, partition
from mxtrt_backend.bench import time_calls
from mxtrt_backend.engine.ort import OrtEngine
from mxtrt_backend.engine.cache import ENGINES


def header(title: str) -> None:
    print(f"\n== {title}", flush=True)


def seconds(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def forget_in_memory_caches() -> None:
    """What a new process would not have: engines, exported graphs, parameter digests."""
    ENGINES.clear_memory()
    export._exported.clear()
    params._memo.clear()


def zoo_symbol(name: str, shape: tuple[int, ...]):
    net = vision.get_model(name, pretrained=False, prefix="bench_")
    net.initialize(mx.init.Xavier())
    net.hybridize()
    net(mx.nd.zeros(shape))
    sym = net._cached_graph[1]
    params = {k: v.data() for k, v in net.collect_params().items()}
    args = {k: v for k, v in params.items() if k in sym.list_arguments()}
    aux = {k: v for k, v in params.items() if k in sym.list_auxiliary_states()}
    return net, sym, args, aux


def gluon_vs_backend() -> None:
    header("CPU: ONNX Runtime engines vs plain MXNet (Gluon, hybridize(static_alloc=True)); goal >= 1.5x")
    print(f"{'net':<14}{'batch':>6}{'MXNet ms':>10}{'backend ms':>12}{'speed-up':>10}{'rel err':>10}")
    for name in ("resnet18_v1", "mobilenet1.0"):
        for batch in (1, 16):
            shape = (batch, 3, 224, 224)
            x = mx.nd.array(np.random.RandomState(0).uniform(-1, 1, shape))
            plain, _, _, _ = zoo_symbol(name, shape)
            plain.hybridize(static_alloc=True, static_shape=True)
            trt = vision.get_model(name, pretrained=False, prefix="bench_")
            trt.initialize()
            trt.collect_params().load_dict({k: v.data() for k, v in plain.collect_params().items()})
            trt.hybridize(static_alloc=True, static_shape=True, backend="TensorRT")
            ref = plain(x).asnumpy()
            diff = float(np.abs(trt(x).asnumpy() - ref).max() / np.abs(ref).max())
            t_mx = time_calls(lambda: plain(x).wait_to_read(), repeat=20)
            t_trt = time_calls(lambda: trt(x).wait_to_read(), repeat=20)
            print(f"{name:<14}{batch:>6}{t_mx.median_ms:>10.2f}{t_trt.median_ms:>12.2f}"
                  f"{t_mx.median_ms / t_trt.median_ms:>9.2f}x{diff:>10.1e}", flush=True)


class Stopwatch:
    """Total time spent in one function, wherever (whichever thread) it is called from."""

    def __init__(self, owner: object, name: str) -> None:
        self.total, self.calls = 0.0, 0
        self.owner, self.name, self.original = owner, name, getattr(owner, name)

        def timed(*args: object) -> object:
            start = time.perf_counter()
            try:
                return self.original(*args)
            finally:
                self.total += time.perf_counter() - start
                self.calls += 1

        setattr(owner, name, timed)

    def us_per_call(self) -> float:
        return self.total / max(self.calls, 1) * 1e6

    def restore(self) -> None:
        setattr(self.owner, self.name, self.original)


def op_overhead() -> None:
    header("Overhead of the _TensorRT op over calling its engine directly; goal <= 20 us")
    sym = mx.sym.FullyConnected(mx.sym.var("data"), num_hidden=16, name="fc")
    sym = mx.sym.Activation(sym, act_type="relu", name="relu")
    args = {"fc_weight": mx.nd.ones((16, 16)) * 0.01, "fc_bias": mx.nd.zeros(16)}
    data = mx.nd.ones((1, 16))

    def executor(s: mx.sym.Symbol) -> Callable[[], None]:
        e = s.bind(mx.cpu(), dict(args, data=data), grad_req="null")

        def run() -> None:
            e.forward(is_train=False)
            e.outputs[0].wait_to_read()
        return run

    backend = executor(sym.optimize_for("TensorRT", args, {}, ctx=mx.cpu()))
    plain = executor(sym)
    backend()
    # Timed inside MXNet's engine thread, where the op really runs: all the op's Python does per
    # forward (reading MXNet's arrays, checks, parameter fingerprint) against the engine alone.
    # The C library holds the callback it was given, so a timed one is installed for the run.
    in_op, in_engine = Stopwatch(callbacks, "_forward"), Stopwatch(OrtEngine, "run")
    assert callbacks._ext is not None
    installed = callbacks._ext._callbacks
    timed = extension.FORWARD(callbacks._forward)
    callbacks._ext.lib.mxtrt_set_callbacks(*installed[:3], timed, installed[4])
    round_trip = time_calls(backend, repeat=3000, warmup=100)
    callbacks._ext.lib.mxtrt_set_callbacks(*installed)
    in_op.restore()
    in_engine.restore()
    mx_only = time_calls(plain, repeat=3000, warmup=100)
    print(f"inside the op per forward:  {in_op.us_per_call():6.1f} us")
    print(f"of which the engine:        {in_engine.us_per_call():6.1f} us")
    print(f"op overhead (difference):   {in_op.us_per_call() - in_engine.us_per_call():6.1f} us")
    print(f"whole executor forward + wait: backend {round_trip.median_ms * 1e3:.1f} us, plain MXNet "
          f"{mx_only.median_ms * 1e3:.1f} us (adds MXNet's custom-op dispatch and the C -> Python "
          f"call, which Python cannot time)")


def partition_export_and_warm_start() -> None:
    header("Partition + export time (goal <= 2 s); bind-to-first-output warm disk cache (goal <= 100 ms) vs cold")
    print(f"{'net':<14}{'partition s':>12}{'export s':>10}{'cold ms':>10}{'warm ms':>10}")
    for name in ("resnet50_v2", "densenet121"):
        shape = (1, 3, 224, 224)
        _, sym, args, aux = zoo_symbol(name, shape)
        x = mx.nd.zeros(shape)
        t_partition = seconds(lambda: sym.optimize_for("TensorRT", args, aux, ctx=mx.cpu()))
        trt = sym.optimize_for("TensorRT", args, aux, ctx=mx.cpu())

        def first_output() -> None:
            ex = trt.bind(mx.cpu(), dict(args, data=x), aux_states=aux, grad_req="null")
            ex.forward(is_train=False)
            ex.outputs[0].wait_to_read()

        with tempfile.TemporaryDirectory() as cache:
            os.environ["MXTRT_CACHE_DIR"] = cache
            forget_in_memory_caches()
            t_export = seconds(lambda: trt.bind(mx.cpu(), dict(args, data=x), aux_states=aux,
                                                grad_req="null"))
            forget_in_memory_caches()
            cold = seconds(first_output)
            forget_in_memory_caches()
            export._exported.clear()
            warm = seconds(first_output)
        print(f"{name:<14}{t_partition:>12.3f}{t_export:>10.3f}{cold * 1e3:>10.1f}{warm * 1e3:>10.1f}",
              flush=True)


def partition_scaling() -> None:
    header("Partition time vs graph size (chains; every 10th node unsupported); must be linear")
    print(f"{'nodes':>7}{'total s':>10}{'us/node':>9}{'mxtrt s':>10}{'us/node':>9}")
    for n in (100, 1_000, 3_000, 10_000):
        x = mx.sym.var("data")
        for i in range(n):
            x = (mx.sym.softmax(x, name=f"s{i}") if i % 10 == 9
                 else mx.sym.Activation(x, act_type="relu", name=f"r{i}"))
        ours = [Stopwatch(partition, "select"), Stopwatch(partition, "review")]
        t = seconds(lambda: x.optimize_for("TensorRT", ctx=mx.cpu(), exclude_ops="softmax"))
        mine = sum(w.total for w in ours)
        for w in ours:
            w.restore()
        print(f"{n:>7}{t:>10.3f}{t / n * 1e6:>9.1f}{mine:>10.3f}{mine / n * 1e6:>9.1f}", flush=True)
    print("(total includes MXNet's own partitioning, which copies a table of all nodes into a new\n"
          " selector for every node it visits: quadratic in MXNet 1.9, see README)")


if __name__ == "__main__":
    print(f"machine: {os.cpu_count()} CPUs; mxnet {mx.__version__}; "
          f"onnxruntime {__import__('onnxruntime').__version__}")
    gluon_vs_backend()
    op_overhead()
    partition_export_and_warm_start()
    partition_scaling()
