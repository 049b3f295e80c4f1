"""`python -m mxtrt_backend cache list | clear | prune` on a cache the backend filled."""
from __future__ import annotations

import os
import time

import mxnet as mx
import pytest

from helpers import random_params
from mxtrt_backend.__main__ import main


@pytest.fixture
def filled(isolated_cache):
    """Two engines in the test's cache folder: the first one used longest ago."""
    for i, width in enumerate((8, 16)):
        x = mx.sym.Convolution(mx.sym.var("data"), num_filter=width, kernel=(3, 3), name=f"conv{i}")
        sym = mx.sym.FullyConnected(mx.sym.Activation(x, act_type="relu", name=f"relu{i}"),
                                    num_hidden=4, name=f"fc{i}")
        args, _ = random_params(sym, {"data": (1, 3, 8, 8)})
        trt = sym.optimize_for("TensorRT", args, {}, ctx=mx.cpu())
        ex = trt.bind(mx.cpu(), dict(args, data=mx.nd.ones((1, 3, 8, 8))), grad_req="null")
        ex.forward(is_train=False)
        ex.outputs[0].wait_to_read()
    engines = sorted(isolated_cache.glob("*.engine"), key=lambda p: p.stat().st_size)
    for age, path in zip((3600, 60), engines):  # the smaller one was used an hour ago
        os.utime(path, (time.time() - age,) * 2)
    return isolated_cache, engines


def test_list_shows_each_engine_with_what_it_computes(filled, capsys):
    folder, engines = filled
    assert main(["cache", "list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["key", "subgraph", "runtime", "size", "last", "use"]
    rows = {line.split()[0]: line for line in out[1:-1]}
    assert sorted(rows) == sorted(p.name[:16] for p in engines)
    assert "conv0 .. fc0 (3 nodes)" in rows[engines[0].name[:16]]
    assert "onnxruntime" in rows[engines[1].name[:16]]
    assert out[-1].startswith("2 engines, ") and str(folder) in out[-1]


def test_prune_deletes_the_least_recently_used_beyond_the_size(filled, capsys):
    folder, (older, newer) = filled
    assert main(["cache", "prune", "--max-size", str(newer.stat().st_size)]) == 0
    assert list(folder.glob("*.engine")) == [newer]
    assert "removed 1 least recently used engine; 1 engine" in capsys.readouterr().out


def test_clear_deletes_every_engine_of_the_folder_given(filled, capsys, monkeypatch, tmp_path):
    folder, _ = filled
    monkeypatch.setenv("MXTRT_CACHE_DIR", str(tmp_path / "elsewhere"))
    assert main(["cache", "clear", "--dir", str(folder)]) == 0
    assert not list(folder.glob("*.engine"))
    assert "removed 2 engines" in capsys.readouterr().out


def test_a_bad_size_is_one_line_and_exit_code_2(filled, capsys):
    folder, engines = filled
    assert main(["cache", "prune", "--max-size", "lots"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mxtrt cache: error: option 'cache_max_size' = 'lots'") and "\n" not in err
    assert sorted(folder.glob("*.engine")) == sorted(engines)


def test_size_suffixes_are_powers_of_1024():
    from mxtrt_backend.config import resolve

    sizes = {text: resolve({"cache_max_size": text}, environ={}).cache_max_size
             for text in ("0", "1500", "500M", "5G", "5GiB", "1.5gb", "2 KB")}
    assert sizes == {"0": 0, "1500": 1500, "500M": 500 << 20, "5G": 5 << 30, "5GiB": 5 << 30,
                     "1.5gb": int(1.5 * (1 << 30)), "2 KB": 2048}
    assert resolve({}, environ={}).cache_max_size == 5 << 30
