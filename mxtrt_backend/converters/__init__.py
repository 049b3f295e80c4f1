"""ONNX converters for MXNet ops that mx2onnx (opset 13) lacks, or converts wrongly or only in
part; ``mx2onnx_fixes.applied`` puts them in force during the backend's exports.

A converter takes an MXNet node (its JSON dict) and mx2onnx's context, and returns ONNX nodes
(see ``_emit``). Each is checked numerically against MXNet by tests/test_support_ops.py.
"""
from __future__ import annotations

from typing import Any

from . import detection, layout, pooling, tensor
from ._emit import Converter


def _mx2onnx(op: str) -> Converter:
    """mx2onnx's own converter for ``op`` (opset 12 table), looked up when called."""

    def call(node: dict, **kwargs: Any) -> Any:
        from mxnet.onnx.mx2onnx._export_onnx import MXNetGraph

        return MXNetGraph.registry_[12][op](node, **kwargs)

    return call


CONVERTERS: dict[str, Converter] = {
    "SoftmaxActivation": tensor.softmax_activation,
    "amp_multicast": tensor.amp_multicast,
    "shape_array": tensor.shape_array,
    "_arange": tensor.arange,
    "topk": tensor.topk(_mx2onnx("topk")),
    "Reshape": layout.reshape,
    "Pooling": pooling.pooling(_mx2onnx("Pooling")),
    "_contrib_AdaptiveAvgPooling2D": pooling.adaptive_avg_pooling(
        _mx2onnx("_contrib_AdaptiveAvgPooling2D")),
    "_contrib_box_nms": detection.box_nms,
}
