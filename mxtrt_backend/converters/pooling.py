"""Pooling with pooling_convention=full, and adaptive average pooling to any output size.

``full`` rounds the output size up: the last window may hang over the right edge by up to
stride - 1 elements. ONNX's ceil_mode drops a last window that starts in the right padding
(MXNet keeps it) and averages a clipped window over another count than MXNet. So the input is
padded explicitly by stride - 1 more on the right and pooled without ceil_mode, which gives
MXNet's output size; a max pool pads with the lowest finite value (MXNet's initial maximum), an
average pool divides the window sums by the count MXNet uses, computed the same way on a mask:
ones where MXNet counts an element (the input, and the declared padding when
count_include_pad), zeros elsewhere.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from onnx import numpy_helper

from ._emit import END, Converter, Emitter


def pooling(original: Converter) -> Converter:
    def convert(node: dict, **kwargs: Any) -> Any:
        e = Emitter(node, kwargs)
        kernel = e.ints("kernel")
        stride = e.ints("stride") or [1] * len(kernel)
        pad = e.ints("pad") or [0] * len(kernel)
        pool_type = e.attr("pool_type", "max")
        if (e.attr("pooling_convention", "valid") != "full" or e.flag("global_pool")
                or pool_type not in ("max", "avg")
                or (pool_type == "max" and not any(pad)
                    and all(s <= k for s, k in zip(stride, kernel)))):
            # ONNX's ceil_mode is MXNet's full convention when no window can start past the
            # input (no padding, stride <= kernel) and no average is taken.
            return original(node, **kwargs)
        return _explicitly_padded(e, kernel, stride, pad, pool_type)

    return convert


def _explicitly_padded(e: Emitter, kernel: list[int], stride: list[int], pad: list[int],
                       pool_type: str) -> list:
    data, dtype = e.inputs[0], e.dtypes[0]
    zeros = [0, 0]
    pads = e.const(zeros + pad + zeros + [p + s - 1 for p, s in zip(pad, stride)])
    attrs: dict[str, Any] = {"kernel_shape": kernel, "strides": stride}
    if pool_type == "max":
        lowest = e.const(np.finfo(dtype).min, dtype)
        padded = e.op("Pad", data, pads, lowest, mode="constant")
        e.op("MaxPool", padded, out=e.name, **attrs)
        return e.nodes
    padded = e.op("Pad", data, pads, e.const(0, dtype), mode="constant")
    sums = e.op("AveragePool", padded, count_include_pad=1, **attrs)  # window sums / kernel size
    # The mask: [1, 1, *spatial] ones, padded with ones (declared padding MXNet counts) or zeros
    # (padding it does not), then zeros for the overhang.
    spatial = e.op("Slice", e.op("Shape", data), e.const([2]), e.const([END]),
                   e.const([0]))
    ones = e.op("ConstantOfShape", e.op("Concat", e.const([1, 1]), spatial, axis=0),
                value=numpy_helper.from_array(np.ones(1, dtype=dtype)))
    counted = e.const(1 if e.flag("count_include_pad", True) else 0, dtype)
    declared = e.op("Pad", ones, e.const(zeros + pad + zeros + pad), counted, mode="constant")
    overhang = e.const(zeros + [0] * len(pad) + zeros + [s - 1 for s in stride])
    mask = e.op("Pad", declared, overhang, e.const(0, dtype), mode="constant")
    counts = e.op("AveragePool", mask, count_include_pad=1, **attrs)  # counts / kernel size
    e.op("Div", sums, counts, out=e.name)
    return e.nodes


def adaptive_avg_pooling(original: Converter) -> Converter:
    """MXNet averages output cell i over input rows floor(i*H/O) to ceil((i+1)*H/O): a fixed
    O x H averaging matrix per axis, built here from the input's size at run time (TensorRT
    folds it for a fixed input size), applied as two MatMuls."""

    def convert(node: dict, **kwargs: Any) -> Any:
        e = Emitter(node, kwargs)
        size = e.ints("output_size") or [1]
        out_h, out_w = (size[0], size[0]) if len(size) == 1 else size[:2]
        if out_h == out_w == 1:
            return original(node, **kwargs)
        data = e.inputs[0]
        shape = e.op("Shape", data)
        rows = _averaging_matrix(e, e.dim(shape, 2), out_h)              # [O_h, H]
        cols = e.op("Transpose", _averaging_matrix(e, e.dim(shape, 3), out_w), perm=[1, 0])
        e.op("MatMul", e.op("MatMul", rows, data), cols, out=e.name)     # [N, C, O_h, O_w]
        return e.nodes

    return convert


def _averaging_matrix(e: Emitter, size: str, out: int) -> str:
    """[out, size]: row i holds 1/n over MXNet's window i of n elements, zeros elsewhere."""
    cells = e.const(np.arange(out).reshape(out, 1))                      # [O, 1]
    starts = e.op("Div", e.op("Mul", cells, size), e.const(out))         # floor(i*H/O)
    ends = e.op("Div", e.op("Add", e.op("Mul", e.op("Add", cells, e.const(1)), size),
                            e.const(out - 1)), e.const(out))             # ceil((i+1)*H/O)
    index = e.op("Range", e.const(0), e.scalar(size), e.const(1))        # [H]
    inside = e.op("And", e.op("GreaterOrEqual", index, starts), e.op("Less", index, ends))
    dtype = e.onnx_type(e.dtypes[0])
    counts = e.op("Cast", e.op("Sub", ends, starts), to=dtype)
    return e.op("Div", e.op("Cast", inside, to=dtype), counts)
