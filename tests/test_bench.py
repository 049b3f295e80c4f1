"""`bench` and `demo` on a CPU context: the same code path a GPU context takes (--ctx chooses
the context and with it the runtime). No timing is asserted, only that each is measured."""
from __future__ import annotations

import os
import subprocess
import sys

import mxnet as mx
import numpy as np
import pytest

from mxtrt_backend import bench, cli

from helpers import random_params


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """conv-relu-pool-fc with a label: the label's shape is inferred, never given."""
    x = mx.sym.Convolution(mx.sym.var("data"), num_filter=4, kernel=(3, 3), pad=(1, 1), name="c")
    x = mx.sym.Pooling(mx.sym.Activation(x, act_type="relu"), kernel=(2, 2), stride=(2, 2),
                       pool_type="max", name="p")
    sym = mx.sym.SoftmaxOutput(mx.sym.FullyConnected(x, num_hidden=3, name="fc"), name="softmax")
    args, aux = random_params(sym, {"data": (2, 3, 8, 8), "softmax_label": (2,)})
    prefix = str(tmp_path_factory.mktemp("bench") / "net")
    mx.model.save_checkpoint(prefix, 0, sym, args, aux)
    return prefix


def test_one_row_per_precision_and_batch_with_both_sides_measured(checkpoint):
    rows = bench.bench(checkpoint, 0, {"data": (2, 3, 8, 8)}, (1, 3), {}, repeat=3,
                       precisions=("fp32", "fp16"))
    assert [(r.precision, r.batch) for r in rows] == [("fp32", 1), ("fp32", 3), ("fp16", 1),
                                                      ("fp16", 3)]
    for row in rows:
        assert row.max_abs_diff < 1e-5  # ONNX Runtime computes fp32 whatever the precision
        for timing in (row.mxnet, row.backend):
            assert 0 < timing.median_ms <= timing.p90_ms
        assert row.mxnet_per_s > 0 and row.backend_per_s > 0
    lines = bench.format_rows(rows).splitlines()
    assert lines[0].split()[:2] == ["precision", "batch"] and len(lines) == 5
    assert [line.split()[:2] for line in lines[1:]] == [["fp32", "1"], ["fp32", "3"],
                                                        ["fp16", "1"], ["fp16", "3"]]


def test_measurements_take_turns_after_the_warmup():
    calls: list[str] = []

    def timed(name: str, value: float):
        def call() -> float:
            calls.append(name)
            return value + len(calls)
        return call

    firsts, seconds = bench.side_by_side(timed("a", 0), timed("b", 100), repeat=3, warmup=2)
    assert calls == ["a", "b"] * 5
    assert firsts == [5, 7, 9] and seconds == [106, 108, 110]


def test_int8_without_calibration_options_calibrates_on_the_benchmark_input():
    x = np.ones((2, 3), np.float32)
    chosen = bench._precision_options("int8", {"ort_threads": "1"}, {"data": x})
    assert chosen["precision"] == "int8" and chosen["ort_threads"] == "1"
    assert chosen["calibration_data"].startswith("mxtrt-calibration:")
    assert bench._precision_options("int8", {"calibration_cache": "/c"}, {"data": x}) == \
        {"precision": "int8", "calibration_cache": "/c"}
    assert bench._precision_options("fp16", {}, {"data": x}) == {"precision": "fp16"}


def test_the_command_prints_the_table(checkpoint, capsys):
    assert cli.main(["bench", checkpoint, "0", "--shape", "2,3,8,8", "--batch", "1,2",
                     "--repeat", "2", "--ctx", "cpu"]) == 0
    out, err = capsys.readouterr()
    assert [line.split()[:2] for line in out.splitlines()[1:]] == [["fp32", "1"], ["fp32", "2"]]
    assert "mxtrt bench: --ctx cpu: ONNX Runtime on the CPU" in err


@pytest.mark.parametrize("argv, words", [
    (["--shape", "x:2,3,8,8"], "the model has no input 'x'; its inputs are data, softmax_label"),
    (["--shape", "2,3,8,8", "-o", "precission=fp16"], "did you mean 'precision'?"),
])
def test_command_errors_are_one_line(checkpoint, capsys, argv, words):
    assert cli.main(["bench", checkpoint, "0", "--ctx", "cpu", *argv]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1 and errors[0].startswith("mxtrt bench: error: ") and words in errors[0]


def test_demo_on_the_cpu_context():
    run = subprocess.run([sys.executable, "-m", "mxtrt_backend", "demo", "--epochs", "1",
                          "--ctx", "cpu"], capture_output=True, text=True, timeout=600,
                         env=dict(os.environ))
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].split() == ["run", "accuracy", "ms/batch"]
    accuracies = [float(line.split()[-2]) for line in lines[1:3]]
    assert accuracies[0] == accuracies[1] > 0.2  # one epoch: well above chance (0.1)
    assert lines[-1].startswith("speed-up: ") and lines[-1].endswith("x (batch 64, cpu)")
    assert "runtime onnxruntime" in run.stderr  # the backend's engine ran on ONNX Runtime
