"""The command line (`mxtrt`, `python -m mxtrt_backend`): the subcommand table, the arguments
several subcommands share (declared once, here), and the one place an error becomes a message.

Each subcommand is a module of this package with ``arguments(parser)``, which declares its
arguments (using the shared declarations below), and ``run(args) -> exit code``. Anything wrong
with what the user asked for is raised, never printed by the subcommand: ``main`` prints one
line on stderr and exits non-zero (2 for the user's mistakes, 1 for ours, 130 for Ctrl-C);
``mxtrt --traceback COMMAND ...`` shows the whole trace instead.
"""
from __future__ import annotations

import argparse
import importlib
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, NoReturn, Sequence

from . import config

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Subcommand:
    name: str
    module: str
    help: str


SUBCOMMANDS = (
    Subcommand("demo", "demo", "the bundled example, plain MXNet vs the backend: LeNet on "
                               "scikit-learn's digits, too small to gain (accuracy, output "
                               "difference, time per batch), then a model-zoo network where the "
                               "engines pay off (bench's comparison)"),
    Subcommand("convert", "convert", "partition a checkpoint and build its engines into a folder "
                                     "that mxtrt_backend.load() runs without rebuilding"),
    Subcommand("inspect", "report", "what the partitioner converts in a checkpoint and why it "
                                    "leaves the rest (subgraphs, refused nodes, a summary line)"),
    Subcommand("bench", "bench", "plain MXNet vs the backend on the same input and device: "
                                 "latency (median, p90), throughput, speed-up and output "
                                 "difference per batch size and precision"),
    Subcommand("cache", "cache_command", "the on-disk engine cache: list its engines, clear it, or "
                                         "prune the least recently used ones beyond a size"),
    Subcommand("doctor", "doctor", "print MXNet, CUDA, GPU, TensorRT and ONNX Runtime versions, "
                                   "check that a tiny network builds and runs through each runtime, "
                                   "and say which runtime each command uses"),
    Subcommand("serve", "serve", "serve a checkpoint or a converted folder through Triton Inference "
                                 "Server (HTTP, gRPC, dynamic batching) with the backend inside"),
    Subcommand("export-triton", "triton_repo", "write a Triton model repository: ONNX (CPU) or a "
                                               "TensorRT plan (GPU), else a Python-backend model"),
)


class CliError(Exception):
    """What the user asked for cannot be done; the message says why and what to do instead."""


# --- Values (argparse `type=`): each error names the form expected.

def parse_shape(text: str) -> Shape:
    try:
        dims = tuple(int(d) for d in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"shape {text!r} is not a comma-separated list of ints, "
                                         "e.g. 1,3,224,224") from None
    if any(d < 1 for d in dims):
        raise argparse.ArgumentTypeError(f"shape {text!r} has a dimension below 1")
    return dims


def parse_input(text: str) -> tuple[str, Shape]:
    """``[NAME:]D0,D1,...``; the name defaults to 'data'."""
    name, _, shape = text.rpartition(":") if ":" in text else ("data", "", text)
    return name, parse_shape(shape)


def parse_option(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"option {text!r} must look like NAME=VALUE, e.g. "
                                         "precision=fp16")
    return name, value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def positive_ints(text: str) -> tuple[int, ...]:
    """A comma-separated list of positive integers, e.g. 1,8,32."""
    return tuple(positive_int(part) for part in text.split(","))


@dataclass(frozen=True)
class Device:
    """An MXNet context as the command line names it: ``cpu`` or ``gpu:N``."""

    kind: str
    id: int = 0

    def __str__(self) -> str:
        return self.kind if self.kind == "cpu" else f"{self.kind}:{self.id}"

    def context(self) -> Any:
        import mxnet as mx

        return mx.cpu() if self.kind == "cpu" else mx.gpu(self.id)


CPU = Device("cpu")


def parse_ctx(text: str) -> Device:
    match = re.fullmatch(r"cpu|gpu(?::(\d+))?", text.strip().lower())
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a context: give cpu, or gpu:N "
                                         "(e.g. gpu:0)")
    return CPU if match.group(0) == "cpu" else Device("gpu", int(match.group(1) or 0))


# --- Shared argument declarations.

def checkpoint_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prefix", help="checkpoint prefix: PREFIX-symbol.json and "
                                       "PREFIX-EPOCH.params (EPOCH as 4 digits)")
    parser.add_argument("epoch", type=int, help="checkpoint epoch, e.g. 0 for PREFIX-0000.params")


def shape_argument(parser: argparse.ArgumentParser, *, required: bool) -> None:
    parser.add_argument("--shape", action="append", type=parse_input, required=required,
                        default=None if required else [], metavar="[NAME:]D0,D1,...",
                        help="shape of a model input, e.g. 1,3,224,224 (input 'data') or "
                             "mask:1,5; repeatable; inputs MXNet can infer (labels) may be left out")


