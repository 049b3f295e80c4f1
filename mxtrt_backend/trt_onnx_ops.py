"""The ONNX operators TensorRT 10's ONNX parser (onnx-tensorrt) supports, and their types, as data.

Source: the operator support matrix of onnx-tensorrt, docs/operators.md at tag release/10.1-GA
(commit 96e781103cfc4adf4a6bb557e94bac8e693f6f4c, "TensorRT 10.0 supports operators in the
inclusive range of opset 9 to opset 20"): every row marked "Y", and its "Supported Types" column
for the integer and boolean types (every op takes FP32, FP16 and BF16 but those listed as
boolean-only). Other per-op restrictions in that table (e.g. Conv weights must be initializers,
2D/3D pooling only, TopK's K < 3840) are not encoded here; the parser reports them at build time,
and the subgraph then falls back to ONNX Runtime with a WARNING.
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


# Ops whose "Supported Types" include INT32 and INT64 (ConstantOfShape's row says "INF64").
INTEGER_OPS: frozenset[str] = frozenset((
    "Abs", "Add", "ArgMax", "ArgMin", "Cast", "CastLike", "Concat", "Constant", "ConstantOfShape",
    "DepthToSpace", "Div", "Equal", "Expand", "EyeLike", "Flatten", "Gather", "GatherElements",
    "GatherND", "Gelu", "Greater", "GreaterOrEqual", "Identity", "If", "IsNaN", "Less",
    "LessOrEqual", "Loop", "Max", "Mean", "Min", "Mod", "Mul", "Neg", "OneHot", "Pad", "Range",
    "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean",
    "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare", "Relu", "Reshape",
    "ReverseSequence", "Scatter", "ScatterElements", "ScatterND", "Shape", "Shrink", "Sign",
    "Size", "Slice", "SpaceToDepth", "Split", "Squeeze", "Sub", "Sum", "Tile", "TopK",
    "Transpose", "Trilu", "Unsqueeze", "Where",
))
# Ops whose "Supported Types" include BOOL; And, Or, Xor and Not take BOOL only.
BOOL_OPS: frozenset[str] = frozenset((
    "Cast", "CastLike", "Concat", "Constant", "ConstantOfShape", "Expand", "EyeLike", "Flatten",
    "Gather", "GatherElements", "GatherND", "Identity", "If", "Loop", "OneHot", "Reshape",
    "ReverseSequence", "Shape", "Size", "Slice", "Split", "Squeeze", "Tile", "Transpose", "Trilu",
    "Unsqueeze", "Where", "And", "Or", "Xor", "Not",
))
_BOOL_ONLY = frozenset(("And", "Or", "Xor", "Not"))
_FLOATS = frozenset((onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16))
_INTEGERS = frozenset((onnx.TensorProto.INT32, onnx.TensorProto.INT64))
# Which tensor's type the matrix means: the first input ("T"), but for these.
_TYPED_BY: dict[str, tuple[str, int]] = {"Where": ("input", 1), "ConstantOfShape": ("output", 0),
                                         "Cast": ("output", 0), "CastLike": ("output", 0)}


def _supported_types(op: str) -> frozenset[int]:
    if op in _BOOL_ONLY:
        return frozenset((onnx.TensorProto.BOOL,))
    return (_FLOATS | (_INTEGERS if op in INTEGER_OPS else frozenset())
            | (frozenset((onnx.TensorProto.BOOL,)) if op in BOOL_OPS else frozenset()))


def unsupported_types(model: onnx.ModelProto | bytes) -> list[str]:
    """'Op(type)' for every node whose main tensor has a type TensorRT's parser does not take for
    that op (e.g. 'Mul(bool)'), sorted; types come from ONNX's shape inference."""
    if isinstance(model, bytes):
        model = onnx.load_from_string(model)
    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type
             for v in (*graph.input, *graph.value_info, *graph.output)}
    types.update({t.name: t.data_type for t in graph.initializer})
    found = set()
    for node in graph.node:
        if node.domain not in ("", "ai.onnx") or node.op_type not in SUPPORTED_OPS:
            continue
        side, index = _TYPED_BY.get(node.op_type, ("input", 0))
        names = node.input if side == "input" else node.output
        elem = types.get(names[index]) if len(names) > index else None
        if elem and elem not in _supported_types(node.op_type):
            found.add(f"{node.op_type}({onnx.helper.tensor_dtype_to_np_dtype(elem).name})")
    return sorted(found)


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
