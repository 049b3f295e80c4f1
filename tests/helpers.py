"""Reusable test pieces: reference runs on unfused MXNet, random parameters, the op state of a
partitioned symbol, the ONNX graphs the pipeline hands to a runtime, and a LeNet trained on
scikit-learn's digits (the bundled demo's, so tests and demo train the same model)."""
from __future__ import annotations

import json
import os
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import mxnet as mx
import numpy as np
import onnx
import pytest
from mxnet.gluon.model_zoo import vision

from mxtrt_backend import demo, export
from mxtrt_backend.engine.cache import ENGINES
from mxtrt_backend.engine.ort import OrtRuntime

IterFactory = Callable[..., mx.io.NDArrayIter]


def train_lenet_digits(tmp_dir: str | Path, epochs: int = 8) -> tuple[str, int, IterFactory]:
    """Train LeNet on the digits' training split and save a checkpoint in ``tmp_dir``.

    Training binds with gradients, so it runs on plain MXNet even under MXNET_USE_TENSORRT=1.

    Returns ``(prefix, epoch, test_iter)``: ``mx.model.load_checkpoint(prefix, epoch)`` loads it,
    and ``test_iter(batch_size=64, **NDArrayIter_kwargs)`` iterates the test split (450 images:
    with batch 64 the last batch is partial).
    """
    prefix, epoch = demo.train_lenet_digits(str(tmp_dir), epochs)
    _, _, x_test, y_test = demo.digits()

    def test_iter(batch_size: int = demo.BATCH, **kwargs: object) -> mx.io.NDArrayIter:
        return mx.io.NDArrayIter(x_test, y_test, batch_size, label_name="softmax_label", **kwargs)

    return prefix, epoch, test_iter


def trt_nodes(sym: mx.sym.Symbol) -> list[dict]:
    """The `_TensorRT` nodes of a partitioned symbol, as MXNet serialises them."""
    return [n for n in json.loads(sym.tojson())["nodes"] if n["op"] == "_TensorRT"]


@contextmanager
def op_state(partitioned: mx.sym.Symbol, shapes: dict[str, tuple[int, ...]],
             device_id: int = 0) -> Iterator[Any]:
    """The state of the first `_TensorRT` node of ``partitioned``, made as MXNet makes it at bind
    (node attributes plus its subgraph), for inputs of these shapes (float32), on CPU device
    ``device_id`` (MXNet itself passes 0 for every CPU context)."""
    from mxtrt_backend import op

    node = trt_nodes(partitioned)[0]
    attrs = dict(node["attrs"], **{op.SUBGRAPH_ATTR: json.dumps(node["subgraphs"][0])})
    subgraph = node["subgraphs"][0]
    sources = [n.get("attrs", {}).get("argName", n["name"]) for n in subgraph["nodes"]
               if n["op"] == "null"]
    in_shapes = [shapes[name] for name in sources]
    handle = op.create_state(attrs, "cpu", device_id, in_shapes,
                             [np.dtype("float32")] * len(sources))
    try:
        yield op.state(handle)
    finally:
        op.destroy_state(handle)


def rel_err(out: np.ndarray, ref: np.ndarray) -> float:
    """max|out - ref| / max|ref|: the tolerance measure used throughout the tests."""
    return float(np.abs(out - ref).max() / max(np.abs(ref).max(), 1e-12))


def op_names(sym: mx.sym.Symbol) -> list[str]:
    return [n["op"] for n in json.loads(sym.tojson())["nodes"]]


def random_params(sym: mx.sym.Symbol, data_shapes: dict[str, tuple[int, ...]], seed: int = 0):
    """Random arg/aux values for every non-data input of a symbol; variances kept positive."""
    rng = np.random.RandomState(seed)
    arg_shapes, _, aux_shapes = sym.infer_shape(**data_shapes)
    args = {n: mx.nd.array(rng.uniform(-0.5, 0.5, s))
            for n, s in zip(sym.list_arguments(), arg_shapes) if n not in data_shapes}
    aux = {n: mx.nd.array(rng.uniform(0.5, 1.5, s) if n.endswith("var") else rng.uniform(-0.1, 0.1, s))
           for n, s in zip(sym.list_auxiliary_states(), aux_shapes)}
    return args, aux


