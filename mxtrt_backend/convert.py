"""Ahead-of-time conversion: partition a checkpoint and build its engines once, ship the result.

``convert`` writes ``DIR/model-symbol.json`` (the partitioned symbol), ``DIR/model-0000.params``,
``DIR/engines/`` (the engines its `_TensorRT` nodes need) and ``DIR/mxtrt.json`` (what the
engines were built for: runtime, its version, the device model). ``load(DIR)`` reads it back and
makes those engines available, so the first forward builds nothing; on a machine whose runtime
version or GPU model differs it says that the engines will be rebuilt. The engines are also
copied to the user's engine cache, so plain ``mx.model.load_checkpoint`` after
``import mxtrt_backend`` finds them on this machine as well.

The folder appears whole or not at all: everything is written to a hidden folder beside it,
renamed into place at the end; an earlier conversion there is replaced, not merged.
"""
from __future__ import annotations

import argparse
import json
import logging
import secrets
import shutil
import sys
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence

from . import cli, config, partition
from .cli import CPU, CliError, Device, Shape
from .engine.cache import ENGINES, Hit, write_atomic

log = logging.getLogger("mxtrt")

PREFIX = "model"
EPOCH = 0
ENGINES_DIR = "engines"
MANIFEST = "mxtrt.json"
MANIFEST_FORMAT = 1


@dataclass(frozen=True)
class BuiltFor:
    """What engines serve: built by this runtime and version, for devices of this key."""

    runtime: str
    version: str
    device: str

    def __str__(self) -> str:
        return f"{self.runtime} {self.version} on {self.device}"


@dataclass
class Converted:
    folder: Path
    subgraphs: int
    engines: int
    report: partition.PartitionReport
    built_for: BuiltFor


def _here(kind: str) -> tuple[dict[str, BuiltFor], str | None]:
    """What each device of this kind offers here ("cpu", "gpu:0", ...), or why there is none."""
    from .engine import gpu, runtime_for

    if kind == "cpu":
        runtime = runtime_for("cpu")
        return {"cpu": BuiltFor(runtime.name, runtime.version(), runtime.device_key(0))}, None
    support = gpu.gpu_support(gpu.probe(), gpu.mxnet_has_cuda())
    if support.runtime is None:
        return {}, support.detail
    runtime = runtime_for(kind)
    return {f"{kind}:{i}": BuiltFor(runtime.name, runtime.version(), runtime.device_key(i))
            for i in range(gpu.probe().gpus)}, None


def rebuild_notice(folder: str, kind: str, built: BuiltFor, here: Mapping[str, BuiltFor],
                   problem: str | None) -> str | None:
    """What to tell a user whose devices the converted engines do not serve; None when all do."""
    lead = f"mxtrt: the engines in {folder} are for {built}"
    if problem is not None:
        return f"{lead}; this machine cannot run {kind} contexts ({problem})"
    others = {label: offer for label, offer in here.items() if offer != built}
    if not others:
        return None
    offers = "; ".join(f"{label} has {offer}" for label, offer in others.items())
    return (f"{lead}; {offers}: the first forward on {', '.join(others)} will rebuild them "
            "(then they are cached)")


def _built_for(root: Path) -> tuple[str, BuiltFor] | None:
    """The device kind and what a converted folder's engines are for, from its manifest."""
    try:
        manifest = json.loads((root / MANIFEST).read_text())
        return str(manifest["ctx"]).partition(":")[0], BuiltFor(**manifest["built_for"])
    except FileNotFoundError:
        return None  # converted by mxtrt 0.1.0, before manifests
    except (OSError, ValueError, KeyError, TypeError) as err:
        log.warning("mxtrt: %s is unreadable (%r); its engines are used where they fit",
                    root / MANIFEST, err)
        return None


