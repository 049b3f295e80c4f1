"""Ahead-of-time conversion: partition a checkpoint and build its engines once, ship the result.

``convert`` writes ``DIR/model-symbol.json`` (the partitioned symbol), ``DIR/model-0000.params``
and ``DIR/engines/`` (the engines its `_TensorRT` nodes need). ``load(DIR)`` reads it back and
makes those engines available, so the first forward builds nothing. The engines are also copied
to the user's engine cache, so plain ``mx.model.load_checkpoint`` after ``import mxtrt_backend``
finds them on this machine as well.
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from . import config, partition
from .engine.cache import ENGINES

PREFIX = "model"
EPOCH = 0
ENGINES_DIR = "engines"


@dataclass
class Converted:
    folder: Path
    subgraphs: int
    engines: int
    report: partition.PartitionReport


@contextmanager
def _cache_in(folder: Path) -> Iterator[None]:
    """Build into ``folder``, keeping every engine whatever the user's cache size limit: the
    engine cache options are read from the environment at op creation."""
    settings = {"MXTRT_CACHE_DIR": str(folder), "MXTRT_CACHE_MAX_SIZE": "0"}
    previous = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    ENGINES.clear_memory()
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                del os.environ[name]
            else:
                os.environ[name] = value
        ENGINES.clear_memory()


class _Progress(logging.Handler):
    """One progress line per engine built, on stderr."""

    def __init__(self, total: int) -> None:
        super().__init__(logging.INFO)
        self.total, self.done = total, 0

    def emit(self, record: logging.LogRecord) -> None:
        if "runtime" in record.getMessage():
            self.done += 1
            bar = "#" * self.done + "." * max(self.total - self.done, 0)
            print(f"\rbuilding engines [{bar}] {self.done}/{self.total}", end="", file=sys.stderr,
                  flush=True)


def convert(prefix: str, epoch: int, out: str, shapes: dict[str, tuple[int, ...]],
            options: dict[str, str] | None = None) -> Converted:
    import mxnet as mx

    folder = Path(out)
    engines = folder / ENGINES_DIR
    engines.mkdir(parents=True, exist_ok=True)
    sym, args, aux = mx.model.load_checkpoint(prefix, epoch)
    trt_sym = sym.optimize_for("TensorRT", args, aux, ctx=mx.cpu(), **(options or {}))
    report: partition.PartitionReport = trt_sym.report
    accepted = sum(s.accepted for s in report.subgraphs)
    logger = logging.getLogger("mxtrt")
    progress, level = _Progress(accepted), logger.level
    logger.addHandler(progress)
    logger.setLevel(logging.INFO)
    try:
        with _cache_in(engines):
            inputs = {name: mx.nd.zeros(shape) for name, shape in shapes.items()}
            ex = trt_sym.bind(mx.cpu(), dict(args, **inputs), aux_states=aux, grad_req="null")
            ex.forward(is_train=False)
            mx.nd.waitall()
    finally:
        logger.removeHandler(progress)
        logger.setLevel(level)
        if progress.done:
            print(file=sys.stderr)
    trt_sym.save(str(folder / f"{PREFIX}-symbol.json"))
    mx.nd.save(str(folder / f"{PREFIX}-{EPOCH:04d}.params"),
               {**{f"arg:{k}": v for k, v in args.items()}, **{f"aux:{k}": v for k, v in aux.items()}})
    built = sorted(engines.glob("*.engine"))
    user_cache = Path(config.resolve({}).cache_dir)
    user_cache.mkdir(parents=True, exist_ok=True)
    for path in built:
        shutil.copy2(path, user_cache / path.name)
    for stale in engines.glob("*.lock"):
        stale.unlink()
    return Converted(folder, accepted, len(built), report)


def load(folder: str):
    """(symbol, arg_params, aux_params) of a converted model; its engines need no rebuild."""
    import mxnet as mx

    ENGINES.add_bundle(str(Path(folder) / ENGINES_DIR))
    return mx.model.load_checkpoint(str(Path(folder) / PREFIX), EPOCH)


def parse_shape(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(d) for d in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"shape {text!r} is not a comma-separated list of ints") from None


def parse_input(text: str) -> tuple[str, tuple[int, ...]]:
    name, _, shape = text.rpartition(":") if ":" in text else ("data", "", text)
    return name, parse_shape(shape)


def parse_options(pairs: Sequence[str]) -> dict[str, str]:
    options = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"option {pair!r} must look like name=value")
        options[name] = value
    config.resolve(options)  # fail before any work
    return options


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prefix", help="checkpoint prefix (PREFIX-symbol.json, PREFIX-EPOCH.params)")
    parser.add_argument("epoch", type=int)
    parser.add_argument("--out", required=True, help="folder to write the converted model to")
    parser.add_argument("--shape", action="append", type=parse_input, required=True,
                        metavar="[NAME:]D0,D1,...",
                        help="input shape, e.g. 1,3,224,224 (input 'data') or softmax_label:1; "
                             "repeatable")
    parser.add_argument("-o", "--option", action="append", default=[], metavar="NAME=VALUE",
                        help="backend option, e.g. -o min_subgraph_size=3; repeatable")


def run(args: argparse.Namespace) -> int:
    try:
        options = parse_options(args.option)
    except (argparse.ArgumentTypeError, config.OptionError) as err:
        print(f"mxtrt convert: error: {err}", file=sys.stderr)
        return 2
    result = convert(args.prefix, args.epoch, args.out, dict(args.shape), options)
    print(f"{result.folder}: {result.report.converted_nodes}/{result.report.compute_nodes} compute "
          f"nodes in {result.subgraphs} subgraph(s), {result.engines} engine(s) in "
          f"{result.folder / ENGINES_DIR}")
    return 0
