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
from mxtrt_backend import export, op
from mxtrt_backend.bench import time_calls
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
    op._param_digests.clear()


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
    print(f"{'net':<14}{'batch':>6}{'MXNet ms':>10}{'backend ms':>12}{'speed-up':>10}{'max|diff|':>11}")
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
            diff = float(np.abs(plain(x).asnumpy() - trt(x).asnumpy()).max())
            t_mx = time_calls(lambda: plain(x).wait_to_read(), repeat=20)
            t_trt = time_calls(lambda: trt(x).wait_to_read(), repeat=20)
            print(f"{name:<14}{batch:>6}{t_mx.median_ms:>10.2f}{t_trt.median_ms:>12.2f}"
                  f"{t_mx.median_ms / t_trt.median_ms:>9.2f}x{diff:>11.2g}", flush=True)


def op_overhead() -> None:
    header("Overhead of the _TensorRT op over calling its engine directly; goal <= 20 us")
    sym = mx.sym.FullyConnected(mx.sym.var("data"), num_hidden=16, name="fc")
    sym = mx.sym.Activation(sym, act_type="relu", name="relu")
    args = {"fc_weight": mx.nd.ones((16, 16)) * 0.01, "fc_bias": mx.nd.zeros(16)}
    ex = sym.optimize_for("TensorRT", args, {}, ctx=mx.cpu()).bind(
        mx.cpu(), dict(args, data=mx.nd.ones((1, 16))), grad_req="null")
    ex.forward(is_train=False)
    ex.outputs[0].wait_to_read()
    state = op._states[max(op._states)]  # the op just bound
    x, y = np.ones((1, 16), np.float32), np.zeros((1, 16), np.float32)
    refs_in = [op.TensorRef(x.ctypes.data, x.shape, x.dtype)]
    refs_out = [op.TensorRef(y.ctypes.data, y.shape, y.dtype)]
    assert state.engine is not None
    engine = state.engine
    direct = time_calls(lambda: engine.run(refs_in, refs_out, 0), repeat=2000, warmup=50)

    def through_mxnet() -> None:
        ex.forward(is_train=False)
        ex.outputs[0].wait_to_read()

    via_op = time_calls(through_mxnet, repeat=2000, warmup=50)
    plain = sym.bind(mx.cpu(), dict(args, data=mx.nd.ones((1, 16))), grad_req="null")

    def plain_mxnet() -> None:
        plain.forward(is_train=False)
        plain.outputs[0].wait_to_read()

    mx_only = time_calls(plain_mxnet, repeat=2000, warmup=50)
    print(f"engine called directly:             {direct.median_ms * 1e3:8.1f} us")
    print(f"through the _TensorRT op (executor): {via_op.median_ms * 1e3:8.1f} us")
    print(f"op overhead (difference):           {(via_op.median_ms - direct.median_ms) * 1e3:8.1f} us")
    print(f"(for scale: plain MXNet executor of the same 2 ops: {mx_only.median_ms * 1e3:.1f} us)")


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
    print(f"{'nodes':>7}{'seconds':>10}{'us/node':>10}")
    for n in (100, 1_000, 3_000, 10_000):
        x = mx.sym.var("data")
        for i in range(n):
            x = mx.sym.softmax(x, name=f"s{i}") if i % 10 == 9 else mx.sym.Activation(x, act_type="relu", name=f"r{i}")
        t = seconds(lambda: x.optimize_for("TensorRT", ctx=mx.cpu(), min_subgraph_size="1000000"))
        print(f"{n:>7}{t:>10.3f}{t / n * 1e6:>10.1f}", flush=True)


if __name__ == "__main__":
    print(f"machine: {os.cpu_count()} CPUs; mxnet {mx.__version__}; "
          f"onnxruntime {__import__('onnxruntime').__version__}")
    gluon_vs_backend()
    op_overhead()
    partition_export_and_warm_start()
    partition_scaling()