def option_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--option", action="append", type=parse_option, default=[],
                        metavar="NAME=VALUE",
                        help="backend option (see docs/options.md), e.g. -o precision=fp16; "
                             "repeatable")


def ctx_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ctx", type=parse_ctx, default=None, metavar="cpu|gpu:N",
                        help="where to run: cpu (ONNX Runtime) or gpu:N (TensorRT); default: "
                             "gpu:0 when a GPU and TensorRT are usable, else cpu (printed)")


# --- What the shared arguments mean.

def options(args: argparse.Namespace) -> dict[str, str]:
    """The ``-o`` options, checked now: a misspelt name fails before any work."""
    given = dict(args.option)
    config.resolve(given)
    return given


def gpu_problem(device: Device) -> str | None:
    """Why subgraphs cannot run on this GPU here, or None."""
    from .engine import gpu

    support = gpu.gpu_support(gpu.probe(), gpu.mxnet_has_cuda())
    if support.runtime is None:
        return support.detail
    count = gpu.probe().gpus
    if device.id >= count:
        return f"this machine has {count} GPU(s), gpu:0 to gpu:{count - 1}"
    return None


def describe(device: Device) -> str:
    """Which runtime runs `_TensorRT` subgraphs on ``device`` here, in words; CliError when
    that device cannot be used here."""
    from .engine import cuda, gpu, runtime_for

    if device.kind == "cpu":
        runtime = runtime_for("cpu")
        return f"{runtime.title} ({runtime.name} {runtime.version()})"
    problem = gpu_problem(device)
    if problem is not None:
        raise CliError(f"--ctx {device} cannot be used here: {problem}; use --ctx cpu")
    support = gpu.gpu_support(gpu.probe(), mxnet_cuda=True)
    return f"{support.detail} on {cuda.device_key(device.id)}"


def default_device() -> tuple[Device, str]:
    """gpu:0 when TensorRT can serve it, else cpu; and why, in words."""
    from .engine import gpu
    from .engine.trt import TrtRuntime

    support = gpu.gpu_support(gpu.probe(), gpu.mxnet_has_cuda())
    if support.runtime == TrtRuntime.name:
        return Device("gpu", 0), "a GPU and TensorRT are usable"
    if support.runtime is None:
        return CPU, f"GPU contexts cannot run here: {support.detail}"
    return CPU, f"GPU contexts would run ONNX Runtime through the host: {gpu.INSTALL_HINT}"


def device(args: argparse.Namespace) -> Device:
    """The ``--ctx`` device, checked, or the default one; says on stderr which and why."""
    if args.ctx is not None:
        chosen, why = args.ctx, ""
    else:
        chosen, reason = default_device()
        why = f" (the default: {reason})"
    print(f"mxtrt {args.command}: --ctx {chosen}{why}: {describe(chosen)}", file=sys.stderr,
          flush=True)
    return chosen


@dataclass
class Checkpoint:
    prefix: str
    epoch: int
    symbol: Any
    args: dict[str, Any]
    aux: dict[str, Any]

    @property
    def inputs(self) -> list[str]:
        """The model's inputs other than parameters: data, labels."""
        return [name for name in self.symbol.list_arguments() if name not in self.args]


def one_line(err: BaseException) -> str:
    """The line of an error that says what is wrong: an MXNet error starts with its C++ trace
    and ends with the message."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    last = lines[-1] if lines else type(err).__name__
    return last.removeprefix("MXNetError: ")


def _epochs(prefix: Path) -> list[int]:
    pattern = re.compile(re.escape(prefix.name) + r"-(\d{4,})\.params")
    return sorted(int(m.group(1)) for p in prefix.parent.glob(f"{prefix.name}-*.params")
                  if (m := pattern.fullmatch(p.name)))


def load_checkpoint(prefix: str, epoch: int) -> Checkpoint:
    import mxnet as mx

    base = Path(prefix)
    symbol_file = Path(f"{prefix}-symbol.json")
    params_file = Path(f"{prefix}-{epoch:04d}.params")
    if not symbol_file.is_file():
        raise CliError(f"no checkpoint {prefix!r}: {symbol_file} does not exist (give the prefix: "
                       "models/net for models/net-symbol.json)")
    if not params_file.is_file():
        saved = _epochs(base)
        raise CliError(f"checkpoint {prefix!r} has no epoch {epoch} ({params_file} does not exist); "
                       + (f"epochs saved: {', '.join(map(str, saved))}" if saved
                          else "no PREFIX-EPOCH.params file is beside it"))
    try:
        symbol, args, aux = mx.model.load_checkpoint(prefix, epoch)
    except mx.MXNetError as err:
        raise CliError(f"checkpoint {prefix!r} epoch {epoch} cannot be read, is it damaged? "
                       f"MXNet: {one_line(err)}") from None
    return Checkpoint(prefix, epoch, symbol, args, aux)


def input_shapes(checkpoint: Checkpoint, shapes: Mapping[str, Shape]) -> dict[str, Shape]:
    """Every input's shape: those given, and those MXNet infers from them (labels)."""
    import mxnet as mx

    names = checkpoint.inputs
    for name in shapes:
        if name not in names:
            raise CliError(f"--shape {name}:...: the model has no input {name!r}; its inputs are "
                           f"{', '.join(names)} (give NAME:D0,D1,... for one not called 'data')")
    try:
        inferred, _, _ = checkpoint.symbol.infer_shape_partial(
            **shapes, **{name: value.shape for name, value in checkpoint.args.items()})
    except mx.MXNetError as err:
        raise CliError(f"--shape does not fit the model: {one_line(err)}") from None
    found = dict(zip(checkpoint.symbol.list_arguments(), inferred))
    missing = [name for name in names if not found.get(name) or 0 in found[name]]
    if missing:
        raise CliError(f"give --shape for {', '.join(missing)}: MXNet cannot infer "
                       f"{'its' if len(missing) == 1 else 'their'} shape from the others")
    return {name: tuple(found[name]) for name in names}


