"""GluonCV nets with random weights: MXNet vs the backend vs ONNX Runtime alone, interleaved.

`python benchmarks/gluoncv_nets.py [NAME ...]` (needs gluoncv: `pip install --no-deps
gluoncv==0.10.5.post0`, then its dependencies as docs/benchmarks.md lists; numpy stays 1.23.5).

For each net: plain MXNet (hybridized, static_alloc), the backend with ONNX Runtime's idle threads
sleeping (the default) and spinning (ort_spinning=1), and ONNX Runtime alone on the graph the
backend exported, with its defaults and with sleeping threads, one thread and two. If ONNX
Runtime alone is slower than MXNet, the net meets a weakness of ONNX Runtime's kernels; if only
the spinning variants lose, it is thread contention; if the figures move from run to run but not
between variants, it is the machine's noise.
"""
from __future__ import annotations

import os
import sys
import warnings
from typing import Callable

import mxnet as mx
import numpy as np

from mxtrt_backend.config import variable
from run_all import Recorder, bare_session, interleaved, ms, rel_err

NETS: dict[str, tuple[int, int]] = {  # name -> input height, width
    "xception": (299, 299),
    "deeplab_resnet50_ade": (240, 240),
    "fcn_resnet50_voc": (240, 240),
}


def gluoncv_block(name: str, shape: tuple[int, ...]) -> mx.gluon.HybridBlock:
    from gluoncv import model_zoo

    mx.random.seed(0)
    # The segmentation heads initialise themselves; MXNet warns for each of their parameters.
    warnings.filterwarnings("ignore", message="Parameter .* is already initialized")
    # Segmentation nets fix their pooling branch to the crop size they are built for.
    kwargs = {} if name == "xception" else {"pretrained_base": False, "crop_size": shape[-1]}
    net = model_zoo.get_model(name, pretrained=False, **kwargs)
    net.initialize(mx.init.Xavier(magnitude=0.5))
    net.hybridize(static_alloc=True, static_shape=True)
    first(net(mx.nd.zeros(shape))).wait_to_read()
    return net


def first(out: object) -> mx.nd.NDArray:
    """The first output (segmentation nets return a tuple)."""
    while isinstance(out, (list, tuple)):
        out = out[0]
    assert isinstance(out, mx.nd.NDArray)
    return out


def measure(name: str) -> None:
    h, w = NETS[name]
    shape = (1, 3, h, w)
    x = mx.nd.array(np.random.RandomState(0).uniform(-1, 1, shape).astype(np.float32))
    plain = gluoncv_block(name, shape)
    values = [v.data() for v in plain.collect_params().values()]

    def backend(**opts: str) -> mx.gluon.HybridBlock:
        net = gluoncv_block(name, shape)
        for param, value in zip(net.collect_params().values(), values):  # same net, other prefix
            param.set_data(value)
        net.hybridize(static_alloc=True, static_shape=True, backend="TensorRT", backend_opts=opts)
        return net

    with Recorder() as seen:
        sleeping = backend()
        out = first(sleeping(x)).asnumpy()
    spinning = backend(ort_spinning="1")
    first(spinning(x)).wait_to_read()
    err = rel_err(out, first(plain(x)).asnumpy())
    variants: dict[str, Callable[[], object]] = {
        "MXNet": lambda: first(plain(x)).wait_to_read(),
        "backend": lambda: first(sleeping(x)).wait_to_read(),
        "backend spinning": lambda: first(spinning(x)).wait_to_read(),
    }
    if len(seen.graphs) == 1 and len(seen.graphs[0]) < 2_000_000_000:
        xs = x.asnumpy()
        sleep = {"session.intra_op.allow_spinning": "0"}
        variants["ORT alone"] = bare_session(seen.graphs[0], xs)
        variants["ORT alone, sleeping"] = bare_session(seen.graphs[0], xs, sleep)
        variants["ORT alone, 1 thread"] = bare_session(seen.graphs[0], xs, threads=1)
    times = interleaved(variants, 3, 5)
    base = ms(times["MXNet"])
    print(f"\n{name} {'x'.join(map(str, shape))}: {len(seen.graphs)} subgraph(s), rel err {err:.1e}"
          f" (load average {os.getloadavg()[0]:.1f})")
    for label, samples in times.items():
        print(f"  {label:<22}{ms(samples):9.1f} ms  {base / ms(samples):5.2f}x MXNet  "
              f"(spread {min(samples) * 1e3:.0f}-{max(samples) * 1e3:.0f})", flush=True)


def main(argv: list[str]) -> int:
    names = argv or list(NETS)
    unknown = [n for n in names if n not in NETS]
    if unknown:
        print(f"unknown net {unknown[0]!r}; choose from {', '.join(NETS)}", file=sys.stderr)
        return 2
    import tempfile

    with tempfile.TemporaryDirectory() as cache, variable("MXTRT_CACHE_DIR", cache):
        for name in names:
            measure(name)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
