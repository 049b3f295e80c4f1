"""ONNX converters for MXNet ops that mx2onnx (opset 13) lacks, or converts wrongly or only in
part; ``mx2onnx_fixes.applied`` puts them in force during the backend's exports.

A converter takes an MXNet node (its JSON dict) and mx2onnx's context, and returns ONNX nodes
(see ``_emit``). Each is checked numerically against MXNet by tests/test_support_ops.py.
"""
from __future__ import annotations

from typing import Any

from . import detection, layout, pooling, tensor
from ._emit import Converter


def _mx2onnx(opset: int, function: str) -> Converter:
    """mx2onnx's own converter, a function of its opset-12 or opset-13 module, looked up when
    called (the registry of the export opset holds ours while the backend exports)."""

    def call(node: dict, **kwargs: Any) -> Any:
        import importlib

        module = importlib.import_module(
            f"mxnet.onnx.mx2onnx._op_translations._op_translations_opset{opset}")
        return getattr(module, function)(node, **kwargs)

    return call


CONVERTERS: dict[str, Converter] = {
    "SoftmaxActivation": tensor.softmax_activation,
    "amp_multicast": tensor.amp_multicast,
    "shape_array": tensor.shape_array,
    "_arange": tensor.arange,
    "_contrib_arange_like": tensor.arange_like,
    "topk": tensor.topk(_mx2onnx(12, "convert_topk")),
    "softmax": tensor.softmax(_mx2onnx(13, "convert_softmax")),
    "Reshape": layout.reshape,
    "Pooling": pooling.pooling(_mx2onnx(12, "convert_pooling")),
    "_contrib_AdaptiveAvgPooling2D": pooling.adaptive_avg_pooling(
        _mx2onnx(12, "convert_contrib_AdaptiveAvgPooling2D")),
    "_contrib_box_nms": detection.box_nms,
}
