"""Bad luck and odd input, end to end: cache errors never reach a forward (a directory in the
way, no inode left, a cache shared by two users), non-ASCII names, NaN, option mistakes, engines
freed when no op state uses them, reports per call across threads, and a partitioned symbol
loaded without the plugin."""
from __future__ import annotations

import errno
import gc
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
from pathlib import Path

import mxnet as mx
import numpy as np
import pytest

import mxtrt_backend
from helpers import forward, random_params, rel_err

SHAPE = (2, 3, 6, 6)


def net(prefix: str = "") -> mx.sym.Symbol:
    x = mx.sym.Convolution(mx.sym.var("data"), num_filter=4, kernel=(3, 3), name=f"{prefix}conv")
    x = mx.sym.Activation(x, act_type="tanh", name=f"{prefix}act")
    return mx.sym.FullyConnected(x, num_hidden=3, name=f"{prefix}fc")


def run_backend(sym: mx.sym.Symbol, args: dict, x: np.ndarray, **options) -> np.ndarray:
    trt = sym.optimize_for("TensorRT", args, {}, ctx=mx.cpu(), **options)
    ex = trt.bind(mx.cpu(), dict(args, data=mx.nd.array(x)), grad_req="null")
    ex.forward(is_train=False)
    return ex.outputs[0].asnumpy()


@pytest.fixture
def model():
    sym = net()
    args, _ = random_params(sym, {"data": SHAPE})
    x = np.random.RandomState(1).uniform(-1, 1, SHAPE).astype("f")
    return sym, args, x, forward(sym, args, {}, {"data": x})[0]


