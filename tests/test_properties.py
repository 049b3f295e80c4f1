"""Property: for any graph of converted and refused ops, every output of every user path equals
unfused MXNet.

Hypothesis draws DAGs over one tensor shape: fan-out inside and across the cut, nodes with
several outputs (SliceChannel, BatchNorm's hidden ones) split between inside and outside,
several graph outputs (repeats too), subgraphs feeding subgraphs, parameters, one or two data
inputs, and random `exclude_ops` / `min_subgraph_size`. Each graph runs through optimize_for +
bind, optimize_for + simple_bind, the flag with simple_bind(shared_buffer=...), and Gluon
hybridize() under the flag. A failure shrinks to a minimal graph.

CI runs a bounded budget; `pytest -m slow tests/test_properties.py` runs a long one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import mxnet as mx
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from mxnet import gluon

from helpers import environ, forward, random_params, rel_err
from mxtrt_backend import support
from mxtrt_backend.partition import PartitionReport

SHAPE = (2, 4, 3, 3)  # (batch, channels, height, width): every op below keeps it
TOLERANCE = 1e-4


@dataclass(frozen=True)
class Node:
    op: str
    inputs: tuple[int, ...]  # indices into the tensors made so far


# op -> (arity, how to make it). erf and arcsinh have no converter, so they stay in MXNet and
# cut the graph.
Make = Callable[[str, list], object]
OPS: dict[str, tuple[int, Make]] = {
    "relu": (1, lambda n, x: mx.sym.Activation(x[0], act_type="relu", name=n)),
    "tanh": (1, lambda n, x: mx.sym.tanh(x[0], name=n)),
    "sigmoid": (1, lambda n, x: mx.sym.sigmoid(x[0], name=n)),
    "leaky": (1, lambda n, x: mx.sym.LeakyReLU(x[0], slope=0.2, name=n)),
    "scale": (1, lambda n, x: mx.sym.clip(x[0] * 0.7 + 0.1, -2.0, 2.0, name=n)),
    "conv": (1, lambda n, x: mx.sym.Convolution(x[0], num_filter=SHAPE[1], kernel=(3, 3),
                                                pad=(1, 1), name=n)),
    "fc": (1, lambda n, x: mx.sym.FullyConnected(x[0], num_hidden=SHAPE[3], flatten=False,
                                                 name=n)),
    "bn": (1, lambda n, x: mx.sym.BatchNorm(x[0], fix_gamma=False, name=n)),
    "pool": (1, lambda n, x: mx.sym.Pooling(x[0], kernel=(3, 3), pad=(1, 1), stride=(1, 1),
                                            pool_type="max", name=n)),
    "split_swap": (1, lambda n, x: mx.sym.Concat(
        *reversed(list(mx.sym.SliceChannel(x[0], num_outputs=2, axis=1, name=n))), dim=1,
        name=f"{n}_cat")),
    "split_half": (1, lambda n, x: _split_half(n, x[0])),
    "add": (2, lambda n, x: mx.sym.elemwise_add(x[0], x[1], name=n)),
    "mul": (2, lambda n, x: mx.sym.broadcast_mul(x[0], x[1], name=n)),
    "max": (2, lambda n, x: mx.sym.broadcast_maximum(x[0], x[1], name=n)),
    "erf": (1, lambda n, x: mx.sym.erf(x[0], name=n)),
    "arcsinh": (1, lambda n, x: mx.sym.arcsinh(x[0], name=n)),
}


def _split_half(name: str, x: mx.sym.Symbol) -> mx.sym.Symbol:
    """A two-output node whose outputs go to different sides of the cut: one half through a
    converted op, the other through erf, which stays in MXNet."""
    halves = mx.sym.SliceChannel(x, num_outputs=2, axis=1, name=name)
    return mx.sym.Concat(mx.sym.relu(halves[0], name=f"{name}_in"),
                         mx.sym.erf(halves[1], name=f"{name}_out"), dim=1, name=f"{name}_cat")


@dataclass(frozen=True)
class Recipe:
    data_inputs: int
    nodes: tuple[Node, ...]
    outputs: tuple[int, ...]  # tensor indices, repeats allowed
    exclude: tuple[str, ...]
    min_subgraph_size: int

    def symbol(self) -> mx.sym.Symbol:
        tensors = [mx.sym.var(f"data{i}") for i in range(self.data_inputs)]
        for i, node in enumerate(self.nodes):
            tensors.append(OPS[node.op][1](f"n{i}_{node.op}", [tensors[j] for j in node.inputs]))
        return mx.sym.Group([tensors[i] for i in self.outputs])

    def options(self) -> dict[str, str]:
        # The ops the options name are MXNet's: exclude what the recipe's ops are made of.
        mxnet_ops = {"relu": "Activation", "conv": "Convolution", "fc": "FullyConnected",
                     "bn": "BatchNorm", "pool": "Pooling", "add": "elemwise_add",
                     "mul": "broadcast_mul", "leaky": "LeakyReLU", "split_swap": "SliceChannel"}
        excluded = sorted({mxnet_ops[op] for op in self.exclude if op in mxnet_ops})
        options = {"min_subgraph_size": str(self.min_subgraph_size)}
        if excluded:
            options["exclude_ops"] = ",".join(excluded)
        return options


@st.composite
def recipes(draw: st.DrawFn, max_nodes: int = 8) -> Recipe:
    data_inputs = draw(st.integers(1, 2))
    count = draw(st.integers(1, max_nodes))
    nodes = []
    for i in range(count):
        op = draw(st.sampled_from(sorted(OPS)))
        arity = OPS[op][0]
        available = data_inputs + i
        nodes.append(Node(op, tuple(draw(st.integers(0, available - 1)) for _ in range(arity))))
    total = data_inputs + count
    # The last node is always an output; others join at random, repeats included.
    outputs = (total - 1,) + tuple(draw(st.lists(st.integers(data_inputs, total - 1), max_size=3)))
    exclude = tuple(draw(st.lists(st.sampled_from(sorted(OPS)), max_size=2, unique=True)))
    return Recipe(data_inputs, tuple(nodes), outputs, exclude, draw(st.integers(1, 3)))


def random_values(sym: mx.sym.Symbol, shapes: dict[str, tuple[int, ...]], seed: int):
    args, aux = random_params(sym, shapes, seed)
    rng = np.random.RandomState(seed + 1000)
    return args, aux, {n: rng.uniform(-1.5, 1.5, s).astype("f") for n, s in shapes.items()}


def _outputs(result) -> list[np.ndarray]:
    return [o.asnumpy() for o in (result if isinstance(result, (list, tuple)) else [result])]


def check_every_path(recipe: Recipe, seed: int = 0) -> PartitionReport:
    """Every path, then every path again after new weights are written into it."""
    sym = recipe.symbol()
    inputs = [f"data{i}" for i in range(recipe.data_inputs)]
    shapes = {name: SHAPE for name in inputs if name in sym.list_arguments()}
    args, aux, data = random_values(sym, shapes, seed)
    new_args, new_aux, _ = random_values(sym, shapes, seed + 1)
    refs = forward(sym, args, aux, data)
    new_refs = forward(sym, new_args, new_aux, data)
    feed = {k: mx.nd.array(v) for k, v in data.items()}

    def same(outputs: list[np.ndarray], expected: list[np.ndarray], path: str) -> None:
        assert len(outputs) == len(expected), path
        for i, (out, ref) in enumerate(zip(outputs, expected)):
            assert out.shape == ref.shape, (path, i)
            assert rel_err(out, ref) < TOLERANCE, (path, i, rel_err(out, ref))

    def executor_path(ex, path: str) -> None:
        same(_outputs(ex.forward(is_train=False, **feed)), refs, path)
        ex.copy_params_from(new_args, new_aux)
        same(_outputs(ex.forward(is_train=False, **feed)), new_refs, f"{path}, new weights")

    options = recipe.options()
    trt = sym.optimize_for("TensorRT", args, aux, ctx=mx.cpu(), **options)
    same(forward(trt, args, aux, data), refs, "optimize_for + bind")
    executor_path(trt.simple_bind(mx.cpu(), grad_req="null", **shapes), "optimize_for + simple_bind")

    option_variables = {f"MXNET_TENSORRT_{name.upper()}": v for name, v in options.items()}
    with environ(MXNET_USE_TENSORRT="1", **option_variables):
        # MXNet binds arguments to shared_buffer's very arrays: give it copies, since new
        # weights are written into the executor afterwards.
        shared = {k: v.copy() for k, v in dict(args, **aux).items()}
        executor_path(sym.simple_bind(mx.cpu(), grad_req="null", shared_buffer=shared,
                                      **shapes), "flag simple_bind(shared_buffer)")
        block = gluon.SymbolBlock(sym, [mx.sym.var(n) for n in shapes])
        params = block.collect_params()
        params.load_dict(dict(args, **aux), ignore_extra=True)
        block.hybridize()
        path = "Gluon hybridize() under the flag"
        same(_outputs(block(*(feed[n] for n in shapes))), refs, path)
        for name, value in dict(new_args, **new_aux).items():
            params[name].set_data(value)
        same(_outputs(block(*(feed[n] for n in shapes))), new_refs, f"{path}, new weights")
    if recipe.min_subgraph_size == 1 and not recipe.exclude:
        unsupported = [r for r in trt.report.refused if r.op in support.REGISTRY]
        assert not unsupported, f"supported ops stayed in MXNet: {unsupported}"
    return trt.report


def describe(report: PartitionReport) -> None:
    """What kind of graph this was, for --hypothesis-show-statistics."""
    accepted = sum(s.accepted for s in report.subgraphs)
    event(f"subgraphs: {min(accepted, 3)}{'+' if accepted >= 3 else ''}")
    event(f"nodes left to MXNet: {'some' if report.refused else 'none'}")


# No database: CI starts from nothing, and a failure prints its minimal graph.
PROPERTY = settings(deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@settings(PROPERTY, max_examples=25)
@given(recipes())
def test_every_path_matches_unfused_mxnet(recipe):
    describe(check_every_path(recipe))


@pytest.mark.slow
@settings(PROPERTY, max_examples=400)
@given(recipes(max_nodes=14), st.integers(0, 2**16))
def test_every_path_matches_unfused_mxnet_long(recipe, seed):
    describe(check_every_path(recipe, seed))


@pytest.mark.parametrize("recipe", [
    # A subgraph output read by two refused nodes and listed as a graph output too.
    Recipe(1, (Node("conv", (0,)), Node("relu", (1,)), Node("erf", (2,)), Node("erf", (2,))),
           (3, 4, 2, 2), (), 1),
    # A two-output node cut between the inside and MXNet, then joined again.
    Recipe(1, (Node("bn", (0,)), Node("split_half", (1,)), Node("tanh", (2,))), (3,), (), 1),
    # Subgraph -> MXNet -> subgraph, with fan-out of the data input across the cut.
    Recipe(2, (Node("conv", (0,)), Node("arcsinh", (2,)), Node("add", (3, 0)),
               Node("mul", (4, 1))), (5, 2), (), 2),
], ids=["repeated_outputs", "multi_output_cut", "subgraph_chain"])
def test_known_shapes_of_trouble(recipe):
    check_every_path(recipe)
