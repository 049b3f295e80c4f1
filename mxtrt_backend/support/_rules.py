"""Small parsers and checks for MXNet's string-valued attributes, shared by the op families."""
from __future__ import annotations

import ast

from ._registry import Attrs

TRUE = ("True", "1", "true")


def flag(attrs: Attrs, key: str, default: bool) -> bool:
    value = attrs.get(key)
    return default if value is None else value in TRUE


def ints(attrs: Attrs, key: str) -> tuple[int | None, ...]:
    """'(1, None, 3)' / '[2,3]' / '4' -> a tuple; an absent or 'None' attribute -> ()."""
    value = attrs.get(key, "None").strip()
    if value in ("None", "", "()", "[]"):
        return ()
    parsed = ast.literal_eval(value)
    return tuple(parsed) if isinstance(parsed, (tuple, list)) else (parsed,)


def one_of(attrs: Attrs, key: str, allowed: tuple[str, ...], default: str) -> str | None:
    value = attrs.get(key, default)
    if value in allowed:
        return None
    return f"{key}={value} is not supported (supported: {', '.join(allowed)})"


def unset(attrs: Attrs, key: str, *empty: str) -> str | None:
    """The exporter ignores or rejects this attribute: only its default is supported."""
    value = attrs.get(key)
    return None if value is None or value in ("None", *empty) else f"{key}={value} is not supported"


def is_false(attrs: Attrs, key: str) -> str | None:
    return f"{key}=True is not supported" if flag(attrs, key, False) else None


def first_problem(*problems: str | None) -> str | None:
    return next((p for p in problems if p), None)