_env_lock = threading.Lock()


@contextmanager
def unfused() -> Iterator[None]:
    """Binds without MXNet's default MKLDNN fusion, which gives wrong answers on some nets
    (MXNET_SUBGRAPH_BACKEND is read at bind): the reference the tests compare against."""
    with _env_lock:
        previous = os.environ.get("MXNET_SUBGRAPH_BACKEND")
        os.environ["MXNET_SUBGRAPH_BACKEND"] = "NONE"
        try:
            yield
        finally:
            if previous is None:
                del os.environ["MXNET_SUBGRAPH_BACKEND"]
            else:
                os.environ["MXNET_SUBGRAPH_BACKEND"] = previous


def forward(sym: mx.sym.Symbol, args, aux, data: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Bind (unfused), run once in inference mode, return every output."""
    with unfused():
        ex = sym.bind(mx.cpu(), dict(args, **{k: mx.nd.array(v) for k, v in data.items()}),
                      aux_states=dict(aux), grad_req="null")
    ex.forward(is_train=False)
    return [o.asnumpy() for o in ex.outputs]


DATA = (2, 3, 8, 8)


def conv_net() -> mx.sym.Symbol:
    data = mx.sym.var("data")
    x = mx.sym.Convolution(data, num_filter=4, kernel=(3, 3), pad=(1, 1), name="c1")
    x = mx.sym.BatchNorm(x, fix_gamma=False, name="bn1")
    x = mx.sym.Activation(x, act_type="relu", name="r1")
    y = mx.sym.Convolution(x, num_filter=4, kernel=(1, 1), name="c2")
    x = mx.sym.elemwise_add(x, y, name="res")
    x = mx.sym.Concat(x, mx.sym.Activation(y, act_type="sigmoid", name="s1"), dim=1, name="cat")
    x = mx.sym.Pooling(x, kernel=(2, 2), stride=(2, 2), pool_type="max", name="p1")
    x = mx.sym.Pooling(x, kernel=(1, 1), global_pool=True, pool_type="avg", name="gap")
    x = mx.sym.Flatten(x, name="flat")
    return mx.sym.FullyConnected(x, num_hidden=5, name="fc")


def pipeline_graphs(sym: mx.sym.Symbol, data_shape: tuple[int, ...]) -> list[export.ExportedGraph]:
    """The ONNX graphs the real pipeline hands to a runtime's build, as TensorRT's parser would get
    them: optimize_for, bind and forward on a CPU context; the op exports each subgraph
    (export_structure) and bakes its parameters (bake_params) before calling Runtime.build."""
    args, aux = random_params(sym, {"data": data_shape})
    handed: list[bytes] = []
    original = OrtRuntime.build

    def build(self, onnx_bytes, *rest):  # records what the runtime is given, then builds it
        handed.append(onnx_bytes)
        return original(self, onnx_bytes, *rest)

    ENGINES.clear_memory()  # so every engine is built here
    with tempfile.TemporaryDirectory() as folder, pytest.MonkeyPatch.context() as patch:
        patch.setattr(OrtRuntime, "build", build)
        part = sym.optimize_for("TensorRT", args, aux, ctx=mx.cpu(), cache_dir=folder)
        forward(part, args, aux, {"data": np.zeros(data_shape, np.float32)})
    assert handed, "nothing was converted"
    models = [onnx.load_from_string(b) for b in handed]
    return [export.ExportedGraph(b, tuple(i.name for i in m.graph.input),
                                 tuple(o.name for o in m.graph.output))
            for b, m in zip(handed, models)]


def data_subgraph(data_shape: tuple[int, ...] = DATA) -> export.ExportedGraph:
    """The conv net's exported subgraph that starts at the network's data input."""
    return next(g for g in pipeline_graphs(conv_net(), data_shape) if g.input_names == ("data0",))


def zoo_symbol(name: str) -> tuple[mx.sym.Symbol, tuple[int, ...]]:
    shape = (1, 3, 299, 299) if name == "inceptionv3" else (1, 3, 224, 224)
    net = vision.get_model(name, pretrained=False)
    net.initialize()
    net.hybridize()
    net(mx.nd.zeros(shape))
    return net._cached_graph[1], shape
