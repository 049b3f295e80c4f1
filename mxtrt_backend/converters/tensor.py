"""Converters that mx2onnx lacks, or whose outputs it declares with the wrong dtype (later
converters make their constants of the declared dtype, so a wrong declaration breaks them)."""
from __future__ import annotations

from typing import Any

import numpy as np
from onnx import TensorProto
from ._emit import Converter, Emitter


def softmax_activation(node: dict, **kwargs: Any) -> list:
    # MXNet: mode=instance normalises over the last axis, mode=channel over axis 1.
    e = Emitter(node, kwargs)
    axis = 1 if e.attr("mode", "instance") == "channel" else -1
    e.op("Softmax", e.inputs[0], out=e.name, axis=axis)
    return e.nodes


def shape_array(node: dict, **kwargs: Any) -> tuple:
    e = Emitter(node, kwargs)
    e.op("Shape", e.inputs[0], out=e.name)
    return e.nodes, (np.dtype("int64"),)


def arange(node: dict, **kwargs: Any) -> tuple:
    """A constant: the values MXNet's kernel writes, start + (i // repeat) * step in the output
    dtype, for ceil((stop - start) / step) steps computed in double as MXNet does."""
    e = Emitter(node, kwargs)
    dtype = np.dtype(e.attr("dtype", "float32"))
    start, step = float(e.attr("start", "0")), float(e.attr("step", "1"))
    repeat = int(e.attr("repeat", "1"))
    stop_attr = e.attr("stop", "None")
    if stop_attr == "None":  # arange(n): 0 to n
        start, stop = 0.0, start
    else:
        stop = float(stop_attr)
    count = max(int(np.ceil((stop - start) / step)), 0)
    index = (np.arange(count * repeat) // repeat).astype(dtype)
    values = (dtype.type(start) + index * dtype.type(step)).astype(dtype)
    e.op("Identity", e.const(values, dtype), out=e.name)
    return e.nodes, (dtype,)


def arange_like(node: dict, **kwargs: Any) -> list:
    """start + i * step over the input's elements (its shape), or along one axis; in the
    input's dtype, as MXNet computes it. (mx2onnx's takes an empty slice for a negative axis.)"""
    e = Emitter(node, kwargs)
    data, dtype = e.inputs[0], e.dtypes[0]
    axis = e.attr("axis", "None")
    shape = e.op("Shape", data)
    size = shape if axis == "None" else e.dim(shape, int(axis))
    count = e.op("ReduceProd", size, keepdims=1)
    index = e.op("Cast", e.op("Range", e.const(0), e.scalar(count), e.const(1)),
                 to=e.onnx_type(dtype))
    values = e.op("Add", e.op("Mul", index, e.const(float(e.attr("step", "1")), dtype)),
                  e.const(float(e.attr("start", "0")), dtype))
    e.op("Reshape", values, size, out=e.name)
    return e.nodes


def topk(original: Converter) -> Converter:
    """mx2onnx's TopK, with the dtypes of its outputs declared (indices are 'dtype')."""

    def convert(node: dict, **kwargs: Any) -> tuple:
        e = Emitter(node, kwargs)
        indices = np.dtype(e.attr("dtype", "float32"))
        ret = e.attr("ret_typ", "indices")
        dtypes = {"both": (e.dtypes[0], indices), "value": (e.dtypes[0],)}.get(ret, (indices,))
        return original(node, **kwargs), dtypes

    return convert


def amp_multicast(node: dict, **kwargs: Any) -> list:
    """AMP's cast of its inputs to one float type: the identity when they share their dtype (the
    registry accepts no other case). Gluon graphs of AMP-ready blocks hold it even in float32."""
    e = Emitter(node, kwargs)
    if len(set(e.dtypes)) > 1:
        raise ValueError(f"amp_multicast of several dtypes ({sorted(d.name for d in e.dtypes)})")
    names = [e.name] if len(e.inputs) == 1 else [f"{e.name}{i}" for i in range(len(e.inputs))]
    for source, out in zip(e.inputs, names):
        e.op("Identity", source, out=out)
    return e.nodes


def softmax(original: Converter) -> Converter:
    """softmax with use_length: MXNet normalises each row over its first `length` elements
    (the length truncated to an integer) and writes 0 elsewhere, a whole row of 0 for length 0.
    mx2onnx masks with -65500 instead (a row of length 0 comes out uniform): masked here with
    -inf, then the masked places set to 0. The place along the axis comes from a CumSum, which
    needs no rank."""

    def convert(node: dict, **kwargs: Any) -> Any:
        e = Emitter(node, kwargs)
        if not e.flag("use_length"):
            return original(node, **kwargs)
        data, length = e.inputs
        dtype = e.dtypes[0]
        axis = int(e.attr("axis", "-1"))
        temperature = e.attr("temperature", "None")
        # 1, 2, ... M along the axis (float32: ONNX Runtime's CumSum has no float16): an
        # element is inside when its place <= length.
        place = e.op("CumSum", e.op("Expand", e.const(1, np.float32), e.op("Shape", data)),
                     e.const(axis))
        limit = e.op("Cast", e.op("Cast", length, to=TensorProto.INT64), to=TensorProto.FLOAT)
        inside = e.op("LessOrEqual", place, e.op("Unsqueeze", limit, e.const([axis])))
        masked = e.op("Where", inside, data, e.const(-np.inf, dtype))
        if temperature != "None" and float(temperature) != 1.0:
            masked = e.op("Div", masked, e.const(float(temperature), dtype))
        normalised = e.op("Softmax", masked, axis=axis)
        e.op("Where", inside, normalised, e.const(0, dtype), out=e.name)
        return e.nodes

    return convert
