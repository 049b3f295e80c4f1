"""Which nodes go to the backend and which subgraphs are kept.

MXNet drives partitioning: it asks which nodes are supported (``select``), grows connected,
cycle-free subgraphs from them, then asks whether to keep each one (``review``). Both answers
come from here, on the graph JSON MXNet hands over; every refusal carries a reason, collected in
a ``PartitionReport``.
"""
from __future__ import annotations

import contextvars
import json
import logging
import re
import threading
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from . import dtypes, export, support
from .config import Options

log = logging.getLogger("mxtrt")

# Attributes carried by each _TensorRT node, read back when MXNet creates the op.
ATTR_PARAMS = "mxtrt_params"
ATTR_OPTIONS = "mxtrt_options"
# Nodes of the subgraph that compute differently in training mode (the engine runs inference).
ATTR_TRAINING = "mxtrt_training"
# Option defaults of the API that made the symbol (e.g. MXNet 1.5's fp16 for get_backend_symbol):
# beaten by given options and environment variables, read when MXNet creates the op.
ATTR_DEFAULTS = "mxtrt_defaults"


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
    # What knowledge the user could give to convert more (e.g. the shapes of data inputs).
    hints: list[str] = field(default_factory=list)

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


# The report of the partitioning under way on this thread (or task): MXNet calls select and
# review on the thread that called optimize_for, which sets a fresh report here (see `reporting`).
_current: contextvars.ContextVar[PartitionReport | None] = contextvars.ContextVar(
    "mxtrt_partition_report", default=None)
_last = threading.local()


@contextmanager
def reporting() -> Iterator[PartitionReport]:
    """A fresh report for one partitioning on this thread; afterwards `last_report()` of this
    thread returns it."""
    report = PartitionReport()
    token = _current.set(report)
    try:
        yield report
    finally:
        _current.reset(token)
        _last.report = report


def current_report() -> PartitionReport:
    report = _current.get()
    if report is None:  # a partitioning not started through the optimize_for hook
        report = PartitionReport()
        _current.set(report)
    return report


def last_report() -> PartitionReport:
    """What the most recent partitioning on this thread converted and refused."""
    return getattr(_last, "report", None) or PartitionReport()


# What the optimize_for hook inferred itself, by (node name, output index): MXNet infers shapes
# and dtypes before partitioning only when parameter values are given, and not at all when its
# inference fails (then the hook partitions with skip_infer).
Known = Mapping[tuple[str, int], support.TensorInfo]
_known: contextvars.ContextVar[Known] = contextvars.ContextVar("mxtrt_known", default={})


def infer(sym: Any, values: Mapping[str, Any], shapes: Mapping[str, Sequence[int]] | None,
          types: Mapping[str, Any] | None) -> dict[tuple[str, int], support.TensorInfo]:
    """Every node output's shape and dtype as far as MXNet's partial inference gets from the
    given values, shapes and dtypes; a pass that fails (some ops refuse inputs of unknown shape)
    leaves its half unknown."""
    import mxnet as mx

    internals = sym.get_internals()
    graph = json.loads(internals.tojson())
    keys = [(graph["nodes"][src]["name"], out) for src, out, *_ in graph["heads"]]
    shape_hints = dict({n: v.shape for n, v in values.items()}, **dict(shapes or {}))
    type_hints = dict({n: v.dtype for n, v in values.items()}, **dict(types or {}))
    try:
        out_shapes = internals.infer_shape_partial(**shape_hints)[1]
    except mx.MXNetError:
        out_shapes = [()] * len(keys)
    try:
        out_types = internals.infer_type_partial(**type_hints)[1]
    except mx.MXNetError:
        out_types = [None] * len(keys)
    # Partial shape inference marks an unknown shape () and an unknown dim 0.
    return {key: support.TensorInfo(tuple(shape) if shape and 0 not in shape else None,
                                    np.dtype(dtype).name if dtype is not None else None)
            for key, shape, dtype in zip(keys, out_shapes, out_types)}


def note_inference_failure(report: PartitionReport, err: Exception) -> None:
    """MXNet's inference failed before partitioning, and the partitioning went on without it:
    logged, and told in the report when shapes would have converted more."""
    text = str(err)
    found = re.search(r"Error in operator (\S+): (?:\[[^\]]*\] )?(?:\S+:\d+: )?(.*)", text)
    first = (f"{found.group(1)}: {found.group(2).strip()}" if found
             else (text.strip().splitlines() or [type(err).__name__])[-1])
    log.info("mxtrt: MXNet's shape inference failed before partitioning (%s); partitioned "
             "without it", first)
    if report.hints:
        report.hints.append(f"MXNet's own shape inference gave up before partitioning ({first}):"
                            " it needs the data shapes")