# --- The parser, and the one error handler.

class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, not argparse's usage block: the usage is one --help away.
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mxtrt", description="mxtrt: the TensorRT subgraph backend for MXNet "
                                               "(also run as python -m mxtrt_backend)")
    parser.add_argument("--traceback", action="store_true",
                        help="on an error, show the whole Python traceback, not one line")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in SUBCOMMANDS:
        module = importlib.import_module(f".{command.module}", __package__)
        sub = commands.add_parser(command.name, help=command.help, description=command.help)
        module.arguments(sub)
        sub.set_defaults(run=module.run)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    import mxnet as mx

    return (CliError, config.OptionError, argparse.ArgumentTypeError, OSError, mx.MXNetError)


def error_line(err: BaseException) -> tuple[str, int]:
    """One line for an error, and the exit code: 2 for a problem with the input, 1 for a bug."""
    if isinstance(err, _user_errors()):
        return one_line(err), 2
    return (f"{type(err).__name__}: {one_line(err)} (unexpected: run again with "
            "mxtrt --traceback ... and report it)"), 1


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except KeyboardInterrupt:
        print(f"mxtrt {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - the one place errors become a message
        if args.traceback:
            raise
        line, code = error_line(err)
        print(f"mxtrt {args.command}: error: {line}", file=sys.stderr)
        return code


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(commands.choices)


def commands_with(flag: str) -> list[str]:
    """The commands that take this option, e.g. '--ctx'."""
    return [name for name, sub in _subparsers(build_parser()).items()
            if any(flag in action.option_strings for action in sub._actions)]


# --- Documentation: the arguments of every command, from the parser itself.

def _argument(action: argparse.Action) -> str:
    if not action.option_strings:
        return f"`{action.metavar or action.dest}`"
    flags = ", ".join(action.option_strings)
    takes = action.nargs != 0
    return f"`{flags}{' ' + str(action.metavar or action.dest.upper()) if takes else ''}`"


def _default(action: argparse.Action) -> str:
    if action.required:
        return "required"
    if not action.option_strings:
        return "optional" if action.nargs == "?" else "required"
    if action.default in (None, [], (), False):
        return "repeatable" if isinstance(action, argparse._AppendAction) else ""
    return f"`{action.default}`"


def _table(parser: argparse.ArgumentParser) -> list[str]:
    rows = [a for a in parser._actions
            if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))]
    if not rows:
        return ["No arguments.", ""]
    cells = [(_argument(a), _default(a), a.help or "") for a in rows]
    return ["| argument | default | meaning |", "|---|---|---|",
            *("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells), ""]


def arguments_table() -> str:
    """Markdown: the arguments of mxtrt and of each command, from the parser itself
    (docs/cli.md holds it; a test keeps it current)."""
    parser = build_parser()
    lines = ["### `mxtrt`", "", "Before the command: `mxtrt [--traceback] COMMAND ...`.", "",
             *_table(parser)]
    for name, sub in _subparsers(parser).items():
        lines += [f"### `mxtrt {name}`", "", sub.description or "", "", *_table(sub)]
    return "\n".join(lines).rstrip() + "\n"


def commands_table() -> str:
    """Markdown: every command and what it does, linked to its arguments in docs/cli.md (the
    README holds it)."""
    rows = ["| command | what it does |", "|---|---|"]
    for command in SUBCOMMANDS:
        anchor = "mxtrt-" + command.name
        rows.append(f"| [`mxtrt {command.name}`](docs/cli.md#{anchor}) | {command.help} |")
    return "\n".join(rows) + "\n"
