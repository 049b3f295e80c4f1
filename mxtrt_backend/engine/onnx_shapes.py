"""Input shapes and dtypes of an exported subgraph, and the batch-agnostic model one engine over a range of
batch sizes (the ``batch_range`` option) is built from. Pure ONNX: no runtime needed."""
from __future__ import annotations

import json

from typing import Mapping, Sequence

import numpy as np
import onnx

Shape = tuple[int, ...]
# min, opt and max shape of one input: a TensorRT optimization profile.
ShapeRange = tuple[Shape, Shape, Shape]


def input_shapes(onnx_bytes: bytes, input_names: Sequence[str]) -> dict[str, Shape]:
    model = onnx.load_from_string(onnx_bytes)
    dims = {vi.name: tuple(d.dim_value for d in vi.type.tensor_type.shape.dim)
            for vi in model.graph.input}
    return {name: dims[name] for name in input_names}


def input_dtypes(onnx_bytes: bytes, input_names: Sequence[str]) -> dict[str, np.dtype]:
    model = onnx.load_from_string(onnx_bytes)
    types = {vi.name: np.dtype(onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type))
             for vi in model.graph.input}
    return {name: types[name] for name in input_names}


def source_names(onnx_bytes: bytes) -> dict[str, str]:
    """Graph input -> the MXNet symbol's name of that input, as the export records it."""
    from ..export import SOURCES_PROP

    model = onnx.load_from_string(onnx_bytes)
    found = {p.key: p.value for p in model.metadata_props}.get(SOURCES_PROP)
    return json.loads(found) if found else {}


def with_dynamic_batch(onnx_bytes: bytes, input_names: Sequence[str]) -> bytes:
    """The model with dim 0 of these inputs symbolic ("batch"), output and intermediate sizes
    left to inference: what one optimization profile over the batch needs."""
    model = onnx.load_from_string(onnx_bytes)
    for vi in model.graph.input:
        if vi.name in input_names:
            dim = vi.type.tensor_type.shape.dim[0]
            dim.Clear()
            dim.dim_param = "batch"
    for vi in model.graph.output:
        for dim in vi.type.tensor_type.shape.dim:
            dim.Clear()  # rank kept, sizes unknown
    del model.graph.value_info[:]
    return model.SerializeToString()


def profile_shapes(shapes: Mapping[str, Shape], batch_range: tuple[int, int, int]
                   ) -> dict[str, ShapeRange]:
    """min/opt/max shapes per data input: the batch (dim 0) from batch_range, the rest as is."""
    low, opt, high = batch_range
    return {name: ((low, *shape[1:]), (opt, *shape[1:]), (high, *shape[1:]))
            for name, shape in shapes.items()}


def build_input(onnx_bytes: bytes, input_names: Sequence[str],
                batch_range: tuple[int, int, int] | None) -> tuple[bytes, dict[str, ShapeRange]]:
    """What an engine is built from: the model (batch-agnostic with a batch range) and the
    shape range of every input (min = opt = max without one)."""
    shapes = input_shapes(onnx_bytes, input_names)
    if batch_range is None:
        return onnx_bytes, {name: (shape, shape, shape) for name, shape in shapes.items()}
    return with_dynamic_batch(onnx_bytes, input_names), profile_shapes(shapes, batch_range)
