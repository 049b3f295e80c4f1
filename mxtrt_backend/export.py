"""A `_TensorRT` subgraph -> ONNX, with MXNet's own exporter (mx.onnx / mx2onnx).

Export happens in two steps because the two halves are available at different times:

* ``export_structure`` runs when MXNet creates the op (shapes and dtypes are known, MXNet may be
  called). Every subgraph input, parameters included, is an ONNX graph input.
* ``bake_params`` runs at the first forward (values are known, MXNet must not be called: the
  forward runs inside MXNet's engine). It moves parameter inputs into ONNX initializers, so the
  runtime sees them as constants, and is pure ONNX/numpy.
"""
from __future__ import annotations

import functools
import hashlib
import json
import threading
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from . import mx2onnx_fixes

# mx2onnx has converters for opsets 12 and 13 only; mx.onnx.export_model stamps the model with
# the newest opset the installed onnx knows, which changes the meaning of ops such as ReduceMean
# (axes moved from attribute to input in opset 18). We pin 13, which TensorRT's parser accepts.
OPSET = 13

# mx2onnx assumes its own value for a missing attribute (a boolean reads as False); where MXNet's
# default differs, spell MXNet's out.
_MXNET_DEFAULTS = {"FullyConnected": {"flatten": "True"}, "Deconvolution": {"no_bias": "True"},
                   "LRN": {"knorm": "2"}}

# Attributes the partitioner adds to subgraph variables; they are not part of the computation.
_BOOKKEEPING_ATTRS = ("isArg", "isAux", "argName")


# Model metadata: subgraph input name -> the symbol's name of that input.
SOURCES_PROP = "mxtrt.source_names"


class ExportError(RuntimeError):
    """mx2onnx could not convert a subgraph."""


@dataclass(frozen=True)
class Subgraph:
    """A `_TensorRT` node's subgraph, canonicalised so equal computations hash equal."""

    graph: dict
    input_names: tuple[str, ...]
    compute_nodes: int
    digest: str
    # Inputs MXNet treats as auxiliary states (BatchNorm statistics): mutable inputs of the op.
    aux_names: tuple[str, ...] = ()
    # Each input by the symbol's own name (MXNet renames subgraph inputs: "w" -> "w0").
    source_names: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, text: str) -> "Subgraph":
        graph = json.loads(text)
        variables = [n for n in graph["nodes"] if n["op"] == "null"]
        aux = tuple(n["name"] for n in variables if n.get("attrs", {}).get("isAux") == "True")
        sources = tuple(n.get("attrs", {}).get("argName", n["name"]) for n in variables)
        for node in graph["nodes"]:
            attrs = {k: v for k, v in node.pop("attrs", {}).items()
                     if not k.startswith("__ext_") and k not in _BOOKKEEPING_ATTRS}
            for key, value in _MXNET_DEFAULTS.get(node["op"], {}).items():
                attrs.setdefault(key, value)
            if attrs:
                node["attrs"] = attrs
        inputs = tuple(n["name"] for n in graph["nodes"] if n["op"] == "null")
        compute = sum(1 for n in graph["nodes"] if n["op"] != "null")
        canonical = json.dumps({"nodes": graph["nodes"], "heads": graph["heads"]}, sort_keys=True)
        return cls(graph, inputs, compute, hashlib.sha256(canonical.encode()).hexdigest(), aux,
                   sources)

    def to_json(self) -> str:
        import mxnet as mx

        # Stamped so MXNet does not take the graph for a pre-1.0 file and "upgrade" it.
        major, minor, patch = (int(p) for p in mx.__version__.split(".")[:3])
        version = ["int", major * 10000 + minor * 100 + patch]
        # Unescaped: MXNet's JSON reader rejects \u escapes (non-ASCII node names).
        return json.dumps(dict(self.graph, attrs={"mxnet_version": version}), ensure_ascii=False)


