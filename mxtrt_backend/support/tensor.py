"""Shape and layout: reshape, transpose, slicing, joining and splitting, broadcasting, indexing."""
from __future__ import annotations

from ._registry import Attrs, always, registrar
from ._rules import first_problem, ints, one_of, unset

register = registrar("Shape, layout and indexing")


@register("Reshape", integers=True)
def _reshape(attrs: Attrs) -> str | None:
    # Every shape code (0, -1, -2, -3, -4, reverse): converters.layout builds the target shape.
    return first_problem(unset(attrs, "target_shape", "()", "[]"),
                         unset(attrs, "keep_highest", "False", "0"))


@register("SwapAxis", integers=True)
def _swap_axis(attrs: Attrs) -> str | None:
    # mx2onnx rejects negative axes here.
    for key in ("dim1", "dim2"):
        if int(attrs.get(key, "0")) < 0:
            return f"{key}={attrs[key]}: negative axes are not supported"
    return None


@register("slice", integers=True)
def _slice(attrs: Attrs) -> str | None:
    steps = ints(attrs, "step")
    return ("negative slice steps are not supported"
            if any(s is not None and s < 0 for s in steps) else None)


@register("broadcast_to", integers=True)
def _broadcast_to(attrs: Attrs) -> str | None:
    # MXNet's 0 ("keep this axis") means size 0 to ONNX's Expand.
    return "broadcast_to with 0 in shape is not supported" if 0 in ints(attrs, "shape") else None


register(
    "Flatten", "transpose", "expand_dims", "squeeze", "slice_axis", "slice_like", "Concat",
    "stack", "SliceChannel", "_split_v2", "tile", "repeat", "broadcast_axis", "broadcast_like",
    "reshape_like", "shape_array", "gather_nd",
    integers=True,
)(always)

# ONNX Runtime has no integer DepthToSpace/SpaceToDepth.
register("depth_to_space", "space_to_depth", "one_hot")(always)


@register("take", integers=True)
def _take(attrs: Attrs) -> str | None:
    return one_of(attrs, "mode", ("clip", "wrap"), "clip")


@register("reverse", integers=True)
def _reverse(attrs: Attrs) -> str | None:
    return None if len(ints(attrs, "axis")) <= 1 else "reverse over several axes is not supported"


@register("_arange", integers=True)
def _arange(attrs: Attrs) -> str | None:
    # Exported as a constant (converters.tensor.arange); infer_range takes the size from data.
    return first_problem(
        unset(attrs, "infer_range", "False", "0"),
        None if float(attrs.get("step", "1")) != 0 else "step=0 is not supported")


@register("_contrib_arange_like",
          float16_problem="MXNet's float16 CPU kernel writes other values (all 1 for start=1.5, "
                          "step=0.5) than its float32 one")
def _arange_like(attrs: Attrs) -> str | None:
    return one_of(attrs, "repeat", ("1",), "1")


# TensorRT's TopK layer takes K < 3840.
TOPK_LIMIT = 3840


@register("topk", integers=True)
def _topk(attrs: Attrs) -> str | None:
    k = int(attrs.get("k", "1"))
    return first_problem(
        one_of(attrs, "ret_typ", ("indices", "value", "both"), "indices"),
        "axis=None (over the flattened input) is not supported" if attrs.get("axis") == "None"
        else None,
        None if 0 < k < TOPK_LIMIT else f"k={k} is not supported (TensorRT's TopK takes "
                                         f"0 < k < {TOPK_LIMIT})")
