"""Failing loudly and safely: wrong inputs, concurrency, several processes, long runs."""
from __future__ import annotations

import multiprocessing
import resource
import threading

import mxnet as mx
import numpy as np
import pytest

from helpers import forward, op_state, random_params, rel_err

SHAPE = (4, 3, 8, 8)


def net() -> mx.sym.Symbol:
    x = mx.sym.Convolution(mx.sym.var("data"), num_filter=8, kernel=(3, 3), pad=(1, 1), name="c")
    x = mx.sym.Activation(x, act_type="relu", name="r")
    x = mx.sym.Pooling(x, kernel=(1, 1), global_pool=True, pool_type="avg", name="p")
    return mx.sym.FullyConnected(x, num_hidden=5, name="fc")


def trt_executor(sym, args):
    trt = sym.optimize_for("TensorRT", args, {}, ctx=mx.cpu())
    return trt.bind(mx.cpu(), dict(args, data=mx.nd.zeros(SHAPE)), grad_req="null")


def batches(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.RandomState(seed)
    return [rng.uniform(-1, 1, SHAPE).astype("f") for _ in range(n)]


@pytest.fixture
def bound_state():
    """The op state of the network's subgraph, and zero buffers matching its inputs and output."""
    from mxtrt_backend.engine import TensorRef

    sym = net()
    args, _ = random_params(sym, {"data": SHAPE})
    partitioned = sym.optimize_for("TensorRT", args, {}, ctx=mx.cpu())
    shapes = dict(zip(sym.list_arguments(), sym.infer_shape(data=SHAPE)[0]))
    with op_state(partitioned, shapes) as state:
        buffers = [np.zeros(shape, dtype) for shape, dtype in zip(state.in_shapes, state.in_dtypes)]
        out = np.zeros((SHAPE[0], 5), np.float32)
        yield (state, [TensorRef(b.ctypes.data, b.shape, b.dtype) for b in buffers],
               [TensorRef(out.ctypes.data, out.shape, out.dtype)])


def test_wrong_input_shape_names_the_subgraph_input(bound_state):
    from mxtrt_backend import op

    state, refs, outs = bound_state
    data = state.subgraph.input_names.index("data0")
    refs[data] = refs[data]._replace(shape=(2, 3, 8, 8))
    with pytest.raises(ValueError, match=r"input 'data0' is float32\[2, 3, 8, 8\], the engine was "
                                         r"made for float32\[4, 3, 8, 8\]"):
        op.run_state(state, refs, outs, 0)


def test_output_buffer_of_another_dtype_is_refused_before_the_engine_writes(bound_state):
    from mxtrt_backend import op
    from mxtrt_backend.engine import TensorRef

    state, refs, _ = bound_state
    small = np.zeros((4, 5), np.float16)  # half the bytes the engine would write
    with pytest.raises(ValueError, match=r"buffer for output 'fc' is float16\[4, 5\], the exported "
                                         r"graph computes float32\[4, 5\]"):
        op.run_state(state, refs, [TensorRef(small.ctypes.data, small.shape, small.dtype)], 0)


def test_one_executor_from_four_threads_and_four_executors():
    sym = net()
    args, _ = random_params(sym, {"data": SHAPE})
    data = batches(8)
    expected = [forward(sym, args, {}, {"data": x})[0] for x in data]
    shared = trt_executor(sym, args)
    lock = threading.Lock()  # an executor's arg_dict/outputs are shared state: the user serialises
    errors: list[str] = []

    def use_shared() -> None:
        for x, ref in zip(data, expected):
            with lock:
                shared.arg_dict["data"][:] = x
                shared.forward(is_train=False)
                out = shared.outputs[0].asnumpy()
            if rel_err(out, ref) >= 1e-5:
                errors.append("shared executor gave a wrong answer")

    def use_own() -> None:
        own = trt_executor(sym, args)
        for x, ref in zip(data, expected):
            own.arg_dict["data"][:] = x
            own.forward(is_train=False)
            if rel_err(own.outputs[0].asnumpy(), ref) >= 1e-5:
                errors.append("own executor gave a wrong answer")

    threads = [threading.Thread(target=f) for f in [use_shared] * 4 + [use_own] * 4]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors and not any(t.is_alive() for t in threads)


def _build_in_child(cache_dir: str, queue) -> None:
    import os

    os.environ["MXTRT_CACHE_DIR"] = cache_dir
    import mxtrt_backend  # noqa: F401

    sym = net()
    args, _ = random_params(sym, {"data": SHAPE})
    x = batches(1)[0]
    out = forward(sym.optimize_for("TensorRT", args, {}, ctx=mx.cpu()), args, {}, {"data": x})[0]
    queue.put(rel_err(out, forward(sym, args, {}, {"data": x})[0]))


def test_two_processes_building_the_same_engine(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    cache_dir = tmp_path / "shared-cache"
    procs = [ctx.Process(target=_build_in_child, args=(str(cache_dir), queue)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0, 0]
    assert all(queue.get(timeout=10) < 1e-5 for _ in procs)
    assert len(list(cache_dir.glob("*.engine"))) == 1
    assert not list(cache_dir.glob("*.tmp"))


def test_ten_thousand_forwards_keep_memory_and_results_stable():
    sym = mx.sym.Activation(mx.sym.FullyConnected(mx.sym.var("data"), num_hidden=16, name="fc"),
                            act_type="tanh", name="t")
    args, _ = random_params(sym, {"data": (2, 8)})
    trt = sym.optimize_for("TensorRT", args, {}, ctx=mx.cpu())
    x = np.random.RandomState(0).uniform(-1, 1, (2, 8)).astype("f")
    ex = trt.bind(mx.cpu(), dict(args, data=mx.nd.array(x)), grad_req="null")
    ex.forward(is_train=False)
    first = ex.outputs[0].asnumpy()
    rss = []
    for i in range(10_000):
        ex.forward(is_train=False)
        if i % 2_000 == 1_999:
            ex.outputs[0].wait_to_read()
            rss.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    np.testing.assert_array_equal(ex.outputs[0].asnumpy(), first)
    assert rss[-1] - rss[0] < 20 * 1024, f"peak RSS grew by {rss[-1] - rss[0]} KiB: {rss}"
