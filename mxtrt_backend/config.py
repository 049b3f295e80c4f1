"""Every option of the backend in one table: name, type, default, environment variable, check.

Options arrive as strings (``optimize_for(**kwargs)``, ``backend_opts``, environment variables) and
are parsed here once. Precedence: an explicit option, then its environment variable, then the
default. Nothing else in the package reads the environment for options.
"""
from __future__ import annotations

import ast
import dataclasses
import difflib
import functools
import hashlib
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping


class OptionError(ValueError):
    """An option name or value the backend cannot accept; the message names the fix."""


class CalibrationMissing(OptionError):
    """An int8 precision without any of the three sources of int8 scales."""


def _default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "mxtrt")


def _parse_int(text: str) -> int:
    return int(text.strip())


_TRUE, _FALSE = frozenset({"1", "true", "yes", "on"}), frozenset({"0", "false", "no", "off"})


def _parse_bool(text: str) -> bool:
    word = text.strip().lower()
    if word not in _TRUE | _FALSE:
        raise ValueError("expected 1 or 0 (true/false, yes/no, on/off)")
    return word in _TRUE


def _parse_names(text: str) -> tuple[str, ...]:
    """"a,b" or, as MXNet passes a Python list given as a keyword, "['a', 'b']"."""
    text = text.strip()
    if text[:1] in "[(":
        try:
            parts = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            raise ValueError("expected comma-separated names or a list of strings") from None
        if not isinstance(parts, (list, tuple)) or not all(isinstance(p, str) for p in parts):
            raise ValueError("expected comma-separated names or a list of strings")
    else:
        parts = text.split(",")
    return tuple(sorted({part.strip() for part in parts if part.strip()}))


@functools.lru_cache(maxsize=1)
def _mxnet_op_names() -> frozenset[str]:
    import mxnet as mx

    return frozenset(mx.operator.get_all_registered_operators())


def _check_op_names(value: tuple[str, ...]) -> str | None:
    known = _mxnet_op_names()
    for name in value:
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f"did you mean '{close[0]}'?" if close else (
                "op names are as in the symbol's JSON, e.g. Convolution, Pooling, relu")
            return f"'{name}' is not an MXNet operator; {hint}"
    return None


def _parse_path(text: str) -> str:
    return str(Path(text.strip()).expanduser())


def _parse_folder(text: str) -> str:
    if not text.strip():
        raise ValueError("an empty folder name would put engines in the working directory; name a "
                         "folder, or unset the variable for the default")
    return _parse_path(text)


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity, which containers and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _check_threads(value: int) -> str | None:
    if 0 <= value <= usable_cpus():
        return None
    return (f"must be between 0 and {usable_cpus()}, the CPUs this process may use (0 lets ONNX "
            "Runtime choose); more threads than CPUs only slow ONNX Runtime down")


