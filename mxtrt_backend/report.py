"""What the backend does with a model, before anything is built.

``inspect`` partitions a symbol with the real ``optimize_for('TensorRT')`` and returns the
partition report: the `_TensorRT` subgraphs (nodes, inputs, outputs) and every node left to MXNet
with its reason. ``format_report`` renders it as text tables; ``arguments``/``run`` are the
``inspect model-symbol.json [model-0000.params]`` subcommand.
"""
from __future__ import annotations

import argparse
import os
from collections import Counter
from typing import Any, Mapping, Sequence

from . import cli, partition
from .cli import CliError

# Ops listed per subgraph before the rest is summed up as "... (N more)".
_OPS_SHOWN = 6


def inspect(sym: Any, args: Mapping[str, Any] | None = None, aux: Mapping[str, Any] | None = None,
            shapes: Mapping[str, tuple[int, ...]] | None = None, **options: Any
            ) -> partition.PartitionReport:
    """Partition ``sym`` for the TensorRT backend and report the outcome; builds nothing.

    ``args``/``aux`` are parameter values (without them MXNet infers no shapes or dtypes, and
    the few checks that need them refuse); ``shapes`` gives input shapes (e.g. ``{'data':
    (1, 3, 224, 224)}``); ``options`` are backend options as for ``optimize_for``.
    """
    import mxnet as mx

    partitioned = sym.optimize_for("TensorRT", dict(args or {}), dict(aux or {}), ctx=mx.cpu(),
                                   shape_dict=dict(shapes) if shapes else None, **options)
    report: partition.PartitionReport = partitioned.report
    return report


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    return ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip()
            for row in (header, *rows)]


def _ops(ops: Sequence[str]) -> str:
    counts = Counter(ops).most_common()
    shown = ", ".join(f"{op} x{n}" if n > 1 else op for op, n in counts[:_OPS_SHOWN])
    rest = len(counts) - _OPS_SHOWN
    return shown + (f", ... ({rest} more)" if rest > 0 else "")


def _inputs(info: partition.SubgraphInfo) -> str:
    data = [name for name in info.inputs if name not in info.params]
    params = len(info.params)
    return ", ".join(data + ([f"{params} param{'s' if params != 1 else ''}"] if params else []))


def format_report(report: partition.PartitionReport) -> str:
    lines = []
    if report.subgraphs:
        lines.append("Subgraphs")
        lines += _table(("id", "status", "nodes", "inputs", "outputs", "ops"), [
            (str(s.id), "TensorRT" if s.accepted else "MXNet", str(len(s.nodes)), _inputs(s),
             ", ".join(s.outputs), _ops(s.ops)) for s in report.subgraphs])
        lines.append("")
    if report.refused:
        lines.append("Left to MXNet")
        lines += _table(("node", "op", "reason"),
                        [(r.node, r.op, r.reason) for r in report.refused])
        lines.append("")
    if report.hints:
        lines += ["To convert more", *(f"- {hint}" for hint in report.hints), ""]
    lines.append(report.summary())
    return "\n".join(lines)


def _load_params(path: str, sym: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """A .params file as (args, aux): 'arg:'/'aux:' prefixes (Module checkpoints) or bare names
    (Gluon), sorted by the symbol's own lists."""
    import mxnet as mx

    args: dict[str, Any] = {}
    aux: dict[str, Any] = {}
    aux_names = set(sym.list_auxiliary_states())
    for key, value in mx.nd.load(path).items():
        kind, _, name = key.partition(":") if ":" in key else ("", "", key)
        (aux if kind == "aux" or (not kind and name in aux_names) else args)[name] = value
    return args, aux


def _read(path: str, what: str, read: Any) -> Any:
    import mxnet as mx

    if not os.path.isfile(path):
        raise CliError(f"{what} file {path} does not exist")
    try:
        return read(path)
    except mx.MXNetError as err:
        raise CliError(f"{path} is not an MXNet {what} file: {cli.one_line(err)}") from None


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("symbol", help="the model's symbol file, e.g. model-symbol.json")
    parser.add_argument("params", nargs="?",
                        help="its parameters, e.g. model-0000.params (lets MXNet infer shapes and "
                             "dtypes, which some checks need)")
    cli.shape_argument(parser, required=False)
    cli.option_argument(parser)


def run(args: argparse.Namespace) -> int:
    import mxnet as mx

    options: dict[str, Any] = cli.options(args)
    sym = _read(args.symbol, "symbol", mx.sym.load)
    params, aux = _read(args.params, "parameter", lambda path: _load_params(path, sym)) \
        if args.params else ({}, {})
    unknown = sorted(set(dict(args.shape)) - set(sym.list_arguments()))
    if unknown:
        raise CliError(f"--shape {unknown[0]}:...: the model has no input {unknown[0]!r}; its "
                       f"arguments are {', '.join(sym.list_arguments())}")
    print(format_report(inspect(sym, params, aux, shapes=dict(args.shape) or None, **options)))
    return 0