@contextmanager
def inferring(sym: Any, values: Mapping[str, Any], shapes: Mapping[str, Sequence[int]] | None,
              types: Mapping[str, Any] | None) -> Iterator[None]:
    """`infer`'s findings, for the partitioning under way on this thread."""
    token = _known.set(infer(sym, values, shapes, types))
    try:
        yield
    finally:
        _known.reset(token)


def _inferred(node: dict, key: str, output: int) -> Any:
    """What MXNet inferred for one output of a node ("__ext_shape__"/"__ext_dtype__"); None when
    the attribute is absent or says "[[None]]" (not inferred, and not JSON)."""
    try:
        return json.loads(node.get("attrs", {})[key])[output]
    except (KeyError, ValueError, IndexError, TypeError):
        return None


def _tensor_info(node: dict, output: int, source: tuple[str, int] | None = None
                 ) -> support.TensorInfo:
    """Shape and dtype of a node's output as far as MXNet (or, failing that, the hook's own
    inference: ``source`` is the output's (node name, index) in the symbol) inferred them."""
    shape, code = _inferred(node, "__ext_shape__", output), _inferred(node, "__ext_dtype__", output)
    known_shape = tuple(shape) if shape and None not in shape else None
    dtype = None if code is None else dtypes.name_of(code)
    if known_shape is None or dtype is None:
        hook = _known.get().get(source or (node["name"], output), support.TensorInfo())
        known_shape, dtype = known_shape or hook.shape, dtype or hook.dtype
    return support.TensorInfo(known_shape, dtype)


def select(graph_json: str, options: Options) -> list[bool]:
    """One flag per node of the graph JSON: may this node go into a `_TensorRT` subgraph?"""
    graph = json.loads(graph_json)
    nodes = graph["nodes"]
    # Only outputs something reads: some ops have hidden outputs (Pooling's int32 workspace).
    used: dict[int, set[int]] = {}
    for src, out, *_ in [e for n in nodes for e in n["inputs"]] + graph.get("heads", []):
        used.setdefault(src, set()).add(out)
    report = current_report()
    report.compute_nodes, report.refused, report.subgraphs = 0, [], []
    flags = []
    for_shapes: list[str] = []
    for index, node in enumerate(nodes):
        if node["op"] == "null":
            flags.append(False)
            continue
        report.compute_nodes += 1
        outputs = [_tensor_info(node, out) for out in sorted(used.get(index, ()))]
        inputs = [_tensor_info(nodes[src], out) for src, out, *_ in node["inputs"]]
        reason = support.refusal(node["op"], node.get("attrs", {}), options.exclude_ops, inputs,
                                 outputs)
        if reason:
            report.refused.append(Refusal(node["name"], node["op"], reason))
            if isinstance(reason, support.ShapeNeeded):
                for_shapes.append(node["op"])
        flags.append(reason is None)
    if for_shapes:
        report.hints.append(_shapes_hint(for_shapes, _unknown_data_inputs(nodes, options)))
    return flags


def _unknown_data_inputs(nodes: Sequence[dict], options: Options) -> list[str]:
    """Inputs of unknown shape that are not parameters (MXNet infers those from the data)."""
    params = {src for node in nodes for slot, (src, *_) in enumerate(node["inputs"])
              if slot in support.param_slots(node["op"])}
    return [node["name"] for index, node in enumerate(nodes)
            if node["op"] == "null" and index not in params
            and node["name"] not in options.param_inputs and _tensor_info(node, 0).shape is None]


def _shapes_hint(ops: Sequence[str], unknown: Sequence[str]) -> str:
    counts = ", ".join(f"{n} x {op}" for op, n in Counter(ops).most_common())
    inputs = ", ".join(f"'{name}': (...)" for name in unknown[:4]) + (", ..." if unknown[4:] else "")
    return (f"{len(ops)} node(s) ({counts}) stay in MXNet because their input shapes are unknown "
            f"at partition time; give the input shapes to have them checked: optimize_for(..., "
            f"shape_dict={{{inputs}}}), or inspect --shape")


# How a subgraph input came to be a parameter (ATTR_PARAMS values). Only a "given" one (a value
# passed to optimize_for, feeding no weight slot: possibly data by mistake) may turn out to
# change at every forward and stop being baked (see params.ParamTracker).
SLOT, NAMED, GIVEN = "slot", "named", "given"


