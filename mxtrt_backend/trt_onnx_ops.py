"""The ONNX operators TensorRT 10's ONNX parser (onnx-tensorrt) supports, as data.

Source: the operator support matrix of onnx-tensorrt, docs/operators.md at tag release/10.1-GA
(commit 96e781103cfc4adf4a6bb557e94bac8e693f6f4c, "TensorRT 10.0 supports operators in the
inclusive range of opset 9 to opset 20"): every row marked "Y". Per-op restrictions in that table
(e.g. Conv weights must be initializers, 2D/3D pooling only) are not encoded here; the parser
reports them at build time, and the subgraph then falls back to ONNX Runtime with a WARNING.
"""
from __future__ import annotations

from typing import Iterable

import onnx

# Parsed with opset 9..20; the exporter pins 13 (export.OPSET).
OPSET_RANGE = (9, 20)

SUPPORTED_OPS: frozenset[str] = frozenset((
    "Abs", "Acos", "Acosh", "Add", "And", "ArgMax", "ArgMin", "Asin", "Asinh", "Atan", "Atanh",
    "AveragePool", "BatchNormalization", "Cast", "CastLike", "Ceil", "Celu", "Clip", "Concat",
    "Constant", "ConstantOfShape", "Conv", "ConvTranspose", "Cos", "Cosh", "CumSum",
    "DeformConv", "DepthToSpace", "DequantizeLinear", "Div", "Dropout", "Einsum", "Elu",
    "Equal", "Erf", "Exp", "Expand", "EyeLike", "Flatten", "Floor", "GRU", "Gather",
    "GatherElements", "GatherND", "Gelu", "Gemm", "GlobalAveragePool", "GlobalLpPool",
    "GlobalMaxPool", "Greater", "GreaterOrEqual", "GridSample", "GroupNormalization",
    "HardSigmoid", "HardSwish", "Hardmax", "Identity", "If", "ImageScaler",
    "InstanceNormalization", "IsInf", "IsNaN", "LRN", "LSTM", "LayerNormalization", "LeakyRelu",
    "Less", "LessOrEqual", "Log", "LogSoftmax", "Loop", "LpNormalization", "LpPool", "MatMul",
    "Max", "MaxPool", "Mean", "MeanVarianceNormalization", "Min", "Mish", "Mod", "Mul", "Neg",
    "NonMaxSuppression", "NonZero", "Not", "OneHot", "Or", "PRelu", "Pad", "ParametricSoftplus",
    "Pow", "QuantizeLinear", "RNN", "RandomNormal", "RandomNormalLike", "RandomUniform",
    "RandomUniformLike", "Range", "Reciprocal", "ReduceL1", "ReduceL2", "ReduceLogSum",
    "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSum",
    "ReduceSumSquare", "Relu", "Reshape", "Resize", "ReverseSequence", "RoiAlign", "Round",
    "ScaledTanh", "Scan", "Scatter", "ScatterElements", "ScatterND", "Selu", "Shape", "Shrink",
    "Sigmoid", "Sign", "Sin", "Sinh", "Size", "Slice", "Softmax", "Softplus", "Softsign",
    "SpaceToDepth", "Split", "Sqrt", "Squeeze", "Sub", "Sum", "Tan", "Tanh", "ThresholdedRelu",
    "Tile", "TopK", "Transpose", "Trilu", "Unsqueeze", "Upsample", "Where", "Xor"
))


def _ops(graph: onnx.GraphProto) -> Iterable[tuple[str, str]]:
    """(domain, op_type) of every node, subgraphs included (If/Loop/Scan bodies are parsed too)."""
    for node in graph.node:
        yield node.domain, node.op_type
        for attr in node.attribute:
            for sub in (*([attr.g] if attr.HasField("g") else []), *attr.graphs):
                yield from _ops(sub)


def unsupported_ops(model: onnx.ModelProto | bytes) -> list[str]:
    """The operators of a model that TensorRT's ONNX parser does not support, sorted; ops of a
    custom domain count as unsupported (TensorRT would need a plugin for them)."""
    if isinstance(model, bytes):
        model = onnx.load_from_string(model)
    return sorted({op if domain in ("", "ai.onnx") else f"{domain}::{op}"
                   for domain, op in _ops(model.graph)
                   if domain not in ("", "ai.onnx") or op not in SUPPORTED_OPS})
