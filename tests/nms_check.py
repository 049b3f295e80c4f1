"""Comparing detection outputs whose last step is NMS (`_contrib_box_nms`).

NMS is discontinuous: a score or an IoU that moves by 1e-7 across a tie changes which boxes come
out. So when a backend's detections differ from MXNet's, `explain` checks, from the tensors the
NMS nodes read and wrote in both runs:

1. the backend's graph, bound again with those tensors as extra outputs, reproduces its outputs
   (when the backend converted NMS nodes, their tensors are inside a `_TensorRT` subgraph: the
   exported graph with those tensors as extra outputs is partitioned again instead);
2. every NMS node reads a tensor within the tolerance of MXNet's, or within float32 rounding
   (`zoo.arbitrate`): the conversion is right up to the NMS; and MXNet's own box_nms maps each
   run's input to that run's output (MXNet's NMS unchanged, or the converted one exact);
3. the first NMS node whose picks differ is replayed here (`greedy_nms`, MXNet's algorithm,
   checked against MXNet's result on both inputs), and every decision that came out differently
   is listed with its margin: two scores sorted the other way (their gap), a box suppressed in
   one run only (its IoU against the threshold), a score crossing valid_thresh. An exact tie is
   a margin of 0 in the reference. Later NMS nodes are consequences and are not compared.

`ok` holds when 1 and 2 hold and the picks differ only through such decisions (by 2 and the
replay, each is necessarily within the pre-NMS difference of a tie).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import mxnet as mx
import numpy as np

import zoo
from helpers import rel_err, unfused
from zoo import TOLERANCE


# --- MXNet's box_nms, replayed with its decisions ----------------------------------------------


@dataclass(frozen=True)
class NmsParams:
    overlap_thresh: float = 0.5
    valid_thresh: float = 0.0
    topk: int = -1
    coord_start: int = 2
    score_index: int = 1
    id_index: int = -1
    background_id: int = -1
    force_suppress: bool = False
    in_format: str = "corner"
    out_format: str = "corner"

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, str]) -> "NmsParams":
        kinds = {"overlap_thresh": float, "valid_thresh": float, "topk": int, "coord_start": int,
                 "score_index": int, "id_index": int, "background_id": int,
                 "force_suppress": lambda v: v in ("True", "true", "1"),
                 "in_format": str, "out_format": str}
        return cls(**{k: kinds[k](v) for k, v in attrs.items() if k in kinds})


@dataclass
class NmsRun:
    """One batch item through greedy NMS: candidates in sorted order (after topk), and for each
    pair (reference, candidate) compared, its IoU and whether it suppressed."""

    valid: np.ndarray  # bool per box
    order: list[int]  # candidate box indices, best first
    kept: list[int]
    iou: dict[tuple[int, int], float] = field(default_factory=dict)
    suppressed_by: dict[int, int] = field(default_factory=dict)


def _area(box: np.ndarray, corner: bool) -> np.float32:
    w, h = (box[2] - box[0], box[3] - box[1]) if corner else (box[2], box[3])
    return np.float32(0) if w < 0 or h < 0 else np.float32(w * h)


def _overlap(a: np.ndarray, b: np.ndarray, corner: bool) -> np.float32:
    def side(a1: np.float32, a2: np.float32, b1: np.float32, b2: np.float32) -> np.float32:
        if not corner:
            a1, a2, b1, b2 = a1 - a2 / 2, a1 + a2 / 2, b1 - b2 / 2, b1 + b2 / 2
        w = min(a2, b2) - max(a1, b1)
        return w if w > 0 else np.float32(0)

    return side(a[0], a[2], b[0], b[2]) * side(a[1], a[3], b[1], b[3])


def greedy_nms(boxes: np.ndarray, p: NmsParams) -> NmsRun:
    """MXNet 1.9's box_nms on one (N, width) float32 item (src/operator/contrib/
    bounding_box-inl.h): filter by valid_thresh (and background_id), stable sort by descending
    score, keep topk, then each surviving box suppresses later ones of its class (any class with
    force_suppress) whose IoU is > overlap_thresh. Arithmetic in float32, as there."""
    boxes = boxes.astype(np.float32)
    scores = boxes[:, p.score_index]
    valid = scores > np.float32(p.valid_thresh)
    if p.id_index >= 0:
        valid &= boxes[:, p.id_index] != np.float32(p.background_id)
    candidates = np.flatnonzero(valid)
    order = candidates[np.argsort(-scores[candidates], kind="stable")]
    if p.topk >= 0:
        order = order[:p.topk]
    corner = p.in_format == "corner"
    coords = boxes[:, p.coord_start:p.coord_start + 4]
    areas = {int(i): _area(coords[i], corner) for i in order}
    run = NmsRun(valid, [int(i) for i in order], [])
    alive = [True] * len(order)
    with np.errstate(invalid="ignore", divide="ignore"):
        for r, ref in enumerate(run.order):
            if not alive[r]:
                continue
            run.kept.append(ref)
            for q in range(r + 1, len(order)):
                pos = run.order[q]
                if not alive[q]:
                    continue
                if (not p.force_suppress and p.id_index >= 0
                        and int(boxes[ref, p.id_index]) != int(boxes[pos, p.id_index])):
                    continue
                inter = _overlap(coords[ref], coords[pos], corner)
                iou = inter / (areas[ref] + areas[pos] - inter)
                run.iou[(ref, pos)] = float(iou)
                if iou > np.float32(p.overlap_thresh):
                    alive[q] = False
                    run.suppressed_by[pos] = ref
    return run


def nms_output(boxes: np.ndarray, run: NmsRun, p: NmsParams) -> np.ndarray:
    """box_nms's output for one item: the kept boxes in order, then rows of -1."""
    out = np.full(boxes.shape, -1, np.float32)
    out[:len(run.kept)] = boxes[run.kept]
    if p.in_format != p.out_format:
        c = slice(p.coord_start, p.coord_start + 4)
        rows = out[:len(run.kept), c].copy()
        if p.out_format == "center":
            out[:len(run.kept), c] = np.stack([(rows[:, 0] + rows[:, 2]) / 2,
                                               (rows[:, 1] + rows[:, 3]) / 2,
                                               rows[:, 2] - rows[:, 0], rows[:, 3] - rows[:, 1]], 1)
        else:
            out[:len(run.kept), c] = np.stack([rows[:, 0] - rows[:, 2] / 2,
                                               rows[:, 1] - rows[:, 3] / 2,
                                               rows[:, 0] + rows[:, 2] / 2,
                                               rows[:, 1] + rows[:, 3] / 2], 1)
    return out


