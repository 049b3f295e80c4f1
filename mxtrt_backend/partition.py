"""Which nodes go to the backend and which subgraphs are kept.

MXNet drives partitioning: it asks which nodes are supported (``select``), grows connected,
cycle-free subgraphs from them, then asks whether to keep each one (``review``). Both answers
come from here, on the graph JSON MXNet hands over; every refusal carries a reason, collected in
a ``PartitionReport``.
"""
from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from . import export, support
from .config import Options

log = logging.getLogger("mxtrt")

# Attributes carried by each _TensorRT node, read back when MXNet creates the op.
ATTR_PARAMS = "mxtrt_params"
ATTR_OPTIONS = "mxtrt_options"


@dataclass(frozen=True)
class Refusal:
    node: str
    op: str
    reason: str


@dataclass(frozen=True)
class SubgraphInfo:
    id: int
    nodes: tuple[str, ...]
    ops: tuple[str, ...]
    inputs: tuple[str, ...]  # the symbol's names, not the subgraph's renamed variables
    params: tuple[str, ...]  # the inputs that are parameters
    accepted: bool
    reason: str = ""
    outputs: tuple[str, ...] = ()


@dataclass
class PartitionReport:
    """What the last partitioning converted, and why the rest stays in MXNet."""

    compute_nodes: int = 0
    refused: list[Refusal] = field(default_factory=list)
    subgraphs: list[SubgraphInfo] = field(default_factory=list)

    @property
    def converted_nodes(self) -> int:
        return sum(len(s.nodes) for s in self.subgraphs if s.accepted)

    def summary(self) -> str:
        """E.g. '412/431 compute nodes in 3 subgraphs; refused: 19 x Custom (no converter for
        this op)', the most frequent refusals first."""
        accepted = sum(s.accepted for s in self.subgraphs)
        counts = Counter((r.op, r.reason) for r in self.refused)
        refused = ", ".join(f"{n} x {op} ({reason})" for (op, reason), n in
                            sorted(counts.items(), key=lambda item: (-item[1], item[0])))
        return (f"{self.converted_nodes}/{self.compute_nodes} compute nodes in {accepted} "
                f"subgraph{'' if accepted == 1 else 's'}; refused: {refused or 'none'}")


# Partitioning runs on the thread that called optimize_for/bind; the last report is kept here.
last_report = PartitionReport()


def _tensor_info(node: dict, output: int) -> support.TensorInfo:
    """Shape and dtype of a node's output as far as MXNet inferred them ("[[None]]": unknown)."""
    attrs = node.get("attrs", {})

    def inferred(key: str) -> Any:
        try:
            return json.loads(attrs[key])[output]
        except (KeyError, ValueError, IndexError):  # absent, or "[[None]]" (not JSON)
            return None

    shape, code = inferred("__ext_shape__"), inferred("__ext_dtype__")
    known_shape = tuple(shape) if shape and None not in shape else None
    return support.TensorInfo(known_shape, None if code is None else support.MX_DTYPES.get(code))


def select(graph_json: str, options: Options) -> list[bool]:
    """One flag per node of the graph JSON: may this node go into a `_TensorRT` subgraph?"""
    global last_report
    graph = json.loads(graph_json)
    nodes = graph["nodes"]
    # Only outputs something reads: some ops have hidden outputs (Pooling's int32 workspace).
    used: dict[int, set[int]] = {}
    for src, out, *_ in [e for n in nodes for e in n["inputs"]] + graph.get("heads", []):
        used.setdefault(src, set()).add(out)
    report = PartitionReport()
    flags = []
    for index, node in enumerate(nodes):
        if node["op"] == "null":
            flags.append(False)
            continue
        report.compute_nodes += 1
        outputs = [_tensor_info(node, out) for out in sorted(used.get(index, ()))]
        reason = support.refusal(node["op"], node.get("attrs", {}), options.exclude_ops,
                                 [_tensor_info(nodes[src], out) for src, out, *_ in node["inputs"]],
                                 outputs)
        if reason:
            report.refused.append(Refusal(node["name"], node["op"], reason))
        flags.append(reason is None)
    last_report = report
    return flags


