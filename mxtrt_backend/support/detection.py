"""Detection heads: box decoding, non-maximum suppression, RoI pooling."""
from __future__ import annotations

from typing import Sequence

from ._registry import Attrs, ShapeNeeded, TensorInfo, always, registrar
from ._rules import first_problem, ints, is_false, one_of
from .tensor import TOPK_LIMIT

register = registrar("Detection")


register("_contrib_box_decode")(always)


def _nms_candidates(attrs: Attrs, inputs: Sequence[TensorInfo]) -> str | None:
    """The candidates are sorted with TopK, whose K TensorRT bounds: topk, or all boxes."""
    if int(attrs.get("topk", "-1")) > 0:
        return None
    shape = inputs[0].shape if inputs else None
    if shape is None:
        return ShapeNeeded("box_nms with topk=-1 needs the input shape at partition time")
    boxes = shape[-2]
    return (None if boxes < TOPK_LIMIT else
            f"box_nms with topk=-1 over {boxes} boxes is not supported (TensorRT's TopK takes "
            f"k < {TOPK_LIMIT}; set topk)")


@register("_contrib_box_nms", check_inputs=_nms_candidates,
          float16_problem="MXNet computes float16 IoUs in float16, ONNX's NonMaxSuppression in "
                          "float32 (other boxes may survive)")
def _box_nms(attrs: Attrs) -> str | None:
    topk = int(attrs.get("topk", "-1"))
    overlap = float(attrs.get("overlap_thresh", "0.5"))
    return first_problem(
        # ONNX's NonMaxSuppression computes the IoU of center-format boxes with another rounding.
        one_of(attrs, "in_format", ("corner",), "corner"),
        one_of(attrs, "out_format", ("corner", "center"), "corner"),
        None if topk == -1 or 0 < topk < TOPK_LIMIT else
        f"topk={topk} is not supported (TensorRT's TopK takes k < {TOPK_LIMIT}: a lower topk "
        "converts)",
        None if 0 <= overlap <= 1 else f"overlap_thresh={overlap} is not supported (0 to 1)",
    )


@register("_contrib_ROIAlign", float16_problem="mx2onnx exports it with float32 constants")
def _roi_align(attrs: Attrs) -> str | None:
    # ONNX's RoiAlign of opset 13 samples as MXNet's aligned=False does.
    return first_problem(is_false(attrs, "position_sensitive"), is_false(attrs, "aligned"),
                         None if len(ints(attrs, "pooled_size")) == 2 else
                         f"pooled_size={attrs.get('pooled_size')} is not supported (give height "
                         "and width)")
