"""Element-wise maths: unary functions, same-shape and broadcast binary ops, scalar ops, casts."""
from __future__ import annotations

from ._registry import SUPPORTED_DTYPES, Attrs, always, register
from ._rules import one_of

register(
    "relu", "sigmoid", "tanh", "exp", "log", "sqrt", "square", "abs", "negative", "reciprocal",
    "ceil", "floor", "sin", "cos", "tan", "arcsin", "arccos", "arctan",
    "log2", "_copy", "BlockGrad", "clip", "hard_sigmoid", "zeros_like", "ones_like",
)(always)

register(
    "elemwise_add", "elemwise_sub", "elemwise_mul", "elemwise_div", "add_n",
    "_maximum", "_minimum", "_power",
    "broadcast_add", "broadcast_sub", "broadcast_mul", "broadcast_div", "broadcast_power",
    "broadcast_equal", "broadcast_not_equal", "broadcast_greater", "broadcast_greater_equal",
    "broadcast_lesser", "broadcast_lesser_equal",
    "broadcast_logical_and", "broadcast_logical_or", "broadcast_logical_xor", "logical_not",
    "where", "broadcast_mod",
)(always)

register(
    "_plus_scalar", "_minus_scalar", "_rminus_scalar", "_mul_scalar", "_div_scalar",
    "_rdiv_scalar", "_power_scalar", "_maximum_scalar", "_minimum_scalar",
    "_greater_scalar", "_lesser_scalar", "_equal_scalar",
)(always)


# ONNX Runtime's float16 Min aborts the process when it broadcasts.
register("broadcast_minimum",
         float16_problem="ONNX Runtime's broadcasting float16 Min crashes")(always)


@register("Cast")
def _cast(attrs: Attrs) -> str | None:
    return one_of(attrs, "dtype", SUPPORTED_DTYPES, "float32")
