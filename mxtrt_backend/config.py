"""Every option of the backend in one table: name, type, default, environment variable, check.

Options arrive as strings (``optimize_for(**kwargs)``, ``backend_opts``, environment variables) and
are parsed here once. Precedence: an explicit option, then its environment variable, then the
default. Nothing else in the package reads the environment for options.
"""
from __future__ import annotations

import dataclasses
import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping


class OptionError(ValueError):
    """An option name or value the backend cannot accept; the message names the fix."""


def _default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "mxtrt")


def _parse_int(text: str) -> int:
    return int(text.strip())


def _parse_names(text: str) -> tuple[str, ...]:
    return tuple(sorted({part.strip() for part in text.split(",") if part.strip()}))


def _parse_path(text: str) -> str:
    return str(Path(text.strip()).expanduser())


def _at_least(minimum: int) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if value >= minimum else f"must be >= {minimum}"

    return check


@dataclass(frozen=True)
class OptionSpec:
    name: str
    parse: Callable[[str], Any]
    default: Callable[[], Any]
    env: str
    help: str
    check: Callable[[Any], str | None] = lambda value: None
    # Whether a change of this option must give a different engine (it is part of the cache key).
    affects_engine: bool = False


OPTIONS: tuple[OptionSpec, ...] = (
    OptionSpec("min_subgraph_size", _parse_int, lambda: 2, "MXNET_TENSORRT_MIN_SUBGRAPH_SIZE",
               "smallest number of operator nodes worth a _TensorRT subgraph", _at_least(1)),
    OptionSpec("exclude_ops", _parse_names, tuple, "MXNET_TENSORRT_EXCLUDE_OPS",
               "comma-separated MXNet op names that stay in MXNet"),
    OptionSpec("cache_dir", _parse_path, _default_cache_dir, "MXTRT_CACHE_DIR",
               "folder of the on-disk engine cache"),
    OptionSpec("ort_threads", _parse_int, lambda: 0, "MXNET_TENSORRT_ORT_THREADS",
               "ONNX Runtime intra-op threads on CPU contexts (0: ONNX Runtime decides)",
               _at_least(0), affects_engine=True),
)

_BY_NAME = {spec.name: spec for spec in OPTIONS}

# Keys MXNet itself adds to a backend's options; they are not ours to validate.
_MXNET_KEYS = frozenset({"dedup_subgraph"})


@dataclass(frozen=True)
class Options:
    min_subgraph_size: int = 2
    exclude_ops: tuple[str, ...] = ()
    cache_dir: str = field(default_factory=_default_cache_dir)
    ort_threads: int = 0

    def engine_key(self) -> dict[str, Any]:
        """The options that change what an engine computes or how it is built."""
        return {spec.name: getattr(self, spec.name) for spec in OPTIONS if spec.affects_engine}


def unknown_option_message(name: str) -> str:
    close = difflib.get_close_matches(name, list(_BY_NAME), n=1)
    hint = f"did you mean '{close[0]}'?" if close else f"valid options: {', '.join(sorted(_BY_NAME))}"
    return f"option '{name}' is unknown; {hint}"


def _parse_one(spec: OptionSpec, raw: str, source: str) -> Any:
    try:
        value = spec.parse(raw)
    except ValueError as err:
        raise OptionError(f"option '{spec.name}' = {raw!r} ({source}) is invalid: {err}") from None
    problem = spec.check(value)
    if problem:
        raise OptionError(f"option '{spec.name}' = {raw!r} ({source}) is invalid: {problem}")
    return value


def resolve(raw: Mapping[str, str], environ: Mapping[str, str] | None = None) -> Options:
    """Validate string options, fill the rest from the environment or defaults."""
    environ = os.environ if environ is None else environ
    for name in raw:
        if name not in _BY_NAME and name not in _MXNET_KEYS:
            raise OptionError(unknown_option_message(name))
    values: dict[str, Any] = {}
    for spec in OPTIONS:
        if spec.name in raw:
            values[spec.name] = _parse_one(spec, str(raw[spec.name]), "given")
        elif spec.env in environ:
            values[spec.name] = _parse_one(spec, environ[spec.env], f"from ${spec.env}")
        else:
            values[spec.name] = spec.default()
    return Options(**values)


def explicit(raw: Mapping[str, str]) -> dict[str, str]:
    """The options the user set, as strings, for carrying on a _TensorRT node's attributes."""
    return {name: str(value) for name, value in raw.items() if name in _BY_NAME}


def table() -> list[dict[str, str]]:
    """The option table as rows, for the README and `python -m mxtrt_backend options`."""
    defaults = Options()
    return [
        {"option": spec.name, "env": spec.env, "default": repr(getattr(defaults, spec.name)),
         "help": spec.help}
        for spec in OPTIONS
    ]


assert [f.name for f in dataclasses.fields(Options)] == [s.name for s in OPTIONS], \
    "Options fields and the OPTIONS table must list the same names in the same order"
