"""_contrib_box_nms as MXNet computes it, on ONNX's NonMaxSuppression.

MXNet's box_nms, per batch (all leading dims): keep the valid boxes (score > valid_thresh and,
with an id_index, class id != background_id), sort them by score, descending, ties by index
(a stable sort), keep the first topk, suppress greedily (IoU > overlap_thresh with a kept box of
the same class, or of any class with force_suppress or no id_index), and write the surviving
rows, whole, in that order; every other row is -1. With out_format != in_format the box
coordinates of the written rows are converted, except in rows whose first coordinate is
negative (MXNet's conversion skips them).

ONNX NonMaxSuppression (TensorRT's INMSLayer, ONNX Runtime's kernel) suppresses the same way
but orders equal scores as it likes, and its classes are a tensor dimension. So the candidates
are chosen and sorted here (TopK, which puts the lower index first among equal values), and
NonMaxSuppression gets their rank (k, k-1, ..., 1) as scores: no ties. Classes become one
score row per class, the class of a box being the first candidate with its class id. Boxes with
a negative width or height, which take part in no suppression in MXNet (zero area, no
intersection), are handed over as empty boxes, which ONNX's kernel also skips (it would
otherwise reorder their corners). What survives is gathered back in rank order and padded with
-1 rows.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from onnx import TensorProto

from ._emit import END, Emitter


def box_nms(node: dict, **kwargs: Any) -> list:
    e = Emitter(node, kwargs)
    data, dtype = e.inputs[0], e.dtypes[0]
    start, topk = int(e.attr("coord_start", "2")), int(e.attr("topk", "-1"))
    id_at = int(e.attr("id_index", "-1"))

    shape = e.op("Shape", data)
    rows = e.op("Reshape", data, e.op("Concat", e.const([-1]), e.op(
        "Slice", shape, e.const([-2]), e.const([END]), e.const([0])), axis=0))  # [B, N, W]
    if dtype != np.float32:  # NonMaxSuppression computes in float32
        rows = e.op("Cast", rows, to=TensorProto.FLOAT)
    count = e.dim(shape, -2)                                               # N, as [1]
    k = count if topk < 0 else e.op("Min", count, e.const([topk]))
    chosen, candidates = _candidates(e, rows, k, id_at)                    # [B, k], [B, k, W]
    k_scalar = e.scalar(k)
    rank = e.op("Cast", e.op("Range", k_scalar, e.const(0), e.const(-1)), to=TensorProto.FLOAT)
    nms_scores = e.op("Where", chosen, rank, e.const([0.0], np.float32))   # [B, k]
    if id_at >= 0 and not e.flag("force_suppress"):
        nms_scores = _per_class(e, _column(e, candidates, id_at), nms_scores, k_scalar)
    else:
        nms_scores = e.op("Unsqueeze", nms_scores, e.const([1]))           # [B, 1, k]
    selected = e.op("NonMaxSuppression", _empty_if_inverted(e, candidates, start), nms_scores,
                    k_scalar, e.const(float(e.attr("overlap_thresh", "0.5")), np.float32),
                    e.const(0.5, np.float32))                              # [M, 3]
    written = _survivors_first(e, candidates, selected, rank, k)           # [B, k, W]
    if e.attr("in_format", "corner") != e.attr("out_format", "corner"):
        written = _corner_to_center(e, written, start)

    rows_shape = e.op("Shape", rows)
    rest = e.op("Concat", e.dim(rows_shape, 0), e.op("Sub", count, k), e.dim(rows_shape, 2),
                axis=0)
    padded = e.op("Concat", written, e.op("Expand", e.const([-1.0], np.float32), rest), axis=1)
    out = e.name + "0"  # box_nms has a second, hidden output: MXNet lists "<name>_output0"
    if dtype == np.float32:
        e.op("Reshape", padded, shape, out=out)
    else:
        e.op("Cast", e.op("Reshape", padded, shape), to=e.onnx_type(dtype), out=out)
    return e.nodes


def _column(e: Emitter, rows: str, index: int) -> str:
    return e.op("Gather", rows, e.const(index), axis=2)


def _candidates(e: Emitter, rows: str, k: str, id_at: int) -> tuple[str, str]:
    """MXNet's candidates: valid rows, the first k by score (ties: lower index first). Returns
    which of the k are valid (fewer may be) and their rows."""
    scores = _column(e, rows, int(e.attr("score_index", "1")))            # [B, N]
    valid = e.op("Greater", scores, e.const([float(e.attr("valid_thresh", "0"))], np.float32))
    if id_at >= 0:
        background = e.const([float(e.attr("background_id", "-1"))], np.float32)
        valid = e.op("And", valid, e.op("Not", e.op("Equal", _column(e, rows, id_at), background)))
    ranked = e.op("Where", valid, scores, e.const([-np.inf], np.float32))
    _, order = e.multi("TopK", ranked, k, outs=[e.fresh("topv"), e.fresh("topi")], axis=1,
                       largest=1, sorted=1)                                # [B, k]
    chosen = e.op("GatherElements", valid, order, axis=1)
    return chosen, e.op("GatherND", rows, e.op("Unsqueeze", order, e.const([2])), batch_dims=1)


def _survivors_first(e: Emitter, candidates: str, selected: str, rank: str, k: str) -> str:
    """The rows NonMaxSuppression selected, in rank order, then -1 rows: [B, k, W]."""
    where = e.op("Gather", selected, e.const([0, 2]), axis=1)              # (batch, candidate)
    ones = e.op("Expand", e.const(1.0, np.float32), e.dim(e.op("Shape", selected), 0))
    batch_k = e.op("Concat", e.dim(e.op("Shape", candidates), 0), k, axis=0)
    kept = e.op("ScatterND", e.op("ConstantOfShape", batch_k), where, ones)  # [B, k] 0/1
    # Survivors rank above the rest (key 2k + rank against rank), each group in rank order.
    double_k = e.op("Cast", e.op("Mul", k, e.const([2])), to=TensorProto.FLOAT)
    key = e.op("Add", e.op("Mul", kept, double_k), rank)
    _, final = e.multi("TopK", key, k, outs=[e.fresh("keyv"), e.fresh("keyi")], axis=1,
                       largest=1, sorted=1)
    survives = e.op("Unsqueeze", e.op("Cast", e.op("GatherElements", kept, final, axis=1),
                                      to=TensorProto.BOOL), e.const([2]))
    written = e.op("GatherND", candidates, e.op("Unsqueeze", final, e.const([2])), batch_dims=1)
    return e.op("Where", survives, written, e.const([-1.0], np.float32))


def _per_class(e: Emitter, ids: str, scores: str, k: str) -> str:
    """[B, k] scores -> [B, k, k]: row c holds the scores of the candidates whose class is the
    class of candidate c (MXNet compares class ids as ints), zeros elsewhere."""
    ids = e.op("Cast", ids, to=TensorProto.INT32)
    same = e.op("Equal", e.op("Unsqueeze", ids, e.const([2])), e.op("Unsqueeze", ids, e.const([1])))
    positions = e.op("Range", e.const(0), k, e.const(1))                   # [k]
    at = e.op("Reshape", positions, e.const([1, -1, 1]))
    first = e.op("ReduceMin", e.op("Where", same, at, k), axes=[1], keepdims=0)  # [B, k]
    own = e.op("Equal", e.op("Unsqueeze", first, e.const([1])),
               e.op("Reshape", positions, e.const([1, -1, 1])))            # [B, k(class), k]
    return e.op("Where", own, e.op("Unsqueeze", scores, e.const([1])), e.const([0.0], np.float32))


def _empty_if_inverted(e: Emitter, candidates: str, start: int) -> str:
    boxes = e.op("Slice", candidates, e.const([start]), e.const([start + 4]), e.const([2]))
    low = e.op("Slice", boxes, e.const([0]), e.const([2]), e.const([2]))
    high = e.op("Slice", boxes, e.const([2]), e.const([4]), e.const([2]))
    inverted = e.op("Cast", e.op("ReduceMax", e.op("Cast", e.op("Less", high, low),
                                                   to=TensorProto.INT32), axes=[2], keepdims=1),
                    to=TensorProto.BOOL)                                   # [B, k, 1]
    return e.op("Where", inverted, e.const([0.0], np.float32), boxes)


def _corner_to_center(e: Emitter, rows: str, start: int) -> str:
    def part(begin: int, end: int) -> str:
        return e.op("Slice", rows, e.const([begin]), e.const([end]), e.const([2]))

    low, high = part(start, start + 2), part(start + 2, start + 4)
    center = e.op("Div", e.op("Add", low, high), e.const([2.0], np.float32))
    converted = e.op("Concat", center, e.op("Sub", high, low), axis=2)
    skipped = e.op("Less", part(start, start + 1), e.const([0.0], np.float32))
    boxes = e.op("Where", skipped, part(start, start + 4), converted)
    return e.op("Concat", part(0, start), boxes, part(start + 4, END), axis=2)
