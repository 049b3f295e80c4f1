"""Which MXNet operators the backend takes: one registry entry per op.

An entry is a predicate on the node's attributes that returns ``None`` when the node is supported
and otherwise a reason string. An op absent from the registry is refused as unknown. The registry
is the only place that knows about individual operators; the partitioner just consults it.

An entry also names the input slots that hold parameters (weights, biases, statistics), so that
when values are not known at partition time the op can still tell parameters from data.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

Attrs = Mapping[str, str]
Predicate = Callable[[Attrs], "str | None"]


@dataclass(frozen=True)
class OpSupport:
    op: str
    check: Predicate
    param_slots: tuple[int, ...] = ()


REGISTRY: dict[str, OpSupport] = {}


def register(op: str, param_slots: tuple[int, ...] = ()) -> Callable[[Predicate], Predicate]:
    def add(check: Predicate) -> Predicate:
        REGISTRY[op] = OpSupport(op, check, param_slots)
        return check

    return add


def always(_: Attrs) -> str | None:
    return None


def _one_of(attrs: Attrs, key: str, allowed: tuple[str, ...], default: str) -> str | None:
    value = attrs.get(key, default)
    return None if value in allowed else f"{key}={value} is not supported (supported: {', '.join(allowed)})"


def _first_problem(*problems: str | None) -> str | None:
    return next((p for p in problems if p), None)


def _spatial_layout(attrs: Attrs) -> str | None:
    # ONNX convolutions and pools are channel-first only.
    return _one_of(attrs, "layout", ("None", "NCW", "NCHW", "NCDHW"), "None")


@register("Convolution", param_slots=(1, 2))
def _convolution(attrs: Attrs) -> str | None:
    return _spatial_layout(attrs)


@register("BatchNorm", param_slots=(1, 2, 3, 4))
def _batch_norm(attrs: Attrs) -> str | None:
    return _first_problem(
        _one_of(attrs, "axis", ("1",), "1"),
        _one_of(attrs, "output_mean_var", ("False", "0"), "False"),
    )


@register("Activation")
def _activation(attrs: Attrs) -> str | None:
    return _one_of(attrs, "act_type", ("relu", "sigmoid", "tanh", "softrelu", "softsign"), "relu")


@register("Pooling")
def _pooling(attrs: Attrs) -> str | None:
    pool_type = attrs.get("pool_type", "max")
    global_pool = attrs.get("global_pool", "False") in ("True", "1")
    return _first_problem(
        _spatial_layout(attrs),
        _one_of(attrs, "pool_type", ("max", "avg", "lp"), "max"),
        _one_of(attrs, "pooling_convention", ("valid", "full"), "valid"),
        None if pool_type != "lp" or global_pool or attrs.get("pooling_convention", "valid") == "valid"
        else "lp pooling needs pooling_convention=valid",
    )


@register("FullyConnected", param_slots=(1, 2))
def _fully_connected(attrs: Attrs) -> str | None:
    return None


register("Flatten")(always)
register("elemwise_add")(always)
register("Concat")(always)
# Dropout is the identity at inference, which is the only mode the backend runs.
register("Dropout")(always)
register("clip")(always)


def refusal(op: str, attrs: Attrs, exclude_ops: tuple[str, ...] = ()) -> str | None:
    """Why a node with this op and attributes stays in MXNet, or None when it is supported."""
    if op in exclude_ops:
        return "excluded by option exclude_ops"
    entry = REGISTRY.get(op)
    if entry is None:
        return "no converter for this op"
    return entry.check(attrs)


def param_slots(op: str) -> tuple[int, ...]:
    entry = REGISTRY.get(op)
    return entry.param_slots if entry else ()