@dataclass(frozen=True)
class Flip:
    """A decision NMS took differently in the two runs, with its margin in the reference."""

    kind: str  # "order", "suppression" or "validity"
    boxes: tuple[int, ...]
    margin: float  # reference: score gap, |IoU - threshold| or |score - valid_thresh|
    exact: bool  # a tie in the reference (margin 0)


def flips(ref_boxes: np.ndarray, out_boxes: np.ndarray, p: NmsParams) -> list[Flip]:
    """Every primary decision of greedy NMS that differs between the two inputs of one item:
    if there is none, both runs pick the same boxes (by induction over the greedy steps)."""
    a, b = greedy_nms(ref_boxes, p), greedy_nms(out_boxes, p)
    score = ref_boxes[:, p.score_index].astype(np.float32)
    found = [Flip("validity", (int(i),), abs(float(score[i]) - p.valid_thresh),
                  float(score[i]) == p.valid_thresh)
             for i in np.flatnonzero(a.valid != b.valid)]
    rank_b = {box: r for r, box in enumerate(b.order)}
    common = [box for box in a.order if box in rank_b]
    ranks = np.array([rank_b[box] for box in common])
    for i in range(len(common)):
        for j in np.flatnonzero(ranks[i + 1:] < ranks[i]) + i + 1:
            gap = abs(float(score[common[i]]) - float(score[common[j]]))
            found.append(Flip("order", (common[i], common[int(j)]), gap, gap == 0.0))
    for pair in set(a.iou) & set(b.iou):
        if (a.suppressed_by.get(pair[1]) == pair[0]) != (b.suppressed_by.get(pair[1]) == pair[0]):
            gap = abs(a.iou[pair] - p.overlap_thresh)
            found.append(Flip("suppression", pair, gap, gap == 0.0))
    return found


def box_nms(data: np.ndarray, attrs: Mapping[str, str]) -> np.ndarray:
    """MXNet's own box_nms (imperative, unfused) with a node's attributes."""
    return mx.nd.contrib.box_nms(mx.nd.array(data), **attrs).asnumpy()


# --- The explanation ---------------------------------------------------------------------------


@dataclass
class Explanation:
    ok: bool
    message: str
    flips: list[Flip] = field(default_factory=list)
    pre_nms_err: list[float] = field(default_factory=list)

    def summary(self) -> str:
        kinds = {}
        for f in self.flips:
            kinds.setdefault(f.kind, []).append(f)
        detail = "; ".join(
            f"{len(fs)} {kind} flip(s), {sum(f.exact for f in fs)} exact tie(s), max margin "
            f"{max(f.margin for f in fs):.2e}" for kind, fs in sorted(kinds.items()))
        errs = ", ".join(f"{e:.1e}" for e in self.pre_nms_err)
        return (f"nms {'explained' if self.ok else 'NOT explained'}: {self.message}; "
                f"pre-NMS rel err [{errs}]" + (f"; {detail}" if detail else ""))


def _nms_nodes(sym: mx.sym.Symbol, ops: Sequence[str]) -> list[dict]:
    return [n for n in json.loads(sym.tojson())["nodes"] if n["op"] in ops]


