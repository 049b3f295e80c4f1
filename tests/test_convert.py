"""convert PREFIX EPOCH --out DIR, then load(DIR) or load_checkpoint in a new process: no rebuild."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from mxtrt_backend import demo

RUN = textwrap.dedent("""
    import logging, sys
    import mxnet as mx, numpy as np
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    import mxtrt_backend
    if sys.argv[1] == "load":
        sym, args, aux = mxtrt_backend.load(sys.argv[2])
    else:
        sym, args, aux = mx.model.load_checkpoint(sys.argv[2] + "/model", 0)
    x = np.load(sys.argv[3])
    ex = sym.bind(mx.cpu(), dict(args, data=mx.nd.array(x), softmax_label=mx.nd.zeros(len(x))),
                  aux_states=aux, grad_req="null")
    ex.forward(is_train=False)
    np.save(sys.argv[4], ex.outputs[0].asnumpy())
""")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lenet")
    return demo.train_lenet_digits(str(folder), epochs=1)


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mxtrt_backend", *args], env=env,
                          capture_output=True, text=True, timeout=300)


def test_convert_then_run_in_new_processes_without_rebuilding(checkpoint, tmp_path):
    prefix, epoch = checkpoint
    out = tmp_path / "converted"
    env = dict(os.environ, MXTRT_CACHE_DIR=str(tmp_path / "user-cache"))
    done = cli("convert", prefix, str(epoch), "--out", str(out), "--shape", "16,1,8,8",
               "--shape", "softmax_label:16", env=env)
    assert done.returncode == 0, done.stderr
    assert "building engines" in done.stderr and "engine(s) in" in done.stdout
    assert (out / "model-symbol.json").exists() and list((out / "engines").glob("*.engine"))

    x = demo.digits()[2][:16]
    np.save(tmp_path / "x.npy", x)
    expected = _plain_forward(prefix, epoch, x)
    for mode, cache in [("load", "empty-cache"), ("checkpoint", "user-cache")]:
        run_env = dict(os.environ, MXTRT_CACHE_DIR=str(tmp_path / cache))
        result = subprocess.run([sys.executable, "-c", RUN, mode, str(out), str(tmp_path / "x.npy"),
                                 str(tmp_path / f"{mode}.npy")], env=run_env, capture_output=True,
                                text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        assert "cache hit (disk)" in result.stdout and "cache miss" not in result.stdout, result.stdout
        np.testing.assert_allclose(np.load(tmp_path / f"{mode}.npy"), expected, rtol=1e-5, atol=1e-6)


def _plain_forward(prefix: str, epoch: int, x: np.ndarray) -> np.ndarray:
    import mxnet as mx

    sym, args, aux = mx.model.load_checkpoint(prefix, epoch)
    ex = sym.bind(mx.cpu(), dict(args, data=mx.nd.array(x), softmax_label=mx.nd.zeros(len(x))),
                  aux_states=aux, grad_req="null")
    ex.forward(is_train=False)
    return ex.outputs[0].asnumpy()


def test_convert_rejects_a_bad_option_before_any_work(checkpoint, tmp_path):
    prefix, epoch = checkpoint
    done = cli("convert", prefix, str(epoch), "--out", str(tmp_path / "o"), "--shape", "1,1,8,8",
               "-o", "min_subgraph_sise=2", env=dict(os.environ))
    assert done.returncode == 2
    assert "did you mean 'min_subgraph_size'" in done.stderr
    assert not (tmp_path / "o").exists()


def test_the_cache_size_limit_never_drops_engines_of_a_converted_model(checkpoint, tmp_path,
                                                                      monkeypatch):
    from mxtrt_backend.convert import convert

    prefix, epoch = checkpoint
    monkeypatch.setenv("MXTRT_CACHE_MAX_SIZE", "1")  # smaller than any engine
    result = convert(prefix, epoch, str(tmp_path / "out"), {"data": (16, 1, 8, 8),
                                                            "softmax_label": (16,)})
    assert result.subgraphs >= 1
    assert len(list((tmp_path / "out" / "engines").glob("*.engine"))) == result.subgraphs