def messages(caplog, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


# --- Cache file errors degrade to "kept in memory only" ---------------------------------------


def test_an_engine_file_replaced_by_a_directory_does_not_reach_forward(model, isolated_cache,
                                                                       caplog):
    from mxtrt_backend.engine.cache import ENGINES

    sym, args, x, expected = model
    run_backend(sym, args, x)
    (engine,) = isolated_cache.glob("*.engine")
    engine.unlink()
    engine.mkdir()
    ENGINES.clear_memory()  # what a new process would see
    with caplog.at_level(logging.WARNING, logger="mxtrt"):
        assert rel_err(run_backend(sym, args, x), expected) < 1e-5
    assert messages(caplog, "cannot read cached engine") and messages(caplog, "in memory only")


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A real file system of 8 inodes and 256 KiB (root only: it mounts a tmpfs)."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,nr_inodes=8", "tmpfs",
                           str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (root only): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def _fill(folder: Path, what: str) -> None:
    """Use up the inodes ("inodes") or the bytes ("space") of the file system under folder."""
    for i in range(10_000):
        try:
            with open(folder / f"filler{i}", "wb") as f:
                if what == "space":
                    f.write(b"\0" * (1 << 20))
        except OSError as err:
            assert err.errno == errno.ENOSPC
            return
    raise AssertionError("the file system never filled up")


@pytest.mark.parametrize("what, warning", [("inodes", "cannot create the build lock"),
                                           ("space", "could not write engine cache file")])
def test_a_full_file_system_keeps_engines_in_memory(model, tiny_tmpfs, what, warning, caplog):
    sym, args, x, expected = model
    cache = tiny_tmpfs / "cache"
    cache.mkdir()
    _fill(tiny_tmpfs, what)
    with caplog.at_level(logging.WARNING, logger="mxtrt"):
        assert rel_err(run_backend(sym, args, x, cache_dir=str(cache)), expected) < 1e-5
    assert messages(caplog, warning)
    assert not list(cache.glob("*.tmp"))


SECOND_USER = textwrap.dedent("""
    import gc, logging, os, sys
    import mxnet as mx, numpy as np
    import mxtrt_backend
    from mxtrt_backend.engine.cache import ENGINES

    shared, private, uid = sys.argv[1], sys.argv[2], int(sys.argv[3])
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    x = mx.sym.Convolution(mx.sym.var("data"), num_filter=4, kernel=(3, 3), name="conv")
    sym = mx.sym.Activation(x, act_type="tanh", name="act")
    args = {"conv_weight": mx.nd.array(np.linspace(-1, 1, 108).reshape(4, 3, 3, 3)),
            "conv_bias": mx.nd.zeros(4)}

    def run(folder):
        trt = sym.optimize_for("TensorRT", args, {}, ctx=mx.cpu(), cache_dir=folder)
        ex = trt.bind(mx.cpu(), dict(args, data=mx.nd.ones((1, 3, 6, 6))), grad_req="null")
        ex.forward()
        return float(ex.outputs[0].asnumpy().sum())

    # Everything Python imports lazily is imported now, while this process may read /root.
    run(private)
    gc.collect()
    ENGINES.clear_memory()
    os.setgid(uid)
    os.setuid(uid)
    print("SUM", run(shared))
""")


@pytest.fixture
def shared_folder():
    """A folder every user may use, outside pytest's private temporary folders."""
    folder = Path(tempfile.mkdtemp(prefix="mxtrt-shared-"))
    folder.chmod(0o777)
    yield folder
    shutil.rmtree(folder)


def _as_another_user(folder: Path) -> subprocess.CompletedProcess:
    private = folder / "root-private"
    return subprocess.run([sys.executable, "-c", SECOND_USER, str(folder / "cache"),
                           str(private), "65534"], capture_output=True, text=True, timeout=300)


def _sum(run: subprocess.CompletedProcess) -> float:
    return float(next(line.split()[1] for line in run.stdout.splitlines()
                      if line.startswith("SUM")))


@pytest.mark.skipif(os.geteuid() != 0, reason="acting as a second user needs root")
def test_a_cache_folder_shared_by_two_users(shared_folder):
    cache = shared_folder / "cache"
    cache.mkdir()
    cache.chmod(0o777)  # the folder is shared; each file is its owner's, made with umask 022
    previous = os.umask(0o022)
    try:
        first = subprocess.run([sys.executable, "-c", SECOND_USER, str(cache),
                                str(shared_folder / "a"), "0"], capture_output=True, text=True,
                               timeout=300)
    finally:
        os.umask(previous)
    assert first.returncode == 0, first.stderr
    (engine,) = cache.glob("*.engine")
    assert engine.stat().st_uid == 0

    second = _as_another_user(shared_folder)  # reads what the first user built
    assert second.returncode == 0, second.stderr
    assert "cache hit (disk)" in second.stdout and _sum(second) == _sum(first)

    engine.chmod(0o600)  # as mxtrt 0.1 wrote its files: unreadable to others
    third = _as_another_user(shared_folder)
    assert third.returncode == 0, third.stderr
    assert "cannot read cached engine" in third.stdout and _sum(third) == _sum(first)


# --- Names, numbers and options ---------------------------------------------------------------


def test_non_ascii_node_names_bind_and_survive_save_and_load(tmp_path):
    sym = net("couche_é_")
    args, _ = random_params(sym, {"data": SHAPE})
    x = np.random.RandomState(2).uniform(-1, 1, SHAPE).astype("f")
    expected = forward(sym, args, {}, {"data": x})[0]
    trt = sym.optimize_for("TensorRT", args, {}, ctx=mx.cpu())
    assert "couche_é_conv_weight" in trt.report.subgraphs[0].params
    assert rel_err(forward(trt, args, {}, {"data": x})[0], expected) < 1e-5
    trt.save(str(tmp_path / "m-symbol.json"))
    loaded = mx.sym.load(str(tmp_path / "m-symbol.json"))
    assert rel_err(forward(loaded, args, {}, {"data": x})[0], expected) < 1e-5


NAN_INPUT = np.array([[[[np.nan, -1.0, 0.5, 2.0]]]], np.float32)


@pytest.mark.parametrize("make", [
    lambda x: mx.sym.Activation(x, act_type="relu"),
    lambda x: mx.sym.relu(x),
    lambda x: mx.sym.LeakyReLU(x, act_type="leaky", slope=0.1),
    lambda x: mx.sym.Activation(x, act_type="sigmoid"),
    lambda x: mx.sym.clip(x, 0, 1),
], ids=["Activation_relu", "relu", "LeakyReLU", "sigmoid", "clip"])
def test_nan_propagates_through_every_activation(make):
    """The decision (docs/reliability.md): a NaN stays NaN, as in MXNet's relu, LeakyReLU, sigmoid
    and clip. MXNet's Activation(act_type='relu') alone turns it into 0."""
    sym = make(mx.sym.var("data"))
    out = forward(sym.optimize_for("TensorRT", {}, {}, ctx=mx.cpu(), min_subgraph_size=1),
                  {}, {}, {"data": NAN_INPUT})[0]
    reference = forward(sym, {}, {}, {"data": NAN_INPUT})[0]
    assert np.isnan(out[..., 0]).all()
    np.testing.assert_allclose(out[..., 1:], reference[..., 1:], rtol=1e-6)


def test_ort_threads_beyond_the_usable_cpus_is_refused_before_anything_is_built(model):
    from mxtrt_backend.config import usable_cpus

    sym, args, x, expected = model
    with pytest.raises(mxtrt_backend.OptionError,
                       match=f"'ort_threads' = '{usable_cpus() + 1}' .* must be between 0 and "
                             f"{usable_cpus()}, the CPUs this process may use"):
        run_backend(sym, args, x, ort_threads=str(usable_cpus() + 1))
    assert rel_err(run_backend(sym, args, x, ort_threads=str(usable_cpus())), expected) < 1e-5


def test_an_empty_cache_folder_is_refused_not_the_working_directory(model, monkeypatch, tmp_path):
    sym, args, x, _ = model
    monkeypatch.chdir(tmp_path)
    with pytest.raises(mxtrt_backend.OptionError, match="'cache_dir' = ' ' .*empty folder name"):
        run_backend(sym, args, x, cache_dir=" ")
    monkeypatch.setenv("MXTRT_CACHE_DIR", "")
    with pytest.raises(mxtrt_backend.OptionError, match=r"from \$MXTRT_CACHE_DIR.*empty folder"):
        run_backend(sym, args, x)
    assert not list(tmp_path.iterdir())


def test_a_misspelt_excluded_op_names_the_closest_mxnet_op(model):
    sym, args, x, _ = model
    with pytest.raises(mxtrt_backend.OptionError,
                       match="'Convolutoin' is not an MXNet operator; did you mean 'Convolution'"):
        sym.optimize_for("TensorRT", args, {}, ctx=mx.cpu(), exclude_ops="FullyConnected,Convolutoin")


def test_excluded_ops_given_as_a_python_list(model):
    sym, args, *_ = model
    trt = sym.optimize_for("TensorRT", args, {}, ctx=mx.cpu(), exclude_ops=["Convolution"])
    assert [(r.op, r.reason) for r in trt.report.refused] == [
        ("Convolution", "excluded by option exclude_ops")]


# --- Growth -----------------------------------------------------------------------------------


def test_engines_no_op_state_uses_are_freed():
    from mxtrt_backend.engine.ort import OrtEngine

    def engines() -> int:
        gc.collect()
        return sum(isinstance(o, OrtEngine) for o in gc.get_objects())

    sym = mx.sym.FullyConnected(mx.sym.Activation(mx.sym.FullyConnected(
        mx.sym.var("data"), num_hidden=64, name="fc1"), act_type="relu"), num_hidden=8, name="fc2")
    args, _ = random_params(sym, {"data": (4, 32)})
    ex = sym.optimize_for("TensorRT", args, {}, ctx=mx.cpu()).bind(
        mx.cpu(), dict(args, data=mx.nd.ones((4, 32))), grad_req="null")
    before = engines()
    for seed in range(20):  # new weights at every round: a new engine each time
        weights, _ = random_params(sym, {"data": (4, 32)}, seed=seed)
        ex.copy_params_from(weights)
        ex.forward(is_train=False)
        np.testing.assert_allclose(ex.outputs[0].asnumpy(),
                                   forward(sym, weights, {}, {"data": np.ones((4, 32), "f")})[0],
                                   rtol=1e-5, atol=1e-6)
    assert engines() - before <= 1


# --- Reports per call -------------------------------------------------------------------------


def test_reports_are_per_call_when_two_threads_partition_at_once():
    small, large = net("a_"), mx.sym.Activation(net("b_"), act_type="relu", name="b_relu")
    wrong: list[str] = []

    def partition(sym: mx.sym.Symbol, nodes: int) -> None:
        for _ in range(300):
            trt = sym.optimize_for("TensorRT", ctx=mx.cpu())
            seen = (trt.report.compute_nodes, mxtrt_backend.last_report().compute_nodes)
            if seen != (nodes, nodes):
                wrong.append(f"expected {nodes} compute nodes, saw {seen}")

    threads = [threading.Thread(target=partition, args=(small, 3)),
               threading.Thread(target=partition, args=(large, 4))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not any(t.is_alive() for t in threads) and wrong == []


# --- A partitioned symbol without the plugin ---------------------------------------------------


def test_loading_a_partitioned_symbol_without_the_plugin_names_the_fix(model, tmp_path):
    sym, args, *_ = model
    sym.optimize_for("TensorRT", args, {}, ctx=mx.cpu()).save(str(tmp_path / "m-symbol.json"))
    code = f"import mxnet as mx; mx.sym.load({str(tmp_path / 'm-symbol.json')!r})"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode != 0
    assert "Operator _TensorRT is not registered" in done.stderr
    assert "needs_import_mxtrt_backend" in done.stderr
    names = [n["name"] for n in json.loads((tmp_path / "m-symbol.json").read_text())["nodes"]
             if n["op"] == "_TensorRT"]
    assert names == ["_op0_needs_import_mxtrt_backend"]
