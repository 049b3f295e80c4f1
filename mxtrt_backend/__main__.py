"""The `mxtrt` / `python -m mxtrt_backend` command line.

Each subcommand is a module of this package with ``arguments(parser)``, which declares its
options, and ``run(args) -> exit code``; the table below is the whole command line.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class Subcommand:
    name: str
    module: str
    help: str


SUBCOMMANDS = (
    Subcommand("demo", "demo", "the bundled example: LeNet on scikit-learn's digits, plain MXNet vs "
                               "the backend (accuracy, output difference, time per batch)"),
    Subcommand("convert", "convert", "partition a checkpoint and build its engines into a folder "
                                     "that mxtrt_backend.load() runs without rebuilding"),
    Subcommand("inspect", "report", "what the partitioner converts in a checkpoint and why it "
                                    "leaves the rest (subgraphs, refused nodes, a summary line)"),
    Subcommand("bench", "bench", "plain MXNet vs the backend on the same input: latency (median, "
                                 "p90), throughput, speed-up and output difference per batch size"),
    Subcommand("cache", "cache_command", "the on-disk engine cache: list its engines, clear it, or "
                                         "prune the least recently used ones beyond a size"),
    Subcommand("doctor", "doctor", "print MXNet, CUDA, GPU, TensorRT and ONNX Runtime versions and "
                                   "check that a tiny network builds and runs through each runtime"),
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mxtrt_backend",
                                     description="mxtrt: the TensorRT subgraph backend for MXNet")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in SUBCOMMANDS:
        module = importlib.import_module(f".{command.module}", __package__)
        sub = commands.add_parser(command.name, help=command.help, description=command.help)
        module.arguments(sub)
        sub.set_defaults(run=module.run)
    args = parser.parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
