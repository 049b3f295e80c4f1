"""Layers: convolutions, pooling, dense, normalisations, activations, softmax, embedding."""
from __future__ import annotations

from typing import Sequence

from ._registry import Attrs, ShapeNeeded, TensorInfo, always, registrar
from ._rules import first_problem, flag, is_false, one_of, unset

register = registrar("Layers")

# ONNX convolutions and pools are channel-first only; mx2onnx also rejects an explicit 'NCW'
# (it accepts 1-D data only under the default layout).
_CHANNEL_FIRST = ("None", "NCHW", "NCDHW")


@register("Convolution", param_slots=(1, 2))
def _convolution(attrs: Attrs) -> str | None:
    return one_of(attrs, "layout", _CHANNEL_FIRST, "None")


@register("Deconvolution", param_slots=(1, 2))
def _deconvolution(attrs: Attrs) -> str | None:
    return first_problem(
        one_of(attrs, "layout", ("None", "NCW", "NCHW", "NCDHW"), "None"),
        # ONNX's output_shape pads differently from MXNet's target_shape.
        unset(attrs, "target_shape", "()", "[]"),
    )


def _uniform_dtype(attrs: Attrs, inputs: Sequence[TensorInfo]) -> str | None:
    # MXNet keeps float32 statistics for float16 data; opset-13 BatchNormalization wants one type.
    dtypes = sorted({t.dtype for t in inputs if t.dtype is not None})
    return (None if len(dtypes) <= 1
            else f"inputs of mixed dtypes ({', '.join(dtypes)}) are not supported")


def _batch_norm_in_training(attrs: Attrs) -> str | None:
    return (None if flag(attrs, "use_global_stats", False)
            else "BatchNorm normalises with the batch's own statistics in training")


@register("BatchNorm", param_slots=(1, 2, 3, 4), check_inputs=_uniform_dtype,
          in_training=_batch_norm_in_training)
def _batch_norm(attrs: Attrs) -> str | None:
    return first_problem(
        one_of(attrs, "axis", ("1",), "1"),
        is_false(attrs, "output_mean_var"),
    )


@register("Pooling")
def _pooling(attrs: Attrs) -> str | None:
    # pooling_convention=full: converters.pooling pads explicitly (MXNet's output size and
    # averaging counts at the edges).
    pool_type = attrs.get("pool_type", "max")
    global_pool = flag(attrs, "global_pool", False)
    valid = attrs.get("pooling_convention", "valid") == "valid"
    return first_problem(
        one_of(attrs, "layout", _CHANNEL_FIRST, "None"),
        one_of(attrs, "pool_type", ("max", "avg", "lp"), "max"),
        one_of(attrs, "pooling_convention", ("valid", "full"), "valid"),
        None if pool_type != "lp" or global_pool or valid
        else "lp pooling needs pooling_convention=valid",
        None if pool_type != "lp" or not global_pool
        else "global lp pooling differs from ONNX's GlobalLpPool",
    )


register("FullyConnected", param_slots=(1, 2))(always)


@register("Activation")
def _activation(attrs: Attrs) -> str | None:
    return one_of(attrs, "act_type", ("relu", "sigmoid", "tanh", "softrelu", "softsign"), "relu")


def _rank(inputs: Sequence[TensorInfo], index: int = 0) -> int | None:
    shape = inputs[index].shape if len(inputs) > index else None
    return None if shape is None else len(shape)


def _leaky_relu_inputs(attrs: Attrs, inputs: Sequence[TensorInfo]) -> str | None:
    act_type = attrs.get("act_type", "leaky")
    if act_type == "gelu" and any(t.dtype == "float16" for t in inputs):
        return "float16: mx2onnx exports gelu with float32 constants"
    # ONNX PRelu broadcasts the per-channel slope against the last axis, MXNet against axis 1:
    # they agree on (N, C) data only.
    rank = _rank(inputs)
    if act_type != "prelu" or rank in (1, 2):
        return None
    reason = "prelu is supported on 2-D data of known shape only (ONNX broadcasts its slope differently)"
    return ShapeNeeded(reason) if rank is None else reason


