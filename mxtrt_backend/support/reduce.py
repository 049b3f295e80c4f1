"""Reductions and matrix products."""
from __future__ import annotations

from typing import Sequence

from ._registry import Attrs, ShapeNeeded, TensorInfo, always, registrar
from ._rules import first_problem, flag, is_false, one_of, unset

register = registrar("Reductions and products")


@register("sum", "mean", "max", "min", "prod")
def _reduce(attrs: Attrs) -> str | None:
    return is_false(attrs, "exclude")


@register("norm")
def _norm(attrs: Attrs) -> str | None:
    return first_problem(one_of(attrs, "ord", ("1", "2"), "2"),
                         one_of(attrs, "out_dtype", ("None", "float32", "float16"), "None"))


register("batch_dot", "argmax", "argmin")(always)


def _dot_inputs(attrs: Attrs, inputs: Sequence[TensorInfo]) -> str | None:
    # ONNX MatMul contracts the last axis of a with the second-to-last of b; MXNet's dot contracts
    # with b's first axis. They agree when b is a matrix and a is not transposed or is a matrix.
    ranks = [len(t.shape) if t.shape is not None else None for t in inputs]
    transpose_a = flag(attrs, "transpose_a", False)
    if len(ranks) != 2 or ranks[1] is None or (transpose_a and ranks[0] is None):
        return ShapeNeeded("dot needs its input shapes at partition time")
    if ranks[1] != 2:
        return f"dot with a {ranks[1]}-D right operand differs from ONNX MatMul"
    if transpose_a and ranks[0] != 2:
        return f"dot with transpose_a of a {ranks[0]}-D left operand differs from ONNX MatMul"
    return None


register("dot", check_inputs=_dot_inputs)(always)


@register("_linalg_gemm2")
def _gemm2(attrs: Attrs) -> str | None:
    return unset(attrs, "axis", "-2")
