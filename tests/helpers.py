"""Reusable test pieces: a LeNet trained on scikit-learn's digits, saved as a checkpoint.

Built on the bundled demo (``mxtrt_backend.demo``) so the tests and the demo train the same
model the same way.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import mxnet as mx

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
