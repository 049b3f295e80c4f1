"""Reusable test pieces: a LeNet trained on scikit-learn's digits, saved as a checkpoint.

Built on the bundled demo (``mxtrt_backend.demo``) so the tests and the demo train the same
model the same way.
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import mxnet as mx
import numpy as np

from mxtrt_backend import demo

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
def op_state(partitioned: mx.sym.Symbol, shapes: dict[str, tuple[int, ...]]) -> Iterator[Any]:
    """The state of the first `_TensorRT` node of ``partitioned``, made as MXNet makes it at bind
    (node attributes plus its subgraph), for inputs of these shapes (float32)."""
    from mxtrt_backend import op

    node = trt_nodes(partitioned)[0]
    attrs = dict(node["attrs"], **{op.SUBGRAPH_ATTR: json.dumps(node["subgraphs"][0])})
    subgraph = node["subgraphs"][0]
    sources = [n.get("attrs", {}).get("argName", n["name"]) for n in subgraph["nodes"]
               if n["op"] == "null"]
    in_shapes = [shapes[name] for name in sources]
    handle = op.create_state(attrs, "cpu", 0, in_shapes, [np.dtype("float32")] * len(sources))
    try:
        yield op.state(handle)
    finally:
        op.destroy_state(handle)
