"""The five callbacks MXNet reaches through the extension library, and their installation.

Each converts the C arguments (``extension.Strings``/``Tensors``) to Python values and calls the
policy: ``partition.select``/``review`` while MXNet partitions, ``op.create_state``/``run_state``
/``destroy_state`` over a `_TensorRT` op's life. None ever raises into MXNet's C++ frames: a
failure becomes an error reply, which MXNet raises as an ``MXNetError`` in the caller's thread.
Even a KeyboardInterrupt (Ctrl-C while MXNet partitions) is caught, or ctypes would print and
drop it: the optimize_for hook raises it again once MXNet has returned.
"""
from __future__ import annotations

import threading
from typing import Any

from . import config, op, partition
from .extension import DEVICE_NAMES, Extension, Tensors, pin_thread_state

_ext: Extension | None = None

# MXNet drops a partitioner's error message (op errors keep theirs), so the exception is kept here
# for the thread that partitions; the optimize_for hook raises it instead of MXNet's error.
_pending = threading.local()


def take_partition_error() -> BaseException | None:
    """The error the last failed partitioner callback of this thread raised, once."""
    err, _pending.error = getattr(_pending, "error", None), None
    return err


def _partition_failed(reply: int, err: BaseException) -> int:
    assert _ext is not None
    _pending.error = err
    _ext.reply_error(reply, err)
    return 0


def _supported(graph_json: bytes, options: Any, num_nodes: int, json_to_id: Any, ids: Any,
               reply: int) -> int:
    try:
        flags = partition.select(graph_json.decode(), config.resolve(options.contents.to_dict()))
        for json_index, selected in enumerate(flags):
            if selected:  # MXNet's ids: -1 marks a node a subgraph may take, -2 leaves it out
                ids[json_to_id[json_index]] = -1
        return 1
    except BaseException as err:  # noqa: BLE001 - reported to MXNet, which raises MXNetError
        return _partition_failed(reply, err)


def _review(subgraph_json: bytes, subgraph_id: int, options: Any, params: Any, reply: int) -> int:
    assert _ext is not None
    try:
        raw = options.contents.to_dict()
        accept, attrs = partition.review(subgraph_json.decode(), subgraph_id, config.resolve(raw),
                                         config.explicit(raw), params.contents.name_list())
        _ext.reply_accept(reply, accept)
        _ext.reply_attrs(reply, attrs)
        return 1
    except BaseException as err:  # noqa: BLE001
        return _partition_failed(reply, err)


def _create(attrs: Any, dev_type: int, dev_id: int, inputs: Any, reply: int) -> int:
    assert _ext is not None
    try:
        tensors: Tensors = inputs.contents
        return op.create_state(attrs.contents.to_dict(), DEVICE_NAMES[dev_type], dev_id,
                               tensors.shape_list(), tensors.dtype_list())
    except BaseException as err:  # noqa: BLE001
        _ext.reply_error(reply, err)
        return -1


def _forward(handle: int, inputs: Any, outputs: Any, dev_type: int, dev_id: int, stream: int,
             reply: int) -> int:
    assert _ext is not None
    pin_thread_state()
    try:
        op.run_state(op.state(handle), inputs.contents.refs(), outputs.contents.refs(),
                     stream or 0)
        return 1
    except BaseException as err:  # noqa: BLE001
        _ext.reply_error(reply, err)
        return 0


def _destroy(handle: int) -> None:
    pin_thread_state()
    op.destroy_state(handle)


def install(path: str) -> Extension:
    """Load the library into MXNet with these callbacks; once per process."""
    global _ext
    if _ext is None:
        _ext = Extension(path, _supported, _review, _create, _forward, _destroy)
    return _ext

