"""The registry itself: op -> predicate, and the checks every op gets (exclusion, dtype)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

Attrs = Mapping[str, str]
Predicate = Callable[[Attrs], "str | None"]


@dataclass(frozen=True)
class TensorInfo:
    """What MXNet's type inference knows about a tensor at partition time (often nothing)."""

    shape: tuple[int, ...] | None = None
    dtype: str | None = None


InputsCheck = Callable[[Attrs, Sequence[TensorInfo]], "str | None"]


class ShapeNeeded(str):
    """A refusal that only stands because an input's shape is unknown at partition time (the
    report then says which shapes to give)."""


@dataclass(frozen=True)
class OpSupport:
    op: str
    check: Predicate
    param_slots: tuple[int, ...] = ()
    # For the few ops whose exportability depends on their inputs' ranks or dtypes.
    check_inputs: InputsCheck | None = None
    # Why the op is refused on float16 tensors; None: float16 is fine.
    float16_problem: str | None = None
    # How the op computes something else in training mode (the engines run inference), or None.
    in_training: Predicate | None = None
    # Its export computes MXNet's integer arithmetic exactly, on int32/int64 tensors TensorRT
    # keeps as such (shape computations, indices).
    integers: bool = False
    family: str = ""


REGISTRY: dict[str, OpSupport] = {}

# TensorRT computes in these; double tensors inside an engine are not worth the restrictions
# they bring (TensorRT casts them down).
SUPPORTED_DTYPES = ("float32", "float16")
# TensorRT 10 keeps these for shape computations, indices and the layers that take them (the
# ops registered with integers=True).
INTEGER_DTYPES = ("int32", "int64")


Register = Callable[..., Callable[[Predicate], Predicate]]


def registrar(family: str) -> Register:
    """The ``register`` of one op family (a module of this package; the docs group ops by it)."""

    def register(*ops: str, param_slots: tuple[int, ...] = (),
                 check_inputs: InputsCheck | None = None, float16_problem: str | None = None,
                 in_training: Predicate | None = None, integers: bool = False
                 ) -> Callable[[Predicate], Predicate]:
        """Register one predicate for one or more ops (ops that share their rules)."""

        def add(check: Predicate) -> Predicate:
            for op in ops:
                REGISTRY[op] = OpSupport(op, check, param_slots, check_inputs, float16_problem,
                                         in_training, integers, family)
            return check

        return add

    return register


def always(_: Attrs) -> str | None:
    return None


def _dtype_problem(outputs: Sequence[TensorInfo], integers: bool) -> str | None:
    allowed = SUPPORTED_DTYPES + (INTEGER_DTYPES if integers else ())
    bad = [t.dtype for t in outputs if t.dtype is not None and t.dtype not in allowed]
    return (f"output dtype {bad[0]} is not supported (supported: {', '.join(allowed)})"
            if bad else None)


def refusal(op: str, attrs: Attrs, exclude_ops: tuple[str, ...] = (),
            inputs: Sequence[TensorInfo] = (), outputs: Sequence[TensorInfo] = ()) -> str | None:
    """Why a node with this op and attributes stays in MXNet, or None when it is supported.
    ``inputs`` and ``outputs`` are what type inference knows about the node's inputs and its
    used outputs (ops such as Pooling have hidden outputs of other dtypes); may be empty."""
    if op in exclude_ops:
        return "excluded by option exclude_ops"
    entry = REGISTRY.get(op)
    if entry is None:
        return "no converter for this op"
    problem = entry.check(attrs) or _dtype_problem(outputs, entry.integers)
    if problem is None and entry.float16_problem is not None and any(
            t.dtype == "float16" for t in (*inputs, *outputs)):
        problem = f"float16: {entry.float16_problem}"
    if problem is None and entry.check_inputs is not None:
        problem = entry.check_inputs(attrs, inputs)
    return problem


def ops_table() -> str:
    """The registered ops by family, as the Markdown table of docs/coverage.md."""
    families: dict[str, list[OpSupport]] = {}
    for entry in REGISTRY.values():
        families.setdefault(entry.family, []).append(entry)
    rows = [f"| {family} ({len(entries)}) | "
            + ", ".join(f"`{e.op}`" + ("\\*" if e.integers else "") for e in entries) + " |"
            for family, entries in families.items()]
    return "\n".join(["| Family | MXNet ops (\\*: also on int32/int64 tensors) |", "|---|---|",
                      *rows])


def training_difference(op: str, attrs: Attrs) -> str | None:
    """How a supported node computes something else in training mode, or None."""
    entry = REGISTRY.get(op)
    return entry.in_training(attrs) if entry and entry.in_training else None


def param_slots(op: str) -> tuple[int, ...]:
    entry = REGISTRY.get(op)
    return entry.param_slots if entry else ()
