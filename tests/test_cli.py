"""The command line's shared parts: argument values, --ctx, the one error handler, the table of
commands and the generated documentation of their arguments."""
from __future__ import annotations

import argparse
import importlib

import mxnet as mx
import pytest

from mxtrt_backend import cli
from mxtrt_backend.engine import gpu

NO_GPU = cli.gpu_problem(cli.Device("gpu", 0)) is not None


@pytest.mark.parametrize("text, shape", [("1,3,224,224", (1, 3, 224, 224)), ("7", (7,))])
def test_shapes(text, shape):
    assert cli.parse_shape(text) == shape
    assert cli.parse_input(text) == ("data", shape)
    assert cli.parse_input(f"mask:{text}") == ("mask", shape)
    assert cli.parse_input(f"a:b:{text}") == ("a:b", shape)  # the last colon separates


@pytest.mark.parametrize("text, words", [("1,x", "not a comma-separated list of ints"),
                                         ("", "not a comma-separated list"),
                                         ("1,0,3", "dimension below 1"), ("-1", "below 1")])
def test_bad_shapes_say_what_is_expected(text, words):
    with pytest.raises(argparse.ArgumentTypeError, match=words):
        cli.parse_shape(text)


@pytest.mark.parametrize("text, device", [("cpu", cli.CPU), ("CPU", cli.CPU),
                                          ("gpu", cli.Device("gpu", 0)),
                                          ("gpu:3", cli.Device("gpu", 3))])
def test_contexts(text, device):
    assert cli.parse_ctx(text) == device
    assert str(device) in ("cpu", "gpu:0", "gpu:3")


@pytest.mark.parametrize("text", ["tpu", "gpu:", "gpu:-1", "cpu:0", "gpu:0,1"])
def test_bad_contexts_name_the_forms(text):
    with pytest.raises(argparse.ArgumentTypeError, match="give cpu, or gpu:N"):
        cli.parse_ctx(text)


def test_device_contexts_are_mxnet_contexts():
    assert cli.CPU.context() == mx.cpu()
    assert cli.Device("gpu", 2).context() == mx.gpu(2)


def test_counts_and_options():
    assert cli.positive_ints("1,8,32") == (1, 8, 32)
    for bad in ("0", "1,0", "x", "-2"):
        with pytest.raises(argparse.ArgumentTypeError):
            cli.positive_ints(bad)
    assert cli.parse_option("exclude_ops=Pooling,Flatten") == ("exclude_ops", "Pooling,Flatten")
    assert cli.parse_option("cache_dir=") == ("cache_dir", "")
    for bad in ("precision", "=fp16"):
        with pytest.raises(argparse.ArgumentTypeError, match="NAME=VALUE"):
            cli.parse_option(bad)


def test_default_context_is_printed_with_its_reason(capsys):
    args = argparse.Namespace(command="bench", ctx=None)
    chosen = cli.device(args)
    support = gpu.gpu_support(gpu.probe(), gpu.mxnet_has_cuda())
    assert (chosen == cli.Device("gpu", 0)) == (support.runtime == "tensorrt")
    line = capsys.readouterr().err.strip()
    assert line.startswith(f"mxtrt bench: --ctx {chosen} (the default: ")
    if chosen == cli.CPU:
        import onnxruntime

        assert line.endswith(f"ONNX Runtime on the CPU (onnxruntime {onnxruntime.__version__})")


@pytest.mark.skipif(not NO_GPU, reason="needs a machine where GPU contexts cannot run")
def test_a_gpu_context_that_cannot_run_here_is_an_error_naming_the_way_out():
    with pytest.raises(cli.CliError, match=r"--ctx gpu:1 cannot be used here: .+; use --ctx cpu"):
        cli.device(argparse.Namespace(command="convert", ctx=cli.Device("gpu", 1)))


def test_error_lines_and_exit_codes():
    mxnet_error = mx.MXNetError("Traceback (most recent call last):\n  File \"x.cc\", line 9\n"
                                "MXNetError: Check failed: shape mismatch")
    assert cli.error_line(mxnet_error) == ("Check failed: shape mismatch", 2)
    assert cli.error_line(cli.CliError("no checkpoint 'x'")) == ("no checkpoint 'x'", 2)
    assert cli.error_line(FileNotFoundError(2, "No such file", "x")) == \
        ("[Errno 2] No such file: 'x'", 2)
    line, code = cli.error_line(KeyError("boom"))
    assert code == 1 and line.startswith("KeyError: 'boom' (unexpected: run again with "
                                         "mxtrt --traceback")


def test_an_error_is_one_line_and_traceback_shows_the_whole_story(tmp_path, capsys):
    argv = ["convert", str(tmp_path / "nothing"), "0", "--out", str(tmp_path / "o"),
            "--shape", "1,3", "--ctx", "cpu"]
    assert cli.main(argv) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert errors == [f"mxtrt convert: error: no checkpoint '{tmp_path / 'nothing'}': "
                      f"{tmp_path / 'nothing'}-symbol.json does not exist (give the prefix: "
                      "models/net for models/net-symbol.json)"]
    with pytest.raises(cli.CliError, match="no checkpoint"):
        cli.main(["--traceback", *argv])


def test_argument_errors_are_one_line_too(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["bench", "x", "0", "--shape", "1,3", "--repeat", "0"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == ("mxtrt bench: error: argument --repeat: must be at least 1, "
                                       "not 0 (see mxtrt bench --help)\n")


def test_every_subcommand_is_a_module_with_arguments_and_run(capsys):
    names = [c.name for c in cli.SUBCOMMANDS]
    assert {"demo", "convert", "inspect", "bench", "doctor"} <= set(names)
    for command in cli.SUBCOMMANDS:
        module = importlib.import_module(f"mxtrt_backend.{command.module}")
        assert callable(module.arguments) and callable(module.run), command.name
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    listed = capsys.readouterr().out
    assert all(name in listed for name in names)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["no-such-command"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'no-such-command'" in capsys.readouterr().err


def test_the_commands_that_run_models_take_ctx():
    assert {"convert", "bench", "demo"} <= set(cli.commands_with("--ctx"))
    assert "inspect" not in cli.commands_with("--ctx")  # it partitions only, builds nothing


def test_the_python_m_entry_point_is_the_cli():
    from mxtrt_backend import __main__

    assert __main__.main is cli.main
