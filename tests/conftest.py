from __future__ import annotations

import json
import os
import threading
from contextlib import contextmanager
from typing import Iterator

import mxnet as mx
import numpy as np
import pytest

import mxtrt_backend  # noqa: F401  registers the TensorRT backend


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Each test gets its own engine cache folder and an empty in-memory cache."""
    from mxtrt_backend.engine.cache import ENGINES

    folder = tmp_path / "engine-cache"
    monkeypatch.setenv("MXTRT_CACHE_DIR", str(folder))
    ENGINES.clear_memory()
    yield folder
    ENGINES.clear_memory()


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
