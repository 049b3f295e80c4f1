"""Heavy use from several threads, each run in a child process so that a crash fails the test
instead of killing pytest. The short variants run in CI; the long ones are marked slow (run them
with `python -m pytest -m slow tests/test_stress.py`)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

# Two threads, each on its own symbol, partition in a loop through one of the three entry points.
# MXNet's custom-partitioner state is process-wide: unserialised, this crashed the process
# (optimize_for 6 of 6 runs at 3000 loops, simple_bind under the flag 5 of 6, Gluon 2 of 6).
PARTITION = textwrap.dedent("""
    import os, sys, threading
    import mxnet as mx, numpy as np
    import mxtrt_backend

    path, loops = sys.argv[1], int(sys.argv[2])
    SHAPE = (2, 3, 8, 8)

    def symbol(prefix, depth):
        x = mx.sym.var("data")
        for i in range(depth):
            x = mx.sym.Convolution(x, num_filter=4, kernel=(3, 3), pad=(1, 1), name=f"{prefix}c{i}")
            x = mx.sym.Activation(x, act_type="relu", name=f"{prefix}r{i}")
        return mx.sym.FullyConnected(x, num_hidden=3, name=f"{prefix}fc")

    def params(sym):
        shapes = sym.infer_shape(data=SHAPE)[0]
        return {n: mx.nd.ones(s) * 0.01 for n, s in zip(sym.list_arguments(), shapes) if n != "data"}

    def optimize_for(prefix, depth):
        sym = symbol(prefix, depth)
        args = params(sym)
        def step():
            trt = sym.optimize_for("TensorRT", args, {}, ctx=mx.cpu())
            assert trt.report.converted_nodes == 2 * depth + 1, trt.report.summary()
        return step

    def flag(prefix, depth):
        sym = symbol(prefix, depth)
        os.environ["MXNET_USE_TENSORRT"] = "1"
        def step():
            ex = sym.simple_bind(mx.cpu(), data=SHAPE, grad_req="null")
            assert "_TensorRT" in ex.get_optimized_symbol().tojson()
        return step

    def gluon(prefix, depth):
        x = mx.nd.ones(SHAPE)
        def step():
            net = mx.gluon.nn.HybridSequential(prefix=prefix)
            with net.name_scope():
                for _ in range(depth):
                    net.add(mx.gluon.nn.Conv2D(4, 3, padding=1, activation="relu"))
                net.add(mx.gluon.nn.Dense(3))
            net.initialize(mx.init.Constant(0.01))
            net.hybridize(backend="TensorRT")
            net(x).wait_to_read()
        return step

    failures = []
    def loop(step):
        try:
            for _ in range(loops):
                step()
        except Exception as err:
            failures.append(repr(err))

    make = {"optimize_for": optimize_for, "flag": flag, "gluon": gluon}[path]
    threads = [threading.Thread(target=loop, args=(make(p, d),)) for p, d in (("a_", 1), ("b_", 2))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print("FAILURES", failures)
    sys.exit(1 if failures else 0)
""")


def _partition_in_threads(path: str, loops: int, cache_dir, timeout: float) -> None:
    env = dict(os.environ, MXTRT_CACHE_DIR=str(cache_dir))
    done = subprocess.run([sys.executable, "-c", PARTITION, path, str(loops)], env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, (f"exit code {done.returncode} (negative: killed by that signal)"
                                  f"\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")


PATHS = ["optimize_for", "flag", "gluon"]


@pytest.mark.parametrize("path", PATHS)
def test_two_threads_partitioning_at_once(path, isolated_cache):
    _partition_in_threads(path, 60, isolated_cache, timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize("path", PATHS)
def test_two_threads_partitioning_at_once_3000_times(path, isolated_cache):
    _partition_in_threads(path, 3000, isolated_cache, timeout=3600)