def with_nms_tensors(sym: mx.sym.Symbol, ops: Sequence[str]) -> tuple[mx.sym.Symbol, int]:
    """The symbol with each NMS node's input and output appended to its outputs, nodes in
    topological order; returns it and the number of original outputs."""
    graph = json.loads(sym.tojson())
    heads = graph["heads"]
    extra = []
    for index, node in enumerate(graph["nodes"]):
        if node["op"] in ops:
            extra += [list(node["inputs"][0]), [index, 0, 0]]
    graph["heads"] = heads + extra
    return mx.sym.load_json(json.dumps(graph)), len(heads)


def explain(ops: Sequence[str], exported: zoo.Exported, data: Mapping[str, np.ndarray],
            partitioned: mx.sym.Symbol, params: Mapping[str, mx.nd.NDArray],
            ref_outputs: Sequence[np.ndarray], outputs: Sequence[np.ndarray]) -> Explanation:
    """Why do a backend's detections (``outputs``, computed by ``partitioned`` with
    ``params``) differ from unfused MXNet's (``ref_outputs``, from ``exported``)?"""
    ref_sym, n = with_nms_tensors(exported.sym, ops)
    with zoo.flag("0"), unfused():
        ref = zoo.bind_forward(ref_sym, exported.copy().params, data)
    if len(_nms_nodes(partitioned, ops)) == len(_nms_nodes(exported.sym, ops)):
        out_sym, m = with_nms_tensors(partitioned, ops)
    else:  # converted NMS nodes: their tensors become outputs of the subgraphs
        copy = exported.copy()
        out_sym, m = ref_sym.optimize_for("TensorRT", copy.args, copy.aux, ctx=mx.cpu()), n
        params = copy.params
    with zoo.flag("0"):
        out = zoo.bind_forward(out_sym, params, data)
    if n != m or len(ref) != len(out):
        return Explanation(False, "the backend's graph has other NMS nodes than MXNet's")
    replay = max(rel_err(o, r) for o, r in zip(out[:n], outputs))
    if replay >= TOLERANCE:
        return Explanation(False, f"binding the backend's graph again gives other outputs "
                                  f"(rel err {replay:.1e})")
    nodes = _nms_nodes(exported.sym, ops)
    explanation = Explanation(True, "")
    for k, node in enumerate(nodes):
        attrs = node.get("attrs", {})
        pre_ref, post_ref, pre_out, post_out = ref[n + 2 * k], ref[n + 2 * k + 1], \
            out[n + 2 * k], out[n + 2 * k + 1]
        err = rel_err(pre_out, pre_ref)
        explanation.pre_nms_err.append(err)
        if err >= TOLERANCE:
            index = n + 2 * k
            ok, verdict = zoo.arbitrate(
                [pre_out], [pre_ref],
                lambda: [zoo.reference_float64(exported, data, ref_sym)[index]],
                lambda: [zoo.bind_forward(ref_sym, exported.copy().params, data)[index]])
            explanation.message = verdict
            if not ok:
                explanation.ok = False
                explanation.message = f"{node['name']} reads a tensor {err:.1e} away from " \
                                      f"MXNet's ({verdict})"
                return explanation
        for pre, post, who in ((pre_ref, post_ref, "MXNet"), (pre_out, post_out, "backend")):
            if not np.array_equal(box_nms(pre, attrs), post):
                explanation.ok = False
                explanation.message = f"{node['name']}: the {who} run's NMS output is not " \
                                      f"MXNet's box_nms of its input"
                return explanation
        if rel_err(post_out, post_ref) < TOLERANCE:
            continue
        return _explain_node(explanation, node, attrs, pre_ref, pre_out)
    explanation.ok = False
    explanation.message = "every NMS node agrees, yet the outputs differ"
    return explanation


def _explain_node(explanation: Explanation, node: dict, attrs: Mapping[str, str],
                  pre_ref: np.ndarray, pre_out: np.ndarray) -> Explanation:
    p = NmsParams.from_attrs(attrs)
    width = pre_ref.shape[-1]
    items = zip(pre_ref.reshape(-1, pre_ref.shape[-2], width),
                pre_out.reshape(-1, pre_out.shape[-2], width))
    for ref_item, out_item in items:
        for item in (ref_item, out_item):
            mine = nms_output(item, greedy_nms(item, p), p)
            theirs = box_nms(item[None], attrs)[0]
            if not np.array_equal(mine, theirs):
                explanation.ok = False
                explanation.message = f"{node['name']}: the replay of MXNet's NMS disagrees " \
                                      f"with box_nms; cannot explain"
                return explanation
        explanation.flips += flips(ref_item, out_item, p)
    if not explanation.flips:
        explanation.ok = False
        explanation.message = f"{node['name']}: picks differ without any decision flip"
        return explanation
    explanation.message = f"first differing NMS: {node['name']}, score error " \
        f"{np.abs(pre_out - pre_ref)[..., p.score_index].max():.1e}" + \
        (f", {explanation.message}" if explanation.message else "")
    return explanation
