"""The support registry, table-driven: supported nodes, and refused ones with their reason."""
from __future__ import annotations

import pytest

from mxtrt_backend import support

SUPPORTED = [
    ("Convolution", {"kernel": "(3, 3)", "num_filter": "8"}),
    ("Convolution", {"kernel": "(3, 3)", "num_filter": "8", "layout": "NCHW", "num_group": "2"}),
    ("BatchNorm", {"fix_gamma": "False"}),
    ("Activation", {"act_type": "relu"}),
    ("Activation", {"act_type": "sigmoid"}),
    ("Pooling", {"kernel": "(2, 2)", "pool_type": "max"}),
    ("Pooling", {"global_pool": "True", "pool_type": "avg", "pooling_convention": "full"}),
    ("FullyConnected", {"num_hidden": "10"}),
    ("Flatten", {}),
    ("elemwise_add", {}),
    ("Concat", {"dim": "1"}),
    ("Dropout", {"p": "0.5"}),
    ("clip", {"a_min": "0", "a_max": "6"}),
]

REFUSED = [
    ("Convolution", {"layout": "NHWC"}, "layout=NHWC is not supported"),
    ("BatchNorm", {"axis": "3"}, "axis=3 is not supported"),
    ("BatchNorm", {"output_mean_var": "True"}, "output_mean_var=True is not supported"),
    ("Activation", {"act_type": "log_sigmoid"}, "act_type=log_sigmoid is not supported"),
    ("Pooling", {"pool_type": "sum"}, "pool_type=sum is not supported"),
    ("Pooling", {"pooling_convention": "same"}, "pooling_convention=same is not supported"),
    ("Pooling", {"pool_type": "lp", "pooling_convention": "full"}, "lp pooling needs pooling_convention=valid"),
    ("Custom", {"op_type": "mine"}, "no converter for this op"),
]


@pytest.mark.parametrize("op, attrs", SUPPORTED)
def test_supported(op, attrs):
    assert support.refusal(op, attrs) is None


@pytest.mark.parametrize("op, attrs, reason", REFUSED)
def test_refused_with_reason(op, attrs, reason):
    assert reason in support.refusal(op, attrs)


def test_exclude_ops_refuses_a_supported_op():
    assert support.refusal("Flatten", {}, exclude_ops=("Flatten",)) == "excluded by option exclude_ops"


def test_param_slots_name_weights_and_statistics():
    assert support.param_slots("Convolution") == (1, 2)
    assert support.param_slots("BatchNorm") == (1, 2, 3, 4)
    assert support.param_slots("Activation") == ()
    assert support.param_slots("NoSuchOp") == ()


def test_output_dtypes_other_than_float_are_refused():
    f32, i32 = support.TensorInfo(dtype="float32"), support.TensorInfo(dtype="int32")
    assert support.refusal("relu", {}, outputs=[f32]) is None
    assert support.refusal("relu", {}, outputs=[i32]) == (
        "output dtype int32 is not supported (supported: float32, float16)")


def test_checks_on_inputs_see_what_type_inference_knows():
    matrix, cube = support.TensorInfo((4, 5)), support.TensorInfo((2, 4, 5))
    assert support.refusal("dot", {}, inputs=[cube, matrix]) is None
    assert "3-D right operand" in support.refusal("dot", {}, inputs=[matrix, cube])
    assert "needs its input shapes" in support.refusal("dot", {}, inputs=[support.TensorInfo()] * 2)