_SIZE = re.compile(r"(\d+(?:\.\d*)?)\s*([kmgt]?)(?:i?b)?", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def _parse_size(text: str) -> int:
    """Bytes from "5368709120", "500M", "5G", "5GiB" or "1.5GB" (powers of 1024)."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise ValueError('expected a size in bytes, e.g. "5G", "500M" or "0" (no limit)')
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])


def _parse_seconds(text: str) -> float:
    return float(text.strip())


def _at_least(minimum: int) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if value >= minimum else f"must be >= {minimum}"

    return check


def _between(low: int, high: int) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if low <= value <= high else f"must be between {low} and {high}"

    return check


# MXNet 1.9's precision: "fp32", "fp16", "int8" joined by "_" in any order. fp16 overrides fp32
# ("fp32_fp16" is "fp16"), int8 adds int8 kernels to the other one ("int8" is "fp32_int8").
PRECISION_WORDS = ("fp32", "fp16", "int8")
# Parsed to one spelling per meaning (also the engine-key form).
PRECISIONS = ("fp32", "fp16", "int8", "fp16_int8")


def _parse_precision(text: str) -> str:
    words = set(text.strip().lower().replace("_", " ").split())
    for word in sorted(words - set(PRECISION_WORDS)):
        close = difflib.get_close_matches(word, PRECISION_WORDS, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise ValueError(f"'{word}' is not a precision; {hint}give fp32, fp16 or int8, or MXNet "
                         "1.9's combinations joined by '_': fp16_int8, fp32_int8, fp32_fp16")
    base = "fp16" if "fp16" in words else "fp32"
    return (f"{base}_int8" if base == "fp16" else "int8") if "int8" in words else base


def uses_int8(precision: str) -> bool:
    return precision.endswith("int8")


def without_int8(precision: str) -> str:
    """The precision int8 falls back to (and that online calibration runs at): fp16 or fp32."""
    return "fp16" if precision.startswith("fp16") else "fp32"


# The words of an on/off switch (MXNET_USE_TENSORRT, MXNET_TENSORRT_USE_FP16).
SWITCH_ON = frozenset({"1", "true", "yes", "on"})
SWITCH_OFF = frozenset({"0", "false", "no", "off"})


def _parse_switch(text: str) -> bool:
    word = text.strip().lower()
    if word in SWITCH_ON or word in SWITCH_OFF:
        return word in SWITCH_ON
    raise ValueError("must be 1 or 0")


def _parse_batch_range(text: str) -> tuple[int, int, int] | None:
    if not text.strip():
        return None
    parts = [int(p) for p in text.split(",")]
    if len(parts) != 3:
        raise ValueError('expected "min,opt,max", e.g. "1,8,32"')
    return parts[0], parts[1], parts[2]


def _check_batch_range(value: tuple[int, int, int] | None) -> str | None:
    if value is None or 1 <= value[0] <= value[1] <= value[2]:
        return None
    return "must satisfy 1 <= min <= opt <= max"


def _parse_optional_path(text: str) -> str | None:
    return _parse_path(text) if text.strip() else None


def _check_existing_file(value: str | None) -> str | None:
    if value is None or os.path.isfile(value):
        return None
    return "no such file (give an existing TensorRT calibration cache, or leave it unset)"


def _file_digest(path: str | None) -> str | None:
    """A file's content digest: an engine calibrated from a changed cache file is another engine."""
    if path is None:
        return None
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _parse_token(text: str) -> str | None:
    return text.strip() or None


def _check_calibration_data(value: str | None) -> str | None:
    # Imported here: the engine package imports this module.
    from .engine import calibration

    return None if value is None else calibration.problem(value)


@dataclass(frozen=True)
class OptionSpec:
    """How one option is read: the metadata of its field in ``Options``."""

    name: str
    env: str
    help: str
    parse: Callable[[str], Any]
    check: Callable[[Any], str | None]
    # Whether a change of this option must give a different engine (it is part of the cache key).
    affects_engine: bool
    # The value's form in the cache key, when the value itself does not capture what it means.
    key: Callable[[Any], Any]
    # The default as the documentation shows it.
    shown_default: str


def _option(default: Any = dataclasses.MISSING, *, env: str, help: str,
            parse: Callable[[str], Any], check: Callable[[Any], str | None] = lambda value: None,
            affects_engine: bool = False, key: Callable[[Any], Any] = lambda value: value,
            default_factory: Callable[[], Any] | None = None, shown_default: str | None = None
            ) -> Any:
    """A field of ``Options``, with everything about the option as its metadata."""
    metadata = {"env": env, "help": help, "parse": parse, "check": check,
                "affects_engine": affects_engine, "key": key,
                "shown_default": shown_default if shown_default is not None else f"`{default}`"}
    if default_factory is not None:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class Options:
    """Every option of the backend, declared once: its type, default, environment variable,
    parser, check and role in the engine cache key (the field's metadata)."""

    min_subgraph_size: int = _option(
        2, env="MXNET_TENSORRT_MIN_SUBGRAPH_SIZE", parse=_parse_int, check=_at_least(1),
        help="smallest number of operator nodes worth a `_TensorRT` subgraph")
    exclude_ops: tuple[str, ...] = _option(
        (), env="MXNET_TENSORRT_EXCLUDE_OPS", parse=_parse_names, check=_check_op_names,
        shown_default="none",
        help="comma-separated MXNet op names that stay in MXNet (a Python list works too)")
    param_inputs: tuple[str, ...] = _option(
        (), env="MXNET_TENSORRT_PARAM_INPUTS", parse=_parse_names, shown_default="none",
        help="comma-separated input names baked into engines as constants, besides those feeding "
             "weight/bias/statistics slots and values given to `optimize_for`")
    data_inputs: tuple[str, ...] = _option(
        (), env="MXNET_TENSORRT_DATA_INPUTS", parse=_parse_names, shown_default="none",
        help="comma-separated input names never baked, even when a value was given at "
             "partitioning (the Gluon hook sets the block's data inputs)")
    cache_dir: str = _option(
        env="MXTRT_CACHE_DIR", parse=_parse_folder, default_factory=_default_cache_dir,
        shown_default="`$XDG_CACHE_HOME/mxtrt` or `~/.cache/mxtrt`",
        help="folder of the on-disk engine cache (not empty)")
    cache_max_size: int = _option(
        5 << 30, env="MXTRT_CACHE_MAX_SIZE", parse=_parse_size, shown_default="`5G`",
        help="size limit of the engines in `cache_dir`, e.g. `500M`, `20G` (powers of 1024); the "
             "least recently used engines are deleted beyond it; `0`: no limit")
    cache_lock_timeout: float = _option(
        600.0, env="MXTRT_CACHE_LOCK_TIMEOUT", parse=_parse_seconds, check=_at_least(0),
        shown_default="`600` (seconds)",
        help="how long to wait for another process building the same engine before building it "
             "in this process too (a stopped holder is not waited for)")
    ort_threads: int = _option(
        0, env="MXNET_TENSORRT_ORT_THREADS", parse=_parse_int, check=_check_threads,
        affects_engine=True, shown_default="0 (ONNX Runtime decides)",
        help="ONNX Runtime intra-op threads on CPU contexts, at most the CPUs this process may use")
    ort_spinning: bool = _option(
        False, env="MXNET_TENSORRT_ORT_SPINNING", parse=_parse_bool, affects_engine=True,
        shown_default="`0` (threads sleep)",
        help="let ONNX Runtime's idle intra-op threads spin-wait for work (its own default) instead "
             "of sleeping: spinning threads of one subgraph's engine slow down the next subgraph, "
             "MXNet's own ops and other processes (see docs/benchmarks.md)")
    precision: str = _option(
        "fp32", env="MXNET_TENSORRT_PRECISION", parse=_parse_precision, affects_engine=True,
        help="TensorRT precision on GPU contexts: `fp32`, `fp16`, `int8` (int8 kernels, fp32 "
             "elsewhere) or `fp16_int8`; MXNet 1.9's spellings `fp32_int8` and `fp32_fp16` too. "
             "int8 needs `calibration_iters`, `calibration_data` or `calibration_cache`")
    use_fp16: bool | None = _option(
        None, env="MXNET_TENSORRT_USE_FP16", parse=_parse_switch, shown_default="unset",
        help="MXNet 1.5's switch (`mx.contrib.tensorrt.set_use_fp16`): 1 means precision `fp16`, "
             "0 `fp32`, when `precision` itself is not set. Unset: `fp32`, except for symbols "
             "made by `get_backend_symbol('TensorRT')`, where it defaults to 1 as in MXNet 1.5")
    calibration_iters: int = _option(
        0, env="MXNET_TENSORRT_CALIBRATION_ITERS", parse=_parse_int, check=_at_least(0),
        shown_default="0 (off)",
        help="MXNet 1.9's online int8 calibration: the first N forwards run at the precision "
             "without int8 and their inputs calibrate; the int8 engine serves the later ones")
    max_workspace_size: int = _option(
        1 << 30, env="MXNET_TENSORRT_MAX_WORKSPACE_SIZE", parse=_parse_int, check=_at_least(1),
        affects_engine=True, shown_default="1073741824 (1 GiB)",
        help="TensorRT workspace memory pool limit, in bytes")
    batch_range: tuple[int, int, int] | None = _option(
        None, env="MXNET_TENSORRT_BATCH_RANGE", parse=_parse_batch_range,
        check=_check_batch_range, affects_engine=True, shown_default="unset",
        help='`"min,opt,max"`: one TensorRT optimization profile over the batch dimension (dim 0) '
             "of every data input; unset: the batch the op was created with")
    builder_optimization_level: int = _option(
        3, env="MXNET_TENSORRT_BUILDER_OPTIMIZATION_LEVEL", parse=_parse_int,
        check=_between(0, 5), affects_engine=True,
        help="TensorRT builder effort, 0 (fast build) to 5 (slow build, maybe faster engine)")
    calibration_cache: str | None = _option(
        None, env="MXNET_TENSORRT_CALIBRATION_CACHE", parse=_parse_optional_path,
        check=_check_existing_file, affects_engine=True, key=_file_digest, shown_default="unset",
        help="existing TensorRT int8 calibration cache file (skips calibration; its content, not "
             "its path, is in the engine key)")
    calibration_data: str | None = _option(
        None, env="MXNET_TENSORRT_CALIBRATION_DATA", parse=_parse_token,
        check=_check_calibration_data, affects_engine=True, shown_default="unset",
        help="int8 calibration batches: the token returned by "
             "`mxtrt_backend.calibration_data(data_iter_or_batches)` in this process")

    def engine_key(self) -> dict[str, Any]:
        """The options that change what an engine computes or how it is built."""
        return {spec.name: spec.key(getattr(self, spec.name)) for spec in OPTIONS
                if spec.affects_engine}


OPTIONS: tuple[OptionSpec, ...] = tuple(
    OptionSpec(name=f.name, **{k: v for k, v in f.metadata.items()})
    for f in dataclasses.fields(Options))

_BY_NAME = {spec.name: spec for spec in OPTIONS}

# Keys MXNet itself adds to a backend's options; they are not ours to validate.
_MXNET_KEYS = frozenset({"dedup_subgraph"})


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


def resolve(raw: Mapping[str, str], environ: Mapping[str, str] | None = None,
            defaults: Mapping[str, str] | None = None) -> Options:
    """Validate string options, fill the rest from the environment, then from ``defaults`` (the
    defaults of the API that made the symbol, e.g. MXNet 1.5's fp16), then the fields' own."""
    environ = os.environ if environ is None else environ
    for name in [*raw, *(defaults or {})]:
        if name not in _BY_NAME and name not in _MXNET_KEYS:
            raise OptionError(unknown_option_message(name))
    values: dict[str, Any] = {}
    for spec in OPTIONS:
        if spec.name in raw:
            values[spec.name] = _parse_one(spec, str(raw[spec.name]), "given")
        elif spec.env in environ:
            values[spec.name] = _parse_one(spec, environ[spec.env], f"from ${spec.env}")
        elif defaults and spec.name in defaults:
            values[spec.name] = _parse_one(spec, defaults[spec.name], "this symbol's default")
    # MXNet 1.5's switch decides the precision only when precision itself was not set.
    if "precision" not in values and values.get("use_fp16") is not None:
        values["precision"] = "fp16" if values["use_fp16"] else "fp32"
    options = Options(**values)
    _check_calibration(options)
    return options


def environment_value(name: str, environ: Mapping[str, str] | None = None) -> Any:
    """One option's value from its environment variable, parsed and checked; None when unset."""
    environ = os.environ if environ is None else environ
    spec = _BY_NAME[name]
    return _parse_one(spec, environ[spec.env], f"from ${spec.env}") if spec.env in environ else None


@contextmanager
def variable(name: str, value: str | None) -> Iterator[None]:
    """Environment variable ``name`` set to ``value`` (None: unset) inside the block, as it was
    after it (MXNet reads some variables at bind, not from arguments)."""
    previous = os.environ.get(name)
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


def _check_calibration(options: Options) -> None:
    """int8 needs scales from somewhere, and online calibration is an alternative to the rest."""
    offline = [name for name in ("calibration_data", "calibration_cache") if getattr(options, name)]
    if uses_int8(options.precision) and not (options.calibration_iters or offline):
        raise CalibrationMissing(
            f"option 'precision' = '{options.precision}' needs calibration: set calibration_iters"
            " (MXNet 1.9's: the first N forwards calibrate), calibration_data "
            "(mxtrt_backend.calibration_data(...)) or calibration_cache")
    if options.calibration_iters and offline:
        raise OptionError(f"options calibration_iters and {' and '.join(offline)} are "
                          "alternatives (online calibration, or scales from given data/a cache); "
                          "set one of them")


def explicit(raw: Mapping[str, str]) -> dict[str, str]:
    """The options the user set, as strings, for carrying on a _TensorRT node's attributes."""
    return {name: str(value) for name, value in raw.items() if name in _BY_NAME}


def options_table() -> str:
    """The Markdown table of every option (docs/options.md holds it; a test keeps it current)."""
    rows = ["| option | environment variable | default | engine key | meaning |",
            "|---|---|---|---|---|"]
    for spec in OPTIONS:
        rows.append(f"| `{spec.name}` | `{spec.env}` | {spec.shown_default} | "
                    f"{'yes' if spec.affects_engine else 'no'} | {spec.help} |")
    return "\n".join(rows)
