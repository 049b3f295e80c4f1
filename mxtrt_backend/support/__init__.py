"""Which MXNet operators the backend takes: one registry entry per op.

An entry is a predicate on the node's attributes that returns ``None`` when the node is supported
and otherwise a reason string. An op absent from the registry is refused as unknown. The registry
is the only place that knows about individual operators; the partitioner just consults it. An op
is listed only when MXNet's ONNX exporter (mx2onnx, opset 13) converts it correctly -- checked
numerically against MXNet, variant by variant, in tests/test_support_ops.py -- and TensorRT's ONNX
parser accepts what it exports (trt_onnx_ops).

An entry also names the input slots that hold parameters (weights, biases, statistics), so that
when values are not known at partition time the op can still tell parameters from data.

The entries live in modules by op family: nn, elementwise, tensor, reduce, detection.
"""
from __future__ import annotations

# Each module registers its ops; in this order they are listed (docs/coverage.md).
from . import nn, elementwise, tensor, reduce, detection  # noqa: F401, I001
from ._registry import (INTEGER_DTYPES, REGISTRY, SUPPORTED_DTYPES, Attrs, OpSupport,
                        Predicate, ShapeNeeded, TensorInfo, always, ops_table, param_slots,
                        refusal, registrar, training_difference)

__all__ = ["INTEGER_DTYPES", "REGISTRY", "SUPPORTED_DTYPES", "Attrs", "OpSupport", "Predicate",
           "ShapeNeeded", "TensorInfo", "always", "ops_table", "param_slots", "refusal",
           "registrar", "training_difference"]
