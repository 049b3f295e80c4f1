"""ONNX Runtime sessions as the backend makes them."""
from __future__ import annotations

import mxnet as mx
import numpy as np
import onnxruntime as ort
import pytest

from helpers import conv_net, forward, random_params, rel_err
from mxtrt_backend.config import resolve
from mxtrt_backend.engine.cache import ENGINES
from mxtrt_backend.engine.ort import session_options

LEVEL = ort.GraphOptimizationLevel.ORT_ENABLE_ALL


@pytest.mark.parametrize("raw, entry", [({}, "0"), ({"ort_spinning": "1"}, "1")])
def test_idle_threads_sleep_unless_spinning_is_asked_for(raw, entry):
    so = session_options(resolve(raw, environ={}), LEVEL)
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == entry


def test_spinning_setting_gives_another_engine_with_the_same_answer():
    sym = conv_net()
    shape = (2, 3, 8, 8)
    args, aux = random_params(sym, {"data": shape})
    x = np.random.RandomState(0).uniform(-1, 1, shape).astype(np.float32)
    ref = forward(sym, args, aux, {"data": x})[0]
    for spinning in ("0", "1"):
        part = sym.optimize_for("TensorRT", args, aux, ctx=mx.cpu(), ort_spinning=spinning,
                                exclude_ops="Pooling")
        assert rel_err(forward(part, args, aux, {"data": x})[0], ref) < 1e-4
    # Two subgraphs (the Pooling nodes stay in MXNet), one engine each per setting.
    assert ENGINES.lookups["built"] == 4
