"""Shape and layout: reshape, transpose, slicing, joining and splitting, broadcasting."""
from __future__ import annotations

from ._registry import Attrs, always, register
from ._rules import first_problem, ints, one_of, unset

# Reshape codes -2/-3/-4 have no ONNX equivalent; mx2onnx rewrites only these patterns of them.
_RESHAPE_PATTERNS = ((0, 0, -3, -3), (-3, -1), (-3, 0))


@register("Reshape")
def _reshape(attrs: Attrs) -> str | None:
    shape = ints(attrs, "shape")
    special = [d for d in shape if d is not None and d < -1]
    return first_problem(
        unset(attrs, "target_shape", "()", "[]"),
        unset(attrs, "keep_highest", "False", "0"),
        None if not special or shape in _RESHAPE_PATTERNS
        else f"shape={attrs.get('shape')}: codes -2/-3/-4 are supported only as "
             + ", ".join(str(p) for p in _RESHAPE_PATTERNS),
    )


@register("SwapAxis")
def _swap_axis(attrs: Attrs) -> str | None:
    # mx2onnx rejects negative axes here.
    for key in ("dim1", "dim2"):
        if int(attrs.get(key, "0")) < 0:
            return f"{key}={attrs[key]}: negative axes are not supported"
    return None


@register("slice")
def _slice(attrs: Attrs) -> str | None:
    steps = ints(attrs, "step")
    return ("negative slice steps are not supported"
            if any(s is not None and s < 0 for s in steps) else None)


@register("broadcast_to")
def _broadcast_to(attrs: Attrs) -> str | None:
    # MXNet's 0 ("keep this axis") means size 0 to ONNX's Expand.
    return "broadcast_to with 0 in shape is not supported" if 0 in ints(attrs, "shape") else None


register(
    "Flatten", "transpose", "expand_dims", "squeeze", "slice_axis", "slice_like", "Concat",
    "stack", "SliceChannel", "_split_v2", "tile", "repeat", "broadcast_axis", "broadcast_like",
    "reshape_like", "depth_to_space", "space_to_depth", "one_hot",
)(always)


@register("take")
def _take(attrs: Attrs) -> str | None:
    return one_of(attrs, "mode", ("clip", "wrap"), "clip")


@register("reverse")
def _reverse(attrs: Attrs) -> str | None:
    return None if len(ints(attrs, "axis")) <= 1 else "reverse over several axes is not supported"