def _param_inputs(nodes: Sequence[dict], known: Iterable[str], options: Options) -> list[str]:
    """Subgraph inputs that are parameters: values given at partition time, a param slot, or
    named in option param_inputs; never those named in data_inputs (Gluon passes its data inputs
    to the partitioner along with the parameters)."""
    known = set(known)
    in_param_slot = {
        source
        for consumer in nodes
        for slot, (source, _, _) in enumerate(consumer["inputs"])
        if slot in support.param_slots(consumer["op"])
    }

    def is_param(index: int, node: dict) -> bool:
        # Subgraph inputs are renamed ("w" -> "w0"); options name the symbol's own inputs.
        attrs = node.get("attrs", {})
        source_name = attrs.get("argName", node["name"])
        if attrs.get("isArg") != "True" or source_name in options.data_inputs:
            return False
        return node["name"] in known or index in in_param_slot or source_name in options.param_inputs

    return [node["name"] for index, node in enumerate(nodes)
            if node["op"] == "null" and is_param(index, node)]


def _known_types(nodes: Sequence[dict]) -> tuple[list[list[int]], list[int]] | None:
    """Input shapes and dtype codes when MXNet inferred them all before partitioning."""
    shapes, dtypes = [], []
    for node in (n for n in nodes if n["op"] == "null"):
        attrs = node.get("attrs", {})
        try:
            shapes.append(json.loads(attrs["__ext_shape__"])[0])
            dtypes.append(json.loads(attrs["__ext_dtype__"])[0])
        except (KeyError, ValueError, IndexError):  # "[[None]]": not inferred
            return None
    return shapes, dtypes


def _export_problem(subgraph_json: str, nodes: Sequence[dict]) -> str:
    """Export now when shapes are known, so a subgraph mx2onnx cannot convert stays in MXNet."""
    known = _known_types(nodes)
    if known is None:
        return ""
    try:
        export.export_cached(export.Subgraph.from_json(subgraph_json), known[0],
                             [export.dtype_of(code) for code in known[1]])
    except (export.ExportError, TypeError) as err:
        log.warning("mxtrt: a subgraph stays in MXNet: %s", err)
        return f"export failed: {err}"
    return ""


def _source_names(nodes: Sequence[dict], names: Iterable[str]) -> tuple[str, ...]:
    """Subgraph inputs by the symbol's own names: MXNet renames them ("w" -> "w0") and gives an
    input read by several nodes one variable per reader ("data0", "data1")."""
    arg_names = {n["name"]: n.get("attrs", {}).get("argName", n["name"]) for n in nodes}
    return tuple(dict.fromkeys(arg_names[name] for name in names))


def _output_names(nodes: Sequence[dict], heads: Sequence[Sequence[int]]) -> tuple[str, ...]:
    """A subgraph's outputs by producing node: 'conv1', or 'split0[1]' for a further output."""
    return tuple(nodes[src]["name"] + (f"[{out}]" if out else "") for src, out, *_ in heads)


def review(subgraph_json: str, subgraph_id: int, options: Options, raw_options: dict[str, str],
           known_params: Iterable[str]) -> tuple[bool, dict[str, str]]:
    """Keep this subgraph? Returns the verdict and the attributes for its `_TensorRT` node."""
    graph = json.loads(subgraph_json)
    nodes = graph["nodes"]
    compute = [n for n in nodes if n["op"] != "null"]
    inputs = [n["name"] for n in nodes if n["op"] == "null"]
    params = _param_inputs(nodes, known_params, options)
    reason = (f"{len(compute)} node(s) < min_subgraph_size={options.min_subgraph_size}"
              if len(compute) < options.min_subgraph_size else _export_problem(subgraph_json, nodes))
    accepted = not reason
    last_report.subgraphs.append(SubgraphInfo(
        subgraph_id, tuple(n["name"] for n in compute), tuple(n["op"] for n in compute),
        _source_names(nodes, inputs), _source_names(nodes, params), accepted, reason,
        _output_names(nodes, graph["heads"])))
    if not accepted:
        log.debug("mxtrt: subgraph %d left to MXNet: %s", subgraph_id, reason)
        for node in compute:
            last_report.refused.append(Refusal(node["name"], node["op"], reason))
        return False, {}
    # By name: MXNet may list the subgraph's inputs in another order when it creates the op.
    attrs = {ATTR_PARAMS: json.dumps(params),
             ATTR_OPTIONS: json.dumps(raw_options, sort_keys=True)}
    return True, attrs
