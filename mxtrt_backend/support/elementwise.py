"""Element-wise maths: unary functions, same-shape and broadcast binary ops, scalar ops, casts."""
from __future__ import annotations

from typing import Sequence

from ._registry import INTEGER_DTYPES, SUPPORTED_DTYPES, Attrs, TensorInfo, always, registrar
from ._rules import one_of

register = registrar("Element-wise")

register(
    "relu", "sigmoid", "tanh", "exp", "log", "sqrt", "square", "reciprocal",
    "ceil", "floor", "sin", "cos", "tan", "arcsin", "arccos", "arctan",
    "log2", "_copy", "BlockGrad", "clip", "hard_sigmoid",
)(always)

# Exact on integers too (MXNet's integer division truncates, as ONNX's Div does; scalars are
# truncated to the tensor's type on both sides).
register("abs", "negative", "zeros_like", "ones_like", integers=True)(always)

register(
    "_power", "broadcast_power", "broadcast_logical_and", "broadcast_logical_or",
    "broadcast_logical_xor", "logical_not",
)(always)

# ONNX's Sum (add_n) takes floats only.
register("add_n")(always)

register(
    "elemwise_add", "elemwise_sub", "elemwise_mul", "elemwise_div", "_maximum", "_minimum",
    "broadcast_add", "broadcast_sub", "broadcast_mul", "broadcast_div",
    "broadcast_equal", "broadcast_not_equal", "broadcast_greater", "broadcast_greater_equal",
    "broadcast_lesser", "broadcast_lesser_equal", "where", "broadcast_mod",
    integers=True,
)(always)

register("_power_scalar", "_rdiv_scalar")(always)

def _one_dtype(attrs: Attrs, inputs: Sequence[TensorInfo]) -> str | None:
    # MXNet's CPU kernel, the reference, takes float32 only: a cast between dtypes is untested.
    dtypes = {t.dtype for t in inputs if t.dtype is not None}
    return None if len(dtypes) <= 1 else "amp_multicast of inputs of several dtypes is not supported"


# Exported by converters.tensor as the identity.
register("amp_multicast", check_inputs=_one_dtype)(always)

register(
    "_plus_scalar", "_minus_scalar", "_rminus_scalar", "_mul_scalar", "_div_scalar",
    "_maximum_scalar", "_minimum_scalar", "_greater_scalar", "_lesser_scalar", "_equal_scalar",
    integers=True,
)(always)


# ONNX Runtime's float16 Min aborts the process when it broadcasts.
register("broadcast_minimum", integers=True,
         float16_problem="ONNX Runtime's broadcasting float16 Min crashes")(always)


@register("Cast", integers=True)
def _cast(attrs: Attrs) -> str | None:
    return one_of(attrs, "dtype", SUPPORTED_DTYPES + INTEGER_DTYPES, "float32")