@dataclass(frozen=True)
class ExportedGraph:
    onnx_bytes: bytes
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    # Each output's dtype and shape as the ONNX graph declares them (None: a symbolic dim).
    output_specs: tuple[tuple[np.dtype, tuple[int | None, ...]], ...] = ()

    @functools.cached_property
    def digest(self) -> str:
        return hashlib.sha256(self.onnx_bytes).hexdigest()


def _fix_gamma_constants(model: onnx.ModelProto, graph: dict,
                         shapes: Mapping[str, Sequence[int]], dtypes: Mapping[str, np.dtype]) -> None:
    """BatchNorm(fix_gamma=True) ignores gamma in MXNet; mx2onnx drops that flag, so feed ones."""
    nodes = graph["nodes"]
    for node in nodes:
        if node["op"] != "BatchNorm" or node.get("attrs", {}).get("fix_gamma", "True") not in ("True", "1"):
            continue
        gamma = nodes[node["inputs"][1][0]]["name"]
        ones_name = f"{node['name']}__fixed_gamma"
        ones = np.ones(shapes[gamma], dtype=dtypes[gamma])
        model.graph.initializer.append(numpy_helper.from_array(ones, ones_name))
        for onnx_node in model.graph.node:
            if onnx_node.op_type == "BatchNormalization" and onnx_node.name == node["name"]:
                onnx_node.input[1] = ones_name


def _onnx_graph(subgraph: Subgraph, in_shapes: Sequence[Sequence[int]] | None,
                in_dtypes: Sequence[np.dtype]) -> tuple[onnx.GraphProto, list[str]]:
    """mx2onnx's graph of the subgraph, and the names of its outputs in the subgraph's head
    order. Without shapes, the graph's inputs and outputs have unknown shapes (mx2onnx's
    converters do not read shapes)."""
    import mxnet as mx
    from mxnet.onnx.mx2onnx._export_onnx import MXNetGraph

    sym = mx.sym.load_json(subgraph.to_json())
    dtypes = dict(zip(subgraph.input_names, (np.dtype(t) for t in in_dtypes)))
    shapes = dict(zip(subgraph.input_names, (tuple(s) for s in in_shapes or ())))
    # mx2onnx takes shapes positionally, in the order of MXNet's own serialisation of the symbol.
    order = [n["name"] for n in json.loads(sym.tojson())["nodes"] if n["op"] == "null"]
    try:
        with mx2onnx_fixes.applied(OPSET, shapes=in_shapes is not None):
            graph = MXNetGraph().create_onnx_graph_proto(
                sym, {}, [shapes.get(n) for n in order],
                [helper.np_dtype_to_tensor_dtype(dtypes[n]) for n in order],
                opset_version=OPSET, dynamic=False)
    except (mx.MXNetError, AttributeError, NotImplementedError, ValueError, KeyError, TypeError,
            AssertionError, IndexError) as err:
        raise ExportError(f"mx2onnx cannot export this subgraph: {err}") from err
    outputs = [mx2onnx_fixes.onnx_output_name(name) for name in sym.list_outputs()]
    missing = sorted(set(outputs) - {o.name for o in graph.output})
    if missing:
        raise ExportError(f"mx2onnx did not produce the subgraph outputs {missing}")
    return graph, outputs