@register("LeakyReLU", param_slots=(1,), check_inputs=_leaky_relu_inputs)
def _leaky_relu(attrs: Attrs) -> str | None:
    # rrelu is random in training and a fixed slope at inference; mx2onnx has no mapping for it.
    return one_of(attrs, "act_type", ("leaky", "elu", "selu", "gelu", "prelu"), "leaky")


@register("softmax")
def _softmax(attrs: Attrs) -> str | None:
    # mx2onnx ignores dtype (the output's): its graph would disagree with MXNet's buffers.
    # use_length: converters.tensor.softmax.
    return unset(attrs, "dtype")


@register("log_softmax")
def _log_softmax(attrs: Attrs) -> str | None:
    return first_problem(unset(attrs, "temperature"), is_false(attrs, "use_length"),
                         unset(attrs, "dtype"))


def _softmax_output_inputs(attrs: Attrs, inputs: Sequence[TensorInfo]) -> str | None:
    # On N-D data MXNet's normalisation axis depends on the label's shape; mx2onnx always
    # flattens. They agree on 2-D data.
    rank = _rank(inputs)
    reason = "SoftmaxOutput is supported on 2-D data of known shape only"
    return None if rank == 2 else ShapeNeeded(reason) if rank is None else reason


@register("SoftmaxOutput", check_inputs=_softmax_output_inputs)
def _softmax_output(attrs: Attrs) -> str | None:
    return first_problem(is_false(attrs, "multi_output"), is_false(attrs, "preserve_shape"))


# Exported by mx2onnx_fixes (mx2onnx has no converter for it).
register("SoftmaxActivation")(always)


@register("LayerNorm", param_slots=(1, 2),
          float16_problem="mx2onnx exports it with a float32 epsilon")
def _layer_norm(attrs: Attrs) -> str | None:
    return is_false(attrs, "output_mean_var")


register("InstanceNorm", param_slots=(1, 2))(always)


def _dropout_in_training(attrs: Attrs) -> str | None:
    return None if float(attrs.get("p", "0.5")) == 0 else "Dropout drops activations in training"


@register("Dropout", in_training=_dropout_in_training)
def _dropout(attrs: Attrs) -> str | None:
    # Dropout is the identity at inference, the only mode the backend runs, unless mode=always.
    return one_of(attrs, "mode", ("training",), "training")


register("Embedding", param_slots=(1,))(always)


@register("UpSampling")
def _upsampling(attrs: Attrs) -> str | None:
    return first_problem(one_of(attrs, "sample_type", ("nearest",), "nearest"),
                         one_of(attrs, "num_args", ("1",), "1"))


@register("Pad")
def _pad(attrs: Attrs) -> str | None:
    return one_of(attrs, "mode", ("constant", "edge", "reflect"), "constant")


# mx2onnx assumes knorm=1 where MXNet defaults to 2: export spells the default out.
register("LRN")(always)


@register("L2Normalization")
def _l2_normalization(attrs: Attrs) -> str | None:
    return one_of(attrs, "mode", ("channel",), "instance")


# Any output size: converters.pooling averages with MatMuls over MXNet's windows.
register("_contrib_AdaptiveAvgPooling2D")(always)


@register("_contrib_BilinearResize2D")
def _bilinear_resize(attrs: Attrs) -> str | None:
    return first_problem(
        one_of(attrs, "mode", ("size",), "size"),
        None if flag(attrs, "align_corners", True) else "align_corners=False is not supported")


@register("Crop")
def _crop(attrs: Attrs) -> str | None:
    return is_false(attrs, "center_crop")


register("SequenceMask",
         float16_problem="mx2onnx exports it with a float32 mask value")(always)


register("_contrib_div_sqrt_dim", "_contrib_interleaved_matmul_selfatt_qk",
         "_contrib_interleaved_matmul_selfatt_valatt")(always)
