"""Reshape with every code MXNet has (0, -1, -2, -3, -4, reverse), built from the input's shape.

ONNX Reshape knows 0 (copy the dimension at the same index) and -1 (infer). MXNet's -2 (copy
all remaining dimensions), -3 (merge two) and -4 (split one in two) move the dimensions, so the
target shape is assembled at run time from slices of ``Shape(input)``; TensorRT takes such
shape computations as shape tensors and folds them when the input shape is fixed.
"""
from __future__ import annotations

from dataclasses import dataclass

from ._emit import END, Emitter


@dataclass(frozen=True)
class _Piece:
    """Part of the target shape: constants, a slice of the input's dims, the product of two
    input dims, or an input dim divided by a constant."""

    kind: str  # "const" | "dims" | "merge" | "div"
    values: tuple[int, ...] = ()
    start: int = 0
    stop: int = END


class ReshapeCodeError(ValueError):
    """A shape MXNet itself would refuse."""


def plan(codes: list[int], reverse: bool) -> list[_Piece]:
    """MXNet's InferReshapeShape as pieces of the target shape, in output order."""
    seq = list(reversed(codes)) if reverse else list(codes)

    def at(src: int) -> int:  # the input dim consumed as the src-th one
        return -(src + 1) if reverse else src

    pieces: list[_Piece] = []
    src, i = 0, 0
    while i < len(seq):
        code = seq[i]
        if code in (0, -3, -4) and src == END:
            raise ReshapeCodeError(f"shape {codes}: {code} after -2 has no input dim left")
        if code == 0:
            pieces.append(_Piece("dims", start=at(src), stop=at(src) + 1 or END))
            src += 1
        elif code == -1 or code > 0:
            pieces.append(_Piece("const", (code,)))
            src += 1
        elif code == -2:  # the rest, in input order
            pieces.append(_Piece("dims", start=0, stop=-src or END) if reverse
                          else _Piece("dims", start=src))
            src = END  # nothing left to consume
        elif code == -3:
            pieces.append(_Piece("merge", start=at(src), stop=at(src + 1)))
            src += 2
        elif code == -4:
            if i + 2 >= len(seq):
                raise ReshapeCodeError(f"shape {codes}: -4 needs two dims after it")
            d1, d2 = seq[i + 1], seq[i + 2]
            if d1 == -1 == d2 or d1 == 0 or d2 == 0 or min(d1, d2) < -1:
                raise ReshapeCodeError(f"shape {codes}: -4 takes two positive dims, one may be -1")
            split = [(_Piece("div", (other,), start=at(src)) if d == -1 else _Piece("const", (d,)))
                     for d, other in ((d1, d2), (d2, d1))]
            pieces += split
            src += 1
            i += 2
        else:
            raise ReshapeCodeError(f"shape {codes}: unknown code {code}")
        i += 1
    if [p.values for p in pieces if p.kind == "const"].count((-1,)) > 1:
        raise ReshapeCodeError(f"shape {codes}: only one dim can be inferred")
    return list(reversed(pieces)) if reverse else pieces


def _emit_piece(e: Emitter, shape: str, piece: _Piece) -> str:
    if piece.kind == "const":
        return e.const(list(piece.values))
    if piece.kind == "dims":
        return e.op("Slice", shape, e.const([piece.start]), e.const([piece.stop]), e.const([0]))
    if piece.kind == "merge":
        return e.op("Mul", e.dim(shape, piece.start), e.dim(shape, piece.stop))
    return e.op("Div", e.dim(shape, piece.start), e.const(list(piece.values)))


def reshape(node: dict, **kwargs: object) -> list:
    e = Emitter(node, kwargs)
    codes, reverse = e.ints("shape"), e.flag("reverse")
    data = e.inputs[0]
    if not reverse and all(c >= -1 for c in codes):
        # Codes consume input dims one by one: ONNX's 0 and -1 mean what MXNet's do.
        e.op("Reshape", data, e.const(codes), out=e.name)
        return e.nodes
    shape = e.op("Shape", data)
    parts = [_emit_piece(e, shape, piece) for piece in plan(codes, reverse)]
    target = parts[0] if len(parts) == 1 else e.op("Concat", *parts, axis=0)
    e.op("Reshape", data, target, out=e.name)
    return e.nodes