def export_structure(subgraph: Subgraph, in_shapes: Sequence[Sequence[int]],
                     in_dtypes: Sequence[np.dtype]) -> ExportedGraph:
    """Export with every subgraph input as an ONNX graph input. Calls MXNet (symbol API only)."""
    graph, outputs = _onnx_graph(subgraph, in_shapes, in_dtypes)
    shapes = dict(zip(subgraph.input_names, (tuple(s) for s in in_shapes)))
    dtypes = dict(zip(subgraph.input_names, (np.dtype(t) for t in in_dtypes)))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="mxtrt")
    # The symbol's own name of each input (MXNet renames them: "data" -> "data0"), for what is
    # fed by name from outside the graph, such as int8 calibration batches of a DataIter.
    helper.set_model_props(model, {SOURCES_PROP: json.dumps(
        dict(zip(subgraph.input_names, subgraph.source_names)), sort_keys=True)})
    _fix_gamma_constants(model, subgraph.graph, shapes, dtypes)
    by_name = {o.name: o for o in model.graph.output}
    names = _distinct_outputs(model, outputs)
    # mx2onnx sorts outputs by name; MXNet expects them in the subgraph's head order.
    ordered = [_renamed(by_name[source], name) for source, name in zip(outputs, names)]
    del model.graph.output[:]
    model.graph.output.extend(ordered)
    return ExportedGraph(model.SerializeToString(), subgraph.input_names, tuple(names),
                         tuple(_spec(o) for o in ordered))


def _distinct_outputs(model: onnx.ModelProto, outputs: Sequence[str]) -> list[str]:
    """One ONNX output per subgraph output. MXNet lists an entry read by several consumers
    outside the subgraph (or a graph output listed twice) once per use, and hands a buffer for
    each: a repeat becomes an Identity of the first, so every buffer is written."""
    names: list[str] = []
    for name in outputs:
        if name in names:
            alias = f"{name}__copy{len(names)}"
            model.graph.node.append(helper.make_node("Identity", [name], [alias], name=alias))
            name = alias
        names.append(name)
    return names


def _renamed(value: onnx.ValueInfoProto, name: str) -> onnx.ValueInfoProto:
    if value.name == name:
        return value
    renamed = onnx.ValueInfoProto()
    renamed.CopyFrom(value)
    renamed.name = name
    return renamed


def _spec(value: onnx.ValueInfoProto) -> tuple[np.dtype, tuple[int | None, ...]]:
    tensor = value.type.tensor_type
    dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim)
    return np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type)), dims


def bake_params(exported: ExportedGraph, params: Mapping[str, np.ndarray]) -> ExportedGraph:
    """Turn the named graph inputs into initializers holding these values. Pure ONNX."""
    model = onnx.load_from_string(exported.onnx_bytes)
    kept = [vi for vi in model.graph.input if vi.name not in params]
    del model.graph.input[:]
    model.graph.input.extend(kept)
    for name, value in params.items():
        model.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
    onnx.checker.check_model(model)
    inputs = tuple(name for name in exported.input_names if name not in params)
    return ExportedGraph(model.SerializeToString(), inputs, exported.output_names,
                         exported.output_specs)


_exported: dict[tuple[object, ...], ExportedGraph] = {}
_tried: dict[tuple[object, ...], str] = {}  # digest and dtypes -> "" or why export failed
_exported_lock = threading.Lock()


def export_trial(subgraph: Subgraph, in_dtypes: Sequence[np.dtype]) -> None:
    """Whether mx2onnx exports this subgraph, asked before its input shapes are known (they are
    at op creation): raises ExportError if not. Once per subgraph and dtypes in this process."""
    key = (subgraph.digest, tuple(np.dtype(d).str for d in in_dtypes))
    with _exported_lock:
        found = _tried.get(key)
    if found is None:
        try:
            _onnx_graph(subgraph, None, in_dtypes)
            found = ""
        except ExportError as err:
            found = str(err)
        with _exported_lock:
            _tried[key] = found
    if found:
        raise ExportError(found)


def export_cached(subgraph: Subgraph, in_shapes: Sequence[Sequence[int]],
                  in_dtypes: Sequence[np.dtype]) -> ExportedGraph:
    """``export_structure``, once per subgraph, shapes and dtypes in this process."""
    key = (subgraph.digest, tuple(map(tuple, in_shapes)), tuple(np.dtype(d).str for d in in_dtypes))
    with _exported_lock:
        found = _exported.get(key)
    if found is None:
        found = export_structure(subgraph, in_shapes, in_dtypes)
        with _exported_lock:
            _exported[key] = found
    return found