def load(folder: str):
    """(symbol, arg_params, aux_params) of a converted model; its engines need no rebuild on a
    machine with the runtime version and device model they were built for."""
    import mxnet as mx

    root = Path(folder)
    found = _built_for(root)
    if found is not None:
        kind, built = found
        notice = rebuild_notice(folder, kind, built, *_here(kind))
        if notice:
            log.warning(notice)
    ENGINES.add_bundle(str(root / ENGINES_DIR))
    return mx.model.load_checkpoint(str(root / PREFIX), EPOCH)


# --- Writing the folder whole or not at all.

def _check_target(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise CliError(f"--out {out} is a file; give a folder")
    if out.is_dir() and any(out.iterdir()) and not (
            (out / MANIFEST).exists() or (out / f"{PREFIX}-symbol.json").exists()):
        raise CliError(f"--out {out} holds files that are not a converted model; give a new or "
                       "empty folder (an earlier conversion there would be replaced)")


@contextmanager
def _staged(out: Path) -> Iterator[Path]:
    """A hidden folder beside ``out`` to write into; renamed to ``out`` when the block ends well
    (replacing an earlier conversion), removed with any folder made for it when it does not."""
    missing = [p for p in (out.parent, *out.parent.parents) if not p.exists()]
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = out.parent / f".{out.name}.converting-{secrets.token_hex(4)}"
        staging.mkdir()
    except OSError as err:
        raise CliError(f"--out {out}: cannot write there ({err})") from None
    try:
        yield staging
        _replace(out, staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for folder in missing:  # nearest first
            try:
                folder.rmdir()
            except OSError:
                break
        raise


def _replace(out: Path, staging: Path) -> None:
    old = out.parent / f".{out.name}.replaced-{secrets.token_hex(4)}"
    if out.exists():
        out.rename(old)
    try:
        staging.rename(out)
    except BaseException:
        if old.exists():
            old.rename(out)  # the earlier conversion stays as it was
        raise
    shutil.rmtree(old, ignore_errors=True)


# Where and how convert keeps the engines it builds: its own business, not options the converted
# model carries.
_BUILD_OPTIONS = {"cache_dir", "cache_max_size"}


def _without_build_options(symbol_json: str) -> str:
    """The partitioned symbol as saved, without convert's _BUILD_OPTIONS."""
    graph = json.loads(symbol_json)
    for node in graph["nodes"]:
        raw = node.get("attrs", {}).get(partition.ATTR_OPTIONS)
        if raw is not None:
            opts = json.loads(raw)
            for name in _BUILD_OPTIONS:
                opts.pop(name, None)
            node["attrs"][partition.ATTR_OPTIONS] = json.dumps(opts, sort_keys=True)
    return json.dumps(graph, ensure_ascii=False, indent=2)


@contextmanager
def _progress(total: int) -> Iterator[None]:
    """One progress line per engine made, on stderr, from the engine cache's own events."""
    done = 0

    def seen(key: str, hit: Hit) -> None:
        nonlocal done
        if hit.source == "memory":
            return
        done += 1
        bar = "#" * done + "." * max(total - done, 0)
        print(f"\rbuilding engines [{bar}] {done}/{total}", end="", file=sys.stderr, flush=True)

    with ENGINES.watch(seen):
        try:
            yield
        finally:
            if done:
                print(file=sys.stderr)


def _copy_to(cache_dir: str, engines: Sequence[Path]) -> None:
    # By rename: a running process may have an engine of the same name mapped (docs/reliability.md).
    try:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        for path in engines:
            write_atomic(Path(cache_dir) / path.name, path.read_bytes())
    except OSError as err:
        log.warning("mxtrt: could not copy the engines to the engine cache %s (%s); load() of "
                    "the converted folder still finds them", cache_dir, err)


def _check_int8_scales(raw: Mapping[str, str], device: Device) -> None:
    """An int8 engine for a GPU takes its scales from a calibration cache here: calibration
    batches cannot be given on a command line, and online calibration (calibration_iters) needs
    forwards a conversion does not run."""
    if device.kind != "gpu":
        return
    try:
        resolved = config.resolve(raw)
    except config.CalibrationMissing:
        resolved = None
    if resolved is None or (config.uses_int8(resolved.precision) and not (
            resolved.calibration_cache or resolved.calibration_data)):
        raise CliError("-o precision=int8 needs -o calibration_cache=FILE (a TensorRT calibration "
                       "cache; calibration batches cannot be given on a command line, and "
                       "calibration_iters needs forwards a conversion does not run)")


def convert(prefix: str, epoch: int, out: str, shapes: Mapping[str, Shape],
            options: Mapping[str, str] | None = None, device: Device = CPU) -> Converted:
    """Partition the checkpoint and build its engines on ``device`` into the folder ``out``.

    ``options`` are backend options; ``cache_dir`` among them names the engine cache the engines
    are also copied to (default: the user's), it is not stored in the converted symbol.
    """
    import mxnet as mx

    from .engine import runtime_for

    raw = dict(options or {})
    user_cache = config.resolve({k: v for k, v in raw.items() if k == "cache_dir"}).cache_dir
    for name in _BUILD_OPTIONS:
        raw.pop(name, None)
    _check_int8_scales(raw, device)
    resolved = config.resolve(raw)
    target = Path(out)
    _check_target(target)
    model = cli.load_checkpoint(prefix, epoch)
    inputs = cli.input_shapes(model, shapes)
    runtime = runtime_for(device.kind)
    built_for = BuiltFor(runtime.name, runtime.version(), runtime.device_key(device.id))
    ctx = device.context()
    with _staged(target) as staging:
        engines = staging / ENGINES_DIR
        # Every engine lands in the folder, whatever the user's cache size limit.
        part = model.symbol.optimize_for("TensorRT", model.args, model.aux, ctx=ctx,
                                         cache_dir=str(engines), cache_max_size="0", **raw)
        report: partition.PartitionReport = part.report
        accepted = sum(s.accepted for s in report.subgraphs)
        ENGINES.clear_memory()  # every engine is made here, so it lands in the folder
        values = {name: v.as_in_context(ctx) for name, v in model.args.items()}
        values.update({name: mx.nd.zeros(shape, ctx=ctx) for name, shape in inputs.items()})
        with _progress(accepted):
            ex = part.bind(ctx, values, grad_req="null",
                           aux_states={name: v.as_in_context(ctx) for name, v in model.aux.items()})
            ex.forward(is_train=False)
            mx.nd.waitall()
        symbol_file = staging / f"{PREFIX}-symbol.json"
        symbol_file.write_text(_without_build_options(part.tojson()), encoding="utf-8")
        mx.sym.load(str(symbol_file))  # what load() will do: fails here, not in the user's hands
        mx.nd.save(str(staging / f"{PREFIX}-{EPOCH:04d}.params"),
                   {**{f"arg:{k}": v for k, v in model.args.items()},
                    **{f"aux:{k}": v for k, v in model.aux.items()}})
        for lock in engines.glob("*.lock"):
            lock.unlink()
        built = sorted(p.name for p in engines.glob("*.engine"))
        (staging / MANIFEST).write_text(json.dumps({
            "format": MANIFEST_FORMAT, "ctx": str(device), "built_for": asdict(built_for),
            "inputs": inputs, "options": raw, "engines": built}, indent=2) + "\n")
    _copy_to(user_cache, [target / ENGINES_DIR / name for name in built])
    return Converted(target, accepted, len(built), report, built_for)


def arguments(parser: argparse.ArgumentParser) -> None:
    cli.checkpoint_arguments(parser)
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="folder to write the converted model to (replaced if it holds an "
                             "earlier conversion)")
    cli.shape_argument(parser, required=True)
    cli.option_argument(parser)
    cli.ctx_argument(parser)


def run(args: argparse.Namespace) -> int:
    options = cli.options(args)
    device = cli.device(args)
    result = convert(args.prefix, args.epoch, args.out, dict(args.shape), options, device)
    print(f"{result.folder}: {result.report.converted_nodes}/{result.report.compute_nodes} compute "
          f"nodes in {result.subgraphs} subgraph(s), {result.engines} engine(s) for "
          f"{result.built_for} in {result.folder / ENGINES_DIR}")
    return 0
