"""All CPU benchmarks in one run: `python benchmarks/run_all.py [--quick] [--only NAME,...]`.

Every comparison runs its variants in this one process, interleaved: each round runs every
variant `calls` times in turn, and the figures are medians over all rounds, so a change of
machine load affects all variants alike. Ratios compare medians measured that way. The load
average is printed before and after each section: on a shared machine, read figures taken under
load as such. Nothing here is a pass/fail test; the goals printed beside the figures are those of
issue 11. docs/benchmarks.md holds a run's output and what it says.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from typing import Callable, Mapping

import mxnet as mx
import numpy as np
import onnx
import onnxruntime as ort
from mxnet.gluon.model_zoo import vision

import mxtrt_backend  # noqa: F401  registers the backend
from mxtrt_backend import callbacks, export, extension, layout, params, partition
from mxtrt_backend.config import variable
from mxtrt_backend.engine import TensorRef
from mxtrt_backend.engine.cache import ENGINES, EngineCache
from mxtrt_backend.engine.ort import OrtEngine, OrtRuntime

QUICK = False  # --quick: fewer rounds, for a smoke run


def header(title: str) -> None:
    print(f"\n== {title}", flush=True)
    print(f"   (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)", flush=True)


def rounds(normal: int) -> int:
    return 1 if QUICK else normal


# CPU seconds (all threads of this process) per call of the variants last timed by
# `interleaved`: the work done, which load from other processes disturbs less than wall time.
CPU: dict[str, list[float]] = {}


def interleaved(variants: Mapping[str, Callable[[], object]], rounds: int, calls: int,
                before_round: Callable[[], object] | None = None) -> dict[str, list[float]]:
    """Seconds per call of each variant: ``rounds`` rounds, each running every variant ``calls``
    times in turn (after one untimed call). CPU seconds go to ``CPU``."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    CPU.clear()
    CPU.update({name: [] for name in variants})
    for _ in range(rounds):
        for name, call in variants.items():
            if before_round is not None:
                before_round()
            call()
            for _ in range(calls):
                start, used = time.perf_counter(), time.process_time()
                call()
                times[name].append(time.perf_counter() - start)
                CPU[name].append(time.process_time() - used)
    return times


def cpu_line(labels: Mapping[str, str]) -> str:
    """Median CPU ms per call of the variants last timed, under the given labels."""
    return "   cpu ms: " + ", ".join(f"{label} {ms(CPU[name]):.2f}" for name, label in labels.items())


def ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1e3


