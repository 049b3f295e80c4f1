"""Parameter arrays in MKLDNN layouts: put them back in the default layout before a forward.

MXNet's MKLDNN convolution and fully-connected kernels, in inference, rewrite their weight array
into a blocked MKLDNN layout, in place and for good. An extension op such as `_TensorRT` gets
each input in the default layout, and MXNet 1.9 makes that a fresh reordered copy of every
MKLDNN-layout input at every call (``CustomFComputeDispatcher`` in ``src/c_api/c_api.cc``):
resnet18's weights cost 14 ms per forward that way. It happens whenever the arrays a subgraph
bakes are also those of a block that runs on its own (``{k: v.data() ...}`` of a Gluon block
given to ``optimize_for``/``shared_buffer``; a Gluon block run plainly before
``hybridize(backend='TensorRT')``).

MXNet's ``MXNDArrayGetData`` reorders an MKLDNN array back to the default layout in place. The
executor and Gluon hooks call it before each forward on the arrays only `_TensorRT` nodes read
(one loop in C: nanoseconds per array when none needs it). An array read by an MXNet op too is
left alone: that op would reorder it back at every forward.
"""
from __future__ import annotations

import ctypes
import json
from typing import Any, Iterable, Sequence

from . import callbacks, partition


def baked_names(nodes: Sequence[dict]) -> frozenset[str]:
    """The variables of a graph (its nodes as in ``Symbol.tojson()``) that only `_TensorRT`
    nodes read, as parameters they bake."""
    from .activation import OP_NAME  # activation imports this module

    baked: set[str] = set()
    read_by_mxnet: set[str] = set()
    for node in nodes:
        sources = [nodes[i]["name"] for i, _, _ in node["inputs"] if nodes[i]["op"] == "null"]
        if node["op"] != OP_NAME:
            read_by_mxnet.update(sources)
            continue
        kinds = json.loads(node.get("attrs", {}).get(partition.ATTR_PARAMS, "{}"))
        for sub in node.get("subgraphs", [{}])[0].get("nodes", []):
            if sub["op"] == "null" and sub["name"] in kinds:
                baked.add(sub.get("attrs", {}).get("argName", sub["name"]))
    return frozenset(baked - read_by_mxnet)


class DefaultLayout:
    """The host arrays to keep in the default layout, ready for one C call per forward."""

    def __init__(self, arrays: Iterable[Any]) -> None:
        # The NDArrays are kept: their handles must stay valid as long as this object.
        self._arrays = [a for a in arrays if a.context.device_type == "cpu"]
        self._handles = (ctypes.c_void_p * len(self._arrays))(*(a.handle for a in self._arrays))

    def __len__(self) -> int:
        return len(self._arrays)

    def restore(self) -> None:
        """Reorder those of the arrays held in an MKLDNN layout back to the default, in place."""
        if self._arrays:
            callbacks.extension().default_layouts(self._handles, len(self._arrays))


def of_executor(executor: Any, nodes: Sequence[dict]) -> DefaultLayout:
    """The arrays of ``executor``, bound from a graph of these nodes, that only its subgraphs
    read."""
    names = baked_names(nodes)
    arrays = {**executor.arg_dict, **executor.aux_dict}
    return DefaultLayout(arrays[name] for name in sorted(names) if name in arrays)


def of_block(block: Any) -> DefaultLayout:
    """The parameters of a Gluon block, hybridized with the backend, that only its subgraphs
    read (every context's copy)."""
    names = baked_names(json.loads(block._cached_graph[1].tojson())["nodes"])
    params = [p for is_data, p in block._cached_op_args if not is_data and p.name in names]
    return DefaultLayout(array for p in params for array in p.list_data())
