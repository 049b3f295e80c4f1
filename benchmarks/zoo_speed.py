"""The test zoo's nets at their zoo inputs (batch 1; BERT 2 x 16 tokens): plain MXNet vs the
backend, interleaved.

`python benchmarks/zoo_speed.py [NAME ...]` (needs requirements-zoo.txt). Each net is built by
the tests' zoo harness (`tests/zoo.py`: GluonCV and GluonNLP nets with seeded random weights),
twice with the same weights: once hybridized plainly (MXNet's default CPU path, MKLDNN fusion
included), once with `hybridize(backend='TensorRT')`. Figures are medians of interleaved rounds;
the speed-up is MXNet's time over the backend's. It prints the largest relative difference of
the first output as a sanity check; correctness itself is tests/test_zoo.py's job.
"""
from __future__ import annotations

import os
import sys
import tempfile

import mxnet as mx

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

import zoo  # noqa: E402  the tests' harness
from run_all import CPU, interleaved, ms, rel_err  # noqa: E402

from mxtrt_backend.config import variable  # noqa: E402


def measure(net: zoo.ZooNet, rounds: int, calls: int) -> None:
    data = zoo.random_inputs(net)
    plain = zoo.build(net)
    plain.hybridize(static_alloc=True, static_shape=True)
    backend = zoo.build(net)
    backend.hybridize(static_alloc=True, static_shape=True, backend="TensorRT")
    ref, out = zoo.gluon_forward(plain, data), zoo.gluon_forward(backend, data)
    inputs = [mx.nd.array(v) for v in data.values()]

    def call(block: mx.gluon.HybridBlock):
        return lambda: [o.wait_to_read() for o in zoo._flat(block(*inputs))]

    times = interleaved({"MXNet": call(plain), "backend": call(backend)}, rounds, calls)
    m, b = ms(times["MXNet"]), ms(times["backend"])
    print(f"{net.name:<38}{m:>10.1f}{b:>10.1f}{m / b:>8.2f}x{ms(CPU['MXNet']):>10.1f}"
          f"{ms(CPU['backend']):>9.1f}{rel_err(out[0], ref[0]):>10.1e}", flush=True)


def main(argv: list[str]) -> int:
    names = argv or [net.name for net in zoo.NETS]
    unknown = [n for n in names if n not in zoo.BY_NAME]
    if unknown:
        print(f"unknown net {unknown[0]!r}; choose from {', '.join(zoo.BY_NAME)}", file=sys.stderr)
        return 2
    print(f"machine: {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}")
    print(f"{'net (zoo input)':<38}{'MXNet ms':>10}{'backend':>10}{'speed-up':>9}{'cpu MXNet':>10}"
          f"{'backend':>9}{'rel diff':>10}")
    with tempfile.TemporaryDirectory() as cache, variable("MXTRT_CACHE_DIR", cache):
        for name in names:
            measure(zoo.BY_NAME[name], rounds=3, calls=5)
    print(f"(load average at the end {os.getloadavg()[0]:.1f}; 'rel diff': first output, "
          "against MXNet's default path, which is not ground truth)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