def seconds(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def rel_err(out: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(out - ref).max() / max(float(np.abs(ref).max()), 1e-12))


# --- models ------------------------------------------------------------------------------------


def zoo_block(name: str, shape: tuple[int, ...], seed: int = 0) -> mx.gluon.HybridBlock:
    """A model-zoo net with random weights, hybridized and run once (plain MXNet)."""
    mx.random.seed(seed)
    net = vision.get_model(name, pretrained=False, prefix="bench_")
    net.initialize(mx.init.Xavier())
    net.hybridize(static_alloc=True, static_shape=True)
    net(mx.nd.zeros(shape)).wait_to_read()
    return net


def copy_of(net: mx.gluon.HybridBlock, name: str, **hybridize: object) -> mx.gluon.HybridBlock:
    """Another block of the same net holding copies of ``net``'s values."""
    other = vision.get_model(name, pretrained=False, prefix="bench_")
    other.initialize()
    other.collect_params().load_dict({k: v.data() for k, v in net.collect_params().items()})
    other.hybridize(static_alloc=True, static_shape=True, **hybridize)
    return other


def symbol_of(net: mx.gluon.HybridBlock) -> tuple[mx.sym.Symbol, dict, dict]:
    """The block's graph and its own arrays (the seed's flow: ``{k: v.data() ...}``)."""
    sym = net._cached_graph[1]
    values = {k: v.data() for k, v in net.collect_params().items()}
    return (sym, {k: v for k, v in values.items() if k in sym.list_arguments()},
            {k: v for k, v in values.items() if k in sym.list_auxiliary_states()})


class Recorder:
    """The ONNX graphs the backend hands to ONNX Runtime's build, recorded while active. Engines
    are built afresh meanwhile (empty memory cache, a cache folder of its own)."""

    def __init__(self) -> None:
        self.graphs: list[bytes] = []

    def __enter__(self) -> "Recorder":
        ENGINES.clear_memory()
        self._folder = tempfile.TemporaryDirectory()
        self._cache = variable("MXTRT_CACHE_DIR", self._folder.name)
        self._cache.__enter__()
        self._original = OrtRuntime.build
        graphs = self.graphs

        def build(runtime: OrtRuntime, onnx_bytes: bytes, *rest: object) -> bytes:
            graphs.append(onnx_bytes)
            return self._original(runtime, onnx_bytes, *rest)

        OrtRuntime.build = build  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        OrtRuntime.build = self._original  # type: ignore[method-assign]
        self._cache.__exit__(None, None, None)
        self._folder.cleanup()


def bare_session(onnx_bytes: bytes, x: np.ndarray, config: Mapping[str, str] = {},
                 threads: int = 0) -> Callable[[], None]:
    """ONNX Runtime alone on a graph: its default options, input and output bound once."""
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = threads
    for key, value in config.items():
        so.add_session_config_entry(key, value)
    session = ort.InferenceSession(onnx_bytes, so, providers=["CPUExecutionProvider"])
    inp = ort.OrtValue.ortvalue_from_numpy(x)
    binding = session.io_binding()
    binding.bind_ortvalue_input(session.get_inputs()[0].name, inp)
    binding.bind_output(session.get_outputs()[0].name, "cpu")
    session.run_with_iobinding(binding)  # allocates the output once
    out = binding.get_outputs()[0]
    binding.bind_ortvalue_output(session.get_outputs()[0].name, out)
    return lambda: session.run_with_iobinding(binding)


def fresh_engines() -> None:
    """What a new process would not have: loaded engines, exported graphs, parameter digests."""
    ENGINES.clear_memory()
    export._exported.clear()
    params._memo.clear()


# --- sections ----------------------------------------------------------------------------------


def single_subgraph() -> None:
    header("Single subgraph: MXNet (Gluon, static_alloc) vs the backend vs ONNX Runtime alone on "
           "the exported graph; goals: backend within 5% of ONNX Runtime alone, >= 1.5x MXNet")
    print("   'ORT alone' uses ONNX Runtime's defaults (idle threads spin); 'ORT alone, sleep' "
          "sets allow_spinning=0 as the backend does by default")
    print(f"{'net':<14}{'batch':>6}{'MXNet':>9}{'backend':>9}{'spinning':>9}{'ORT alone':>10}"
          f"{'sleep':>8}{'vs MXNet':>9}{'vs ORT':>8}{'rel err':>9}")
    for name, size in (("resnet18_v1", 224), ("mobilenet1.0", 224), ("resnet50_v2", 224)):
        for batch in (1, 16):
            shape = (batch, 3, size, size)
            x = mx.nd.array(np.random.RandomState(0).uniform(-1, 1, shape).astype(np.float32))
            plain = zoo_block(name, shape)
            with Recorder() as seen:
                backend = copy_of(plain, name, backend="TensorRT")
                out = backend(x).asnumpy()
            spinning = copy_of(plain, name, backend="TensorRT",
                               backend_opts={"ort_spinning": "1"})
            spinning(x).wait_to_read()
            if len(seen.graphs) != 1:
                print(f"{name}: {len(seen.graphs)} subgraphs, skipped")
                continue
            err = rel_err(out, plain(x).asnumpy())
            xs = x.asnumpy()
            times = interleaved({
                "mxnet": lambda: plain(x).wait_to_read(),
                "backend": lambda: backend(x).wait_to_read(),
                "spinning": lambda: spinning(x).wait_to_read(),
                "bare": bare_session(seen.graphs[0], xs),
                "bare_sleep": bare_session(seen.graphs[0], xs,
                                           {"session.intra_op.allow_spinning": "0"}),
            }, rounds(5), 20 if batch == 1 else 4)
            m = {k: ms(v) for k, v in times.items()}
            print(f"{name:<14}{batch:>6}{m['mxnet']:>9.2f}{m['backend']:>9.2f}"
                  f"{m['spinning']:>9.2f}{m['bare']:>10.2f}{m['bare_sleep']:>8.2f}"
                  f"{m['mxnet'] / m['backend']:>8.2f}x{m['backend'] / m['bare']:>7.2f}x"
                  f"{err:>9.1e}", flush=True)
            print(cpu_line({"mxnet": "MXNet", "backend": "backend", "spinning": "spinning",
                            "bare": "ORT alone", "bare_sleep": "sleep"}))
    print("(ms per forward, medians; 'spinning': the backend with ort_spinning=1; 'vs ORT': "
          "backend time / ORT alone time, <= 1.05 is the goal)")


def mixed_graphs() -> None:
    header("Mixed graphs: resnet18_v1 batch 1 with ops left to MXNet; goals: >= 1.6x MXNet and "
           "within 15% of the single-subgraph figure")
    name, shape = "resnet18_v1", (1, 3, 224, 224)
    x = mx.nd.array(np.random.RandomState(0).uniform(-1, 1, shape).astype(np.float32))
    plain = zoo_block(name, shape)
    ref = plain(x).asnumpy()
    cases = ("", "Pooling", "elemwise_add", "Activation")
    variants: dict[str, Callable[[], object]] = {"mxnet": lambda: plain(x).wait_to_read()}
    subgraphs: dict[str, int] = {}
    errors: dict[str, float] = {}
    for case in cases:
        for spinning in ("0", "1"):
            opts = {"ort_spinning": spinning, **({"exclude_ops": case} if case else {})}
            with Recorder() as seen:
                net = copy_of(plain, name, backend="TensorRT", backend_opts=opts)
                errors[case] = max(errors.get(case, 0.0), rel_err(net(x).asnumpy(), ref))
            subgraphs[case] = max(subgraphs.get(case, 0), len(seen.graphs))
            variants[f"{case}/{spinning}"] = (lambda n: lambda: n(x).wait_to_read())(net)
    times = interleaved(variants, rounds(5), 15)
    m = {k: ms(v) for k, v in times.items()}
    cpu = {k: ms(v) for k, v in CPU.items()}
    whole = m["/0"]
    print(f"{'exclude_ops':<14}{'subgraphs':>10}{'sleeping ms':>12}{'vs MXNet':>9}{'vs whole':>9}"
          f"{'spinning ms':>12}{'vs MXNet':>9}{'cpu sleep/spin':>16}{'rel err':>9}")
    for case in cases:
        sleep, spin = m[f"{case}/0"], m[f"{case}/1"]
        print(f"{case or '(none)':<14}{subgraphs[case]:>10}{sleep:>12.2f}{m['mxnet'] / sleep:>8.2f}x"
              f"{sleep / whole:>8.2f}x{spin:>12.2f}{m['mxnet'] / spin:>8.2f}x"
              f"{cpu[f'{case}/0']:>8.1f}/{cpu[f'{case}/1']:<7.1f}{errors[case]:>9.1e}", flush=True)
    print(f"(MXNet {m['mxnet']:.2f} ms; 'sleeping': the default, ONNX Runtime's idle threads sleep; "
          "'spinning': ort_spinning=1, ONNX Runtime's default and this backend's before issue 11)")


def shared_parameters() -> None:
    header("Shared parameters: the backend bound to the very arrays of a Gluon block that keeps "
           "running (the seed's flow); goals: >= 1.8x MXNet, within 5% of bound copies")
    print(f"{'net':<14}{'batch':>6}{'MXNet':>9}{'copies':>9}{'shared':>9}{'vs MXNet':>9}"
          f"{'vs copies':>10}{'no fix':>9}{'1st after block':>16}{'rel err':>9}")
    name = "resnet18_v1"
    for batch in (1, 16):
        shape = (batch, 3, 224, 224)
        x = mx.nd.array(np.random.RandomState(0).uniform(-1, 1, shape).astype(np.float32))
        net = zoo_block(name, shape)
        sym, args, aux = symbol_of(net)
        part = sym.optimize_for("TensorRT", args, aux, ctx=mx.cpu())
        shared = part.bind(mx.cpu(), dict(args, data=x), aux_states=aux, grad_req="null")
        copies = part.bind(mx.cpu(), {k: v.copy() for k, v in dict(args, data=x).items()},
                           aux_states={k: v.copy() for k, v in aux.items()}, grad_req="null")

        def run(ex: mx.executor.Executor) -> None:
            ex.forward(is_train=False)
            ex.outputs[0].wait_to_read()

        def block_runs() -> None:  # its MKLDNN kernels put its weights in their own layout
            net(x).wait_to_read()

        run(shared)
        err = rel_err(shared.outputs[0].asnumpy(), net(x).asnumpy())
        calls = 15 if batch == 1 else 4
        times = interleaved({"mxnet": block_runs, "copies": lambda: run(copies),
                             "shared": lambda: run(shared)}, rounds(5), calls, block_runs)
        main_cpu = cpu_line({"mxnet": "MXNet", "copies": "copies", "shared": "shared"}).strip()
        first = []  # the first backend forward after the block ran: reorder once, re-hash
        for _ in range(rounds(3)):
            block_runs()
            first.append(seconds(lambda: run(shared)))
        held, layout.DefaultLayout.restore = layout.DefaultLayout.restore, lambda self: None
        try:
            unfixed = interleaved({"shared": lambda: run(shared)}, rounds(3), calls, block_runs)
        finally:
            layout.DefaultLayout.restore = held  # type: ignore[method-assign]
        m = {k: ms(v) for k, v in times.items()}
        print(f"{name:<14}{batch:>6}{m['mxnet']:>9.2f}{m['copies']:>9.2f}{m['shared']:>9.2f}"
              f"{m['mxnet'] / m['shared']:>8.2f}x{m['shared'] / m['copies']:>9.2f}x"
              f"{ms(unfixed['shared']):>9.2f}{ms(first):>16.2f}{err:>9.1e}", flush=True)
        print(cpu_line({"shared": "no fix"}) + "; " + main_cpu)
    print("('no fix': the shared case without putting the weights back in the default layout, as "
          "before issue 11; '1st after block': the first backend forward after the block's own, "
          "which reorders the weights once and re-hashes them)")


def cached_engine() -> None:
    header("The cached engine vs a session made from the exported ONNX; must not cost run time")
    print("   'engine': the CPU engine as cached now (ENABLE_ALL model, weights handed over, "
          "DISABLE_ALL at load); 'extended': the engine before issue 11 (EXTENDED model, "
          "ENABLE_ALL at load)")
    print(f"{'net':<14}{'batch':>6}{'from ONNX':>10}{'engine':>8}{'ratio':>7}{'extended':>10}"
          f"{'ratio':>7}{'same graph':>12}")
    for name in ("resnet18_v1", "resnet50_v2"):
        shape = (1, 3, 224, 224)
        x = np.random.RandomState(0).uniform(-1, 1, shape).astype(np.float32)
        plain = zoo_block(name, shape)
        with Recorder() as seen, tempfile.TemporaryDirectory() as folder:
            copy_of(plain, name, backend="TensorRT",
                    backend_opts={"cache_dir": folder})(mx.nd.array(x)).wait_to_read()
        source = seen.graphs[0]
        options = mxtrt_backend.Options()
        with tempfile.TemporaryDirectory() as folder:
            extended = OrtRuntime(portable=True).build(source, [], [], options, 0)
            final = [os.path.join(folder, f"{i}.onnx") for i in range(2)]
            for model, path in zip((source, extended), final):
                so = ort.SessionOptions()
                so.log_severity_level = 3
                so.optimized_model_filepath = path
                ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
            same = sorted(node_signatures(final[0])) == sorted(node_signatures(final[1]))
        runtime = OrtRuntime()
        engine = runtime.load(runtime.build(source, [], [], options, 0), ["data0"],
                              [ort.InferenceSession(source).get_outputs()[0].name], options, 0)
        out = np.empty(ort.InferenceSession(source).run(None, {"data0": x})[0].shape, np.float32)
        refs = ([TensorRef(x.ctypes.data, x.shape, x.dtype)],
                [TensorRef(out.ctypes.data, out.shape, out.dtype)])
        sleep = {"session.intra_op.allow_spinning": "0"}
        times = interleaved({"onnx": bare_session(source, x, sleep),
                             "engine": lambda: engine.run(*refs, 0),
                             "extended": bare_session(extended, x, sleep)}, rounds(5), 20)
        a, b, c = ms(times["onnx"]), ms(times["engine"]), ms(times["extended"])
        print(f"{name:<14}{1:>6}{a:>10.2f}{b:>8.2f}{b / a:>6.2f}x{c:>10.2f}{c / a:>6.2f}x"
              f"{str(same):>12}", flush=True)
        print(cpu_line({"onnx": "from ONNX", "engine": "engine", "extended": "extended"}))
    print("(all with sleeping threads; 'same graph': the extended model and the ONNX end with the "
          "same multiset of nodes, attributes included, after ONNX Runtime's ENABLE_ALL)")


def node_signatures(path: str) -> list[tuple]:
    graph = onnx.load(path).graph
    return [(n.op_type, n.domain, tuple(sorted((a.name, str(onnx.helper.get_attribute_value(a)))
                                                for a in n.attribute))) for n in graph.node]


class Stopwatch:
    """Total time spent in one function, wherever (whichever thread) it is called from."""

    def __init__(self, owner: object, name: str, static: bool = False) -> None:
        self.total, self.calls = 0.0, 0
        self.owner, self.name = owner, name
        self.original = getattr(owner, name)
        self.static = static

        def timed(*args: object, **kwargs: object) -> object:
            start = time.perf_counter()
            try:
                return self.original(*args, **kwargs)
            finally:
                self.total += time.perf_counter() - start
                self.calls += 1

        setattr(owner, name, staticmethod(timed) if static else timed)

    def us_per_call(self) -> float:
        return self.total / max(self.calls, 1) * 1e6

    def restore(self) -> None:
        setattr(self.owner, self.name,
                staticmethod(self.original) if self.static else self.original)


def warm_start() -> None:
    header("Warm start: bind to first output with a warm disk cache, in a fresh state (goal "
           "<= 150 ms for resnet50_v2, 100 ms ideal); cold: nothing cached")
    steps = (("export", export, "export_structure", False),
             ("param digest", params.ParamTracker, "digest", False),
             ("read+check file", EngineCache, "_read", False),
             ("ORT session", OrtRuntime, "load", False),
             ("first run", OrtEngine, "run", False))
    print(f"{'net':<14}{'cold ms':>9}{'warm ms':>9}   warm start split (ms, medians)")
    for name in ("resnet50_v2", "densenet121"):
        shape = (1, 3, 224, 224)
        sym, args, aux = symbol_of(zoo_block(name, shape))
        args = {k: v.copy() for k, v in args.items()}
        aux = {k: v.copy() for k, v in aux.items()}
        x = mx.nd.zeros(shape)
        part = sym.optimize_for("TensorRT", args, aux, ctx=mx.cpu())

        def first_output() -> None:
            ex = part.bind(mx.cpu(), dict(args, data=x), aux_states=aux, grad_req="null")
            ex.forward(is_train=False)
            ex.outputs[0].wait_to_read()

        with tempfile.TemporaryDirectory() as cache, variable("MXTRT_CACHE_DIR", cache):
            fresh_engines()
            cold = seconds(first_output)
            warm, split = [], []
            for _ in range(rounds(5)):
                fresh_engines()
                watches = [Stopwatch(owner, attr, static) for _, owner, attr, static in steps]
                try:
                    warm.append(seconds(first_output))
                finally:
                    for w in watches:
                        w.restore()
                split.append([w.total * 1e3 for w in watches])
        parts = np.median(np.array(split), axis=0)
        rest = statistics.median(warm) * 1e3 - parts.sum()
        print(f"{name:<14}{cold * 1e3:>9.0f}{ms(warm):>9.0f}   " + ", ".join(
            f"{label} {t:.0f}" for (label, *_), t in zip(steps, parts)) + f", rest {rest:.0f}",
            flush=True)
    print("('rest': binding, partition-time work in MXNet, the executor and Python around the steps)")


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
    ext = callbacks.extension()
    installed = ext._callbacks
    timed = extension.FORWARD(callbacks._forward)
    ext.lib.mxtrt_set_callbacks(*installed[:3], timed, installed[4])
    try:
        times = interleaved({"backend": backend}, 1, 300 if QUICK else 3000)
    finally:
        ext.lib.mxtrt_set_callbacks(*installed)
        in_op.restore()
        in_engine.restore()
    times.update(interleaved({"plain": plain}, 1, 300 if QUICK else 3000))
    print(f"inside the op per forward:  {in_op.us_per_call():6.1f} us")
    print(f"of which the engine:        {in_engine.us_per_call():6.1f} us")
    print(f"op overhead (difference):   {in_op.us_per_call() - in_engine.us_per_call():6.1f} us")
    print(f"whole executor forward + wait: backend {ms(times['backend']) * 1e3:.1f} us, plain "
          f"MXNet {ms(times['plain']) * 1e3:.1f} us (adds MXNet's custom-op dispatch and the C -> "
          "Python call, which Python cannot time)")


def partition_scaling() -> None:
    header("Partition time vs graph size (chains; every 10th node unsupported); must be linear")
    print(f"{'nodes':>7}{'total s':>10}{'us/node':>9}{'mxtrt s':>10}{'us/node':>9}")
    for n in (100, 1_000, 3_000) if QUICK else (100, 1_000, 3_000, 10_000):
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
          " selector for every node it visits: quadratic in MXNet 1.9)")


SECTIONS: dict[str, Callable[[], None]] = {
    "single": single_subgraph,
    "mixed": mixed_graphs,
    "shared": shared_parameters,
    "engine": cached_engine,
    "warm": warm_start,
    "overhead": op_overhead,
    "partition": partition_scaling,
}


def main(argv: list[str] | None = None) -> int:
    global QUICK
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one round each: a smoke run")
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"comma-separated sections, of: {', '.join(SECTIONS)}")
    args = parser.parse_args(argv)
    QUICK = args.quick
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown section {unknown[0]!r}; choose from {', '.join(SECTIONS)}")
    print(f"machine: {os.cpu_count()} CPUs; mxnet {mx.__version__}; onnxruntime {ort.__version__}; "
          f"python {sys.version.split()[0]}; {time.strftime('%Y-%m-%d %H:%M')}")
    with tempfile.TemporaryDirectory() as cache, variable("MXTRT_CACHE_DIR", cache):
        for name in chosen:
            SECTIONS[name]()
    print(f"\n(load average at the end {os.getloadavg()[0]:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
