"""Which nodes go to the backend and which subgraphs are kept.

MXNet drives partitioning: it asks which nodes are supported (``select``), grows connected,
cycle-free subgraphs from them, then asks whether to keep each one (``review``). Both answers
come from here, on the graph JSON MXNet hands over; every refusal carries a reason, collected in
a ``PartitionReport``.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from . import support
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
    inputs: tuple[str, ...]
    params: tuple[str, ...]
    accepted: bool
    reason: str = ""


@dataclass
class PartitionReport:
    """What the last partitioning converted, and why the rest stays in MXNet."""

    compute_nodes: int = 0
    refused: list[Refusal] = field(default_factory=list)
    subgraphs: list[SubgraphInfo] = field(default_factory=list)

    @property
    def converted_nodes(self) -> int:
        return sum(len(s.nodes) for s in self.subgraphs if s.accepted)


# Partitioning runs on the thread that called optimize_for/bind; the last report is kept here.
last_report = PartitionReport()


def select(graph_json: str, options: Options) -> list[bool]:
    """One flag per node of the graph JSON: may this node go into a `_TensorRT` subgraph?"""
    global last_report
    nodes = json.loads(graph_json)["nodes"]
    report = PartitionReport()
    flags = []
    for node in nodes:
        if node["op"] == "null":
            flags.append(False)
            continue
        report.compute_nodes += 1
        reason = support.refusal(node["op"], node.get("attrs", {}), options.exclude_ops)
        if reason:
            report.refused.append(Refusal(node["name"], node["op"], reason))
        flags.append(reason is None)
    last_report = report
    return flags


def _param_inputs(nodes: Sequence[dict], known: Iterable[str]) -> list[str]:
    """Subgraph inputs that are parameters: values given at partition time, or a param slot."""
    known = set(known)
    in_param_slot = {
        source
        for consumer in nodes
        for slot, (source, _, _) in enumerate(consumer["inputs"])
        if slot in support.param_slots(consumer["op"])
    }
    return [
        node["name"]
        for index, node in enumerate(nodes)
        if node["op"] == "null" and node.get("attrs", {}).get("isArg") == "True"
        and (node["name"] in known or index in in_param_slot)
    ]


def review(subgraph_json: str, subgraph_id: int, options: Options, raw_options: dict[str, str],
           known_params: Iterable[str]) -> tuple[bool, dict[str, str]]:
    """Keep this subgraph? Returns the verdict and the attributes for its `_TensorRT` node."""
    nodes = json.loads(subgraph_json)["nodes"]
    compute = [n for n in nodes if n["op"] != "null"]
    inputs = [n["name"] for n in nodes if n["op"] == "null"]
    params = _param_inputs(nodes, known_params)
    accepted = len(compute) >= options.min_subgraph_size
    reason = "" if accepted else (
        f"{len(compute)} node(s) < min_subgraph_size={options.min_subgraph_size}")
    last_report.subgraphs.append(SubgraphInfo(
        subgraph_id, tuple(n["name"] for n in compute), tuple(n["op"] for n in compute),
        tuple(inputs), tuple(params), accepted, reason))
    if not accepted:
        log.debug("mxtrt: subgraph %d left to MXNet: %s", subgraph_id, reason)
        for node in compute:
            last_report.refused.append(Refusal(node["name"], node["op"], reason))
        return False, {}
    # By name: MXNet may list the subgraph's inputs in another order when it creates the op.
    attrs = {ATTR_PARAMS: json.dumps(params),
             ATTR_OPTIONS: json.dumps(raw_options, sort_keys=True)}
    return True, attrs