def _param_inputs(nodes: Sequence[dict], known: Iterable[str], options: Options) -> dict[str, str]:
    """Subgraph inputs that are parameters, with how they were recognised: feeding a param slot,
    named in option param_inputs, or given a value at partition time; never those named in
    data_inputs (Gluon passes its data inputs to the partitioner along with the parameters)."""
    known = set(known)
    in_param_slot = {
        source
        for consumer in nodes
        for slot, (source, _, _) in enumerate(consumer["inputs"])
        if slot in support.param_slots(consumer["op"])
    }

    def kind(index: int, node: dict) -> str | None:
        # Subgraph inputs are renamed ("w" -> "w0"); options name the symbol's own inputs.
        attrs = node.get("attrs", {})
        source_name = attrs.get("argName", node["name"])
        if attrs.get("isArg") != "True" or source_name in options.data_inputs:
            return None
        if index in in_param_slot:
            return SLOT
        if source_name in options.param_inputs:
            return NAMED
        return GIVEN if node["name"] in known else None

    kinds = {node["name"]: kind(index, node) for index, node in enumerate(nodes)
             if node["op"] == "null"}
    return {name: k for name, k in kinds.items() if k is not None}


def _training_differences(nodes: Sequence[dict]) -> list[str]:
    """The nodes that compute something else in training mode, with why."""
    found = []
    for node in nodes:
        reason = support.training_difference(node["op"], node.get("attrs", {}))
        if reason:
            found.append(f"{node['name']}: {reason}")
    return found


def _source(variable: dict) -> tuple[str, int]:
    """The symbol's (node name, output index) a subgraph input variable stands for: an argument
    by its name, a node output as MXNet names it ("relu1_output0")."""
    attrs = variable.get("attrs", {})
    if "argName" in attrs:
        return attrs["argName"], 0
    stem, _, index = variable["name"].rpartition("_output")
    return (stem, int(index)) if stem and index.isdigit() else (variable["name"], 0)


def _export_problem(subgraph_json: str, nodes: Sequence[dict]) -> str:
    """Export now, so that a subgraph mx2onnx cannot convert stays in MXNet instead of failing
    the bind: with the input shapes when they are known, else with the dtypes only (the
    converters do not read shapes; unknown dtypes are taken as MXNet's default, float32)."""
    infos = [_tensor_info(n, 0, _source(n)) for n in nodes if n["op"] == "null"]
    try:
        in_dtypes = [np.dtype(t.dtype or "float32") for t in infos]
        subgraph = export.Subgraph.from_json(subgraph_json)
        shapes = [t.shape for t in infos if t.shape is not None]
        if len(shapes) == len(infos):
            export.export_cached(subgraph, shapes, in_dtypes)
        else:
            export.export_trial(subgraph, in_dtypes)
    except (export.ExportError, TypeError) as err:
        log.warning("mxtrt: a subgraph stays in MXNet: %s", err)
        return f"export failed: {err}"
    return ""


def _source_names(nodes: Sequence[dict], names: Iterable[str]) -> tuple[str, ...]:
    """Subgraph inputs by the symbol's own names: MXNet renames them ("w" -> "w0") and gives an
    input read by several nodes one variable per reader ("data0", "data1")."""
    arg_names = {n["name"]: n.get("attrs", {}).get("argName", n["name"]) for n in nodes}
    return tuple(dict.fromkeys(arg_names[name] for name in names))


def _output_attrs(nodes: Sequence[dict], heads: Sequence[Sequence[int]]) -> dict[str, str]:
    """What MXNet knows of the subgraph node's outputs, one entry per output, in MXNet's format.

    MXNet builds these itself, but without inferred shapes it writes "[,]", and when a later
    subgraph reads output 1 or more of this node it parses that string past its end and fails
    with "basic_string::substr". Written here, every entry is there ("[None]" / -1: unknown)."""
    shapes, codes = [], []
    for src, out, *_ in heads:
        shape = _inferred(nodes[src], "__ext_shape__", out)
        code = _inferred(nodes[src], "__ext_dtype__", out)
        known = isinstance(shape, list) and None not in shape
        shapes.append("[" + ",".join(map(str, shape)) + "]" if known else "[None]")
        codes.append(str(code) if isinstance(code, int) else "-1")
    return {"__ext_shape__": "[" + ",".join(shapes) + "]", "__ext_dtype__": "[" + ",".join(codes) + "]"}


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
    report = current_report()
    report.subgraphs.append(SubgraphInfo(
        subgraph_id, tuple(n["name"] for n in compute), tuple(n["op"] for n in compute),
        _source_names(nodes, inputs), _source_names(nodes, params), accepted, reason,
        _output_names(nodes, graph["heads"])))
    if not accepted:
        log.debug("mxtrt: subgraph %d left to MXNet: %s", subgraph_id, reason)
        for node in compute:
            report.refused.append(Refusal(node["name"], node["op"], reason))
        return False, {}
    # By name: MXNet may list the subgraph's inputs in another order when it creates the op.
    attrs = {ATTR_PARAMS: json.dumps(params, sort_keys=True),
             ATTR_OPTIONS: json.dumps(raw_options, sort_keys=True),
             **_output_attrs(nodes, graph["heads"])}
    training = _training_differences(compute)
    if training:
        attrs[ATTR_TRAINING] = json.dumps(training)
    return True, attrs
