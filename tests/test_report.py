"""The partition report: mxtrt_backend.inspect, its text tables and summary, and the command."""
from __future__ import annotations

import subprocess
import sys

import mxnet as mx
import pytest

import mxtrt_backend
from mxtrt_backend import report
from mxtrt_backend.partition import PartitionReport, Refusal, SubgraphInfo
from helpers import random_params

SHAPE = (1, 3, 8, 8)


class Square(mx.operator.CustomOp):
    def forward(self, is_train, req, in_data, out_data, aux):
        self.assign(out_data[0], req[0], in_data[0] * in_data[0])


@mx.operator.register("mxtrt_test_square")
class SquareProp(mx.operator.CustomOpProp):
    def list_arguments(self):
        return ["data"]

    def infer_shape(self, in_shape):
        return in_shape, [in_shape[0]], []

    def create_operator(self, ctx, shapes, dtypes):
        return Square()


def conv_relu(x, name):
    x = mx.sym.Convolution(x, num_filter=4, kernel=(3, 3), pad=(1, 1), name=f"{name}_conv")
    return mx.sym.Activation(x, act_type="relu", name=f"{name}_relu")


def net_with_custom_op():
    x = conv_relu(mx.sym.var("data"), "a")
    x = mx.sym.Custom(x, op_type="mxtrt_test_square", name="square")
    return mx.sym.split(conv_relu(x, "b"), num_outputs=2, axis=1, name="halves")


def test_inspect_reports_subgraphs_and_the_refused_custom_op():
    sym = net_with_custom_op()
    args, aux = random_params(sym, {"data": SHAPE})
    r = mxtrt_backend.inspect(sym, args, aux, shapes={"data": SHAPE})  # Custom needs shapes
    assert [(x.node, x.op, x.reason) for x in r.refused] == [("square", "Custom", "no converter for this op")]
    first, second = sorted(r.subgraphs, key=lambda s: s.nodes)
    assert first.nodes == ("a_conv", "a_relu") and second.nodes == ("b_conv", "b_relu", "halves")
    assert set(first.inputs) == {"data", "a_conv_weight", "a_conv_bias"}
    assert set(first.params) == {"a_conv_weight", "a_conv_bias"}
    assert first.outputs == ("a_relu",) and second.outputs == ("halves", "halves[1]")
    assert r.summary() == "5/6 compute nodes in 2 subgraphs; refused: 1 x Custom (no converter for this op)"


def test_inspect_passes_options_and_shapes():
    sym = net_with_custom_op()
    args, aux = random_params(sym, {"data": SHAPE})
    r = mxtrt_backend.inspect(sym, args, aux, shapes={"data": SHAPE}, exclude_ops="SliceChannel",
                              min_subgraph_size="3")
    assert r.summary() == ("0/6 compute nodes in 0 subgraphs; refused: 2 x Activation (2 node(s) < "
                           "min_subgraph_size=3), 2 x Convolution (2 node(s) < min_subgraph_size=3), "
                           "1 x Custom (no converter for this op), 1 x SliceChannel (excluded by "
                           "option exclude_ops)")


def test_summary_counts_reasons_most_frequent_first():
    r = PartitionReport(compute_nodes=5, refused=[
        Refusal("p", "Pooling", "pool_type=sum is not supported"),
        Refusal("c1", "Custom", "no converter for this op"),
        Refusal("c2", "Custom", "no converter for this op")],
        subgraphs=[SubgraphInfo(0, ("x", "y"), ("relu", "tanh"), ("data",), (), True)])
    assert r.summary() == ("2/5 compute nodes in 1 subgraph; refused: 2 x Custom (no converter for "
                           "this op), 1 x Pooling (pool_type=sum is not supported)")
    assert PartitionReport(compute_nodes=0).summary() == "0/0 compute nodes in 0 subgraphs; refused: none"


def test_text_report_has_a_subgraph_table_a_refusal_table_and_the_summary():
    sym = net_with_custom_op()
    args, aux = random_params(sym, {"data": SHAPE})
    text = report.format_report(mxtrt_backend.inspect(sym, args, aux, shapes={"data": SHAPE})).splitlines()
    assert text[0] == "Subgraphs"
    assert text[1].split() == ["id", "status", "nodes", "inputs", "outputs", "ops"]
    rows = [line.split("  ") for line in text[2:4]]
    assert any("data, 2 params" in cell for row in rows for cell in row)
    assert "Left to MXNet" in text
    refused_row = text[text.index("Left to MXNet") + 2].split()
    assert refused_row[:2] == ["square", "Custom"] and " ".join(refused_row[2:]) == "no converter for this op"
    assert text[-1].startswith("5/6 compute nodes in 2 subgraphs")


def test_text_report_lists_what_would_convert_more():
    hint = "1 node(s) (1 x dot) stay in MXNet because their input shapes are unknown"
    text = report.format_report(PartitionReport(compute_nodes=1, hints=[hint])).splitlines()
    assert text[text.index("To convert more") + 1] == f"- {hint}"
    assert "To convert more" not in report.format_report(PartitionReport(compute_nodes=1))


def test_ops_column_sums_up_long_op_lists():
    info = SubgraphInfo(0, tuple("abcdefghi"), ("relu",) * 3 + ("tanh", "exp", "log", "sin", "cos", "abs"),
                        ("data",), (), True)
    assert report._ops(info.ops) == "relu x3, tanh, exp, log, sin, cos, ... (1 more)"


def run_inspect(*argv):
    return subprocess.run([sys.executable, "-m", "mxtrt_backend", "inspect", *argv],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def checkpoint(tmp_path):
    x = conv_relu(mx.sym.var("data"), "a")
    sym = conv_relu(mx.sym.erf(x, name="cut"), "b")
    args, aux = random_params(sym, {"data": SHAPE})
    mx.model.save_checkpoint(str(tmp_path / "model"), 0, sym, args, aux)
    return tmp_path / "model-symbol.json", tmp_path / "model-0000.params"


def test_command_prints_the_report_of_a_checkpoint(checkpoint):
    symbol, params = checkpoint
    done = run_inspect(str(symbol), str(params), "--shape", "1,3,8,8")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "Subgraphs" and "cut" in done.stdout
    assert lines[-1] == "4/5 compute nodes in 2 subgraphs; refused: 1 x erf (no converter for this op)"


def test_command_without_params_and_with_options(checkpoint):
    symbol, _ = checkpoint
    done = run_inspect(str(symbol), "-o", "exclude_ops=Activation", "-o", "min_subgraph_size=1")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == (
        "2/5 compute nodes in 2 subgraphs; refused: 2 x Activation (excluded by option "
        "exclude_ops), 1 x erf (no converter for this op)")


def test_command_reports_a_missing_file_and_a_bad_option(tmp_path, checkpoint):
    done = run_inspect(str(tmp_path / "nothing-symbol.json"))
    assert done.returncode == 2 and done.stderr.startswith("mxtrt inspect: error:")
    done = run_inspect(str(checkpoint[0]), "-o", "min_subgraph_sise=2")
    assert done.returncode == 2 and "did you mean 'min_subgraph_size'" in done.stderr
