"""The engine cache: keys, the file format, damaged files, and reuse by a new process."""
from __future__ import annotations

import fcntl
import logging
import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from mxtrt_backend.engine import Serialized
from mxtrt_backend.engine.cache import CorruptEntry, EngineCache, Store, cache_key, pack, unpack


class Counter:
    """A build/load pair that records calls; stands in for a runtime, not for MXNet or ONNX."""

    def __init__(self, blob: bytes = b"engine-bytes") -> None:
        self.blob, self.builds, self.loads = blob, 0, []

    def build(self) -> Serialized:
        self.builds += 1
        return Serialized(self.blob, "rt", "1.0")

    def load(self, entry: Serialized) -> object:
        self.loads.append(entry.data)
        return Loaded(entry.data)


class Loaded:
    """What Counter.load returns: an object, as engines are (the cache holds them weakly)."""

    def __init__(self, blob: bytes) -> None:
        self.blob = blob


def get(c: EngineCache, counter: Counter, folder, key: str = "k" * 64, version: str = "1.0",
        max_size: int = 0, lock_timeout: float = 60.0, device_id: int = 0):
    return c.get(key, Store(str(folder), max_size, lock_timeout), {"rt": version}, counter.build,
                 counter.load, device_id)


def test_key_is_stable_and_changes_with_any_part():
    parts = {"structure": "a", "params": "b", "runtime": "onnxruntime", "version": "1", "options": {"x": 1}}
    assert cache_key(parts) == cache_key(dict(reversed(list(parts.items()))))
    for name in parts:
        changed = dict(parts, **{name: "other"})
        assert cache_key(changed) != cache_key(parts), name


def test_pack_roundtrip_and_checks():
    data = pack(b"payload", "rt", "1.0")
    assert unpack(data, {"rt": "1.0"}) == Serialized(b"payload", "rt", "1.0")
    with pytest.raises(CorruptEntry, match="bad magic"):
        unpack(b"garbage" * 10, {"rt": "1.0"})
    with pytest.raises(CorruptEntry, match="checksum"):
        unpack(data[:-2], {"rt": "1.0"})
    with pytest.raises(CorruptEntry, match="built by"):
        unpack(data, {"rt": "2.0"})
    with pytest.raises(CorruptEntry):
        unpack(b"", {"rt": "1.0"})


def test_header_records_which_runtime_built_the_payload():
    """A runtime with a fallback loads entries of either; an entry of a runtime this process
    does not load (or of another version of it) is refused, so it is discarded and rebuilt."""
    accepts = {"tensorrt": "10.13", "onnxruntime-staged": "1.19.2"}
    fallback = pack(b"onnx-model", "onnxruntime-staged", "1.19.2")
    assert unpack(fallback, accepts) == Serialized(b"onnx-model", "onnxruntime-staged", "1.19.2")
    with pytest.raises(CorruptEntry, match="built by"):
        unpack(pack(b"onnx-model", "onnxruntime-staged", "1.18.0"), accepts)
    with pytest.raises(CorruptEntry, match="built by"):
        unpack(pack(b"onnx-model", "onnxruntime", "1.19.2"), accepts)


def test_engines_are_loaded_per_device_and_shared_on_disk_between_devices(tmp_path):
    """Two devices with the same device key (two GPUs of one model) share the serialized engine
    but each loads its own: an engine is never handed to another device's ops."""
    c, counter = EngineCache(), Counter()
    assert get(c, counter, tmp_path, device_id=0).source == "built"
    assert get(c, counter, tmp_path, device_id=1).source == "disk"
    assert get(c, counter, tmp_path, device_id=1).source == "memory"
    assert counter.builds == 1 and len(counter.loads) == 2


def test_observers_see_every_lookup_while_watching(tmp_path):
    c, counter, seen = EngineCache(), Counter(), []
    with c.watch(lambda key, hit: seen.append((key, hit.source, hit.runtime))):
        get(c, counter, tmp_path)
        get(c, counter, tmp_path)
    get(c, counter, tmp_path)
    assert seen == [("k" * 64, "built", "rt"), ("k" * 64, "memory", "rt")]


def test_memory_then_disk_then_build(tmp_path):
    counter = Counter()
    first = get(EngineCache(), counter, tmp_path)
    assert first.source == "built" and counter.builds == 1
    assert get(EngineCache(), counter, tmp_path).source == "disk"  # a fresh cache: a new process
    c = EngineCache()
    get(c, counter, tmp_path)
    assert get(c, counter, tmp_path).source == "memory"
    assert counter.builds == 1
    assert [p.suffix for p in tmp_path.iterdir() if p.suffix == ".engine"] == [".engine"]


@pytest.mark.parametrize("damage", [
    lambda data: b"",
    lambda data: data[: len(data) // 2],
    lambda data: b"\x00garbage" * 5,
    lambda data: pack(b"engine-bytes", "rt", "0.9"),  # another runtime version
])
def test_damaged_file_is_discarded_with_a_warning_and_rebuilt(tmp_path, caplog, damage):
    counter = Counter()
    get(EngineCache(), counter, tmp_path)
    path = next(tmp_path.glob("*.engine"))
    path.write_bytes(damage(path.read_bytes()))
    with caplog.at_level(logging.WARNING, logger="mxtrt"):
        hit = get(EngineCache(), counter, tmp_path)
    assert hit.source == "built" and counter.builds == 2
    assert counter.loads[-1] == b"engine-bytes"
    assert len([r for r in caplog.records if "discarding cached engine" in r.message]) == 1
    assert unpack(path.read_bytes(), {"rt": "1.0"}).data == b"engine-bytes"


def test_folder_that_is_a_file_warns_and_keeps_engines_in_memory(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    c, counter = EngineCache(), Counter()
    with caplog.at_level(logging.WARNING, logger="mxtrt"):
        assert get(c, counter, blocker / "cache").source == "built"
        assert get(c, counter, blocker / "cache").source == "memory"
    assert len([r for r in caplog.records if "not writable" in r.message]) == 1


SCRIPT = textwrap.dedent("""
    import logging, sys
    import mxnet as mx, numpy as np
    import mxtrt_backend
    logging.basicConfig(level=logging.INFO, format="%(name)s %(message)s", stream=sys.stdout)
    x = mx.sym.Convolution(mx.sym.var("data"), num_filter=4, kernel=(3, 3), name="c")
    sym = mx.sym.Activation(x, act_type="relu", name="r")
    args = {"c_weight": mx.nd.array(np.full((4, 3, 3, 3), 0.1)), "c_bias": mx.nd.zeros(4)}
    trt = sym.optimize_for("TensorRT", args, {}, ctx=mx.cpu())
    ex = trt.bind(mx.cpu(), dict(args, data=mx.nd.ones((1, 3, 6, 6))), grad_req="null")
    ex.forward(is_train=False)
    print("SUM", float(ex.outputs[0].asnumpy().sum()))
""")


def test_a_new_process_reuses_the_engine_from_disk(tmp_path):
    env = dict(os.environ, MXTRT_CACHE_DIR=str(tmp_path / "c"))
    runs = [subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True,
                           timeout=300) for _ in range(2)]
    for run in runs:
        assert run.returncode == 0, run.stderr
    cold, warm = (r.stdout for r in runs)
    assert "cache miss" in cold and "cache hit (disk)" not in cold
    assert "cache hit (disk)" in warm and "cache miss" not in warm
    sums = [float(line.split()[1]) for r in runs for line in r.stdout.splitlines() if line.startswith("SUM")]
    assert sums[0] == sums[1] == pytest.approx(4 * 16 * 2.7, rel=1e-6)


def test_damaged_real_engine_file_is_rebuilt_and_the_answer_stays_right(isolated_cache, caplog):
    import mxnet as mx
    import numpy as np

    from mxtrt_backend.engine.cache import ENGINES

    x = mx.sym.Convolution(mx.sym.var("data"), num_filter=4, kernel=(3, 3), name="c")
    sym = mx.sym.Activation(x, act_type="tanh", name="t")
    rng = np.random.RandomState(0)
    args = {"c_weight": mx.nd.array(rng.uniform(-1, 1, (4, 3, 3, 3))), "c_bias": mx.nd.zeros(4)}
    data = mx.nd.array(rng.uniform(-1, 1, (1, 3, 6, 6)))

    def run(s: mx.sym.Symbol) -> np.ndarray:
        ex = s.bind(mx.cpu(), dict(args, data=data), grad_req="null")
        ex.forward(is_train=False)
        return ex.outputs[0].asnumpy()

    expected = run(sym)
    trt = sym.optimize_for("TensorRT", args, {}, ctx=mx.cpu())
    run(trt)
    (path,) = isolated_cache.glob("*.engine")
    path.write_bytes(path.read_bytes()[:100])  # truncated, as by a full disk or a killed writer
    ENGINES.clear_memory()  # what a new process would see
    with caplog.at_level(logging.WARNING, logger="mxtrt"):
        np.testing.assert_allclose(run(trt), expected, rtol=1e-5, atol=1e-6)
    assert [r.message for r in caplog.records if "discarding cached engine" in r.message]
    assert unpack(path.read_bytes(), {"onnxruntime": __import__("onnxruntime").__version__})


# --- Size limit, clean-up, locks and file errors ----------------------------------------------

ENTRY = len(pack(b"e" * 1000, "rt", "1.0"))


def keyed(c: EngineCache, folder, key: str, max_size: int = 0, **kw):
    return get(c, Counter(b"e" * 1000), folder, key=key * 64, max_size=max_size, **kw)


def test_the_least_recently_used_engines_go_beyond_the_size_limit(tmp_path):
    for key in "abc":
        keyed(EngineCache(), tmp_path, key, max_size=3 * ENTRY)
    for age, key in zip((300, 200, 100), "abc"):  # written a, then b, then c, minutes ago
        os.utime(tmp_path / f"{key * 64}.engine", (time.time() - age,) * 2)
    assert keyed(EngineCache(), tmp_path, "a").source == "disk"  # a process uses a again
    assert keyed(EngineCache(), tmp_path, "d", max_size=3 * ENTRY).source == "built"
    assert sorted(p.name[0] for p in tmp_path.glob("*.engine")) == ["a", "c", "d"]


def test_an_engine_larger_than_the_limit_stays_in_memory_only(tmp_path, caplog):
    c = EngineCache()
    with caplog.at_level(logging.WARNING, logger="mxtrt"):
        assert keyed(c, tmp_path, "a", max_size=ENTRY - 1).source == "built"
        assert keyed(c, tmp_path, "a", max_size=ENTRY - 1).source == "memory"
    assert not list(tmp_path.glob("*.engine"))
    assert [r.message for r in caplog.records if "exceeds cache_max_size" in r.message]


def test_leftovers_of_killed_processes_are_cleaned_up_but_not_work_in_progress(tmp_path):
    old_tmp = tmp_path / f"{'a' * 64}.engine.0123456789ab.tmp"
    fresh_tmp = tmp_path / f"{'b' * 64}.engine.0123456789ab.tmp"
    dead_lock, held_lock = tmp_path / f"{'c' * 64}.engine.lock", tmp_path / f"{'d' * 64}.engine.lock"
    for path in (old_tmp, fresh_tmp, dead_lock, held_lock):
        path.write_bytes(b"partial")
    os.utime(old_tmp, (time.time() - 2 * 3600,) * 2)
    with open(held_lock, "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # a build under way in another process
        keyed(EngineCache(), tmp_path, "e", max_size=100 * ENTRY)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [fresh_tmp.name, held_lock.name, f"{'e' * 64}.engine"])


def test_a_build_lock_is_removed_after_the_build(tmp_path):
    keyed(EngineCache(), tmp_path, "a")
    assert [p.suffix for p in tmp_path.iterdir()] == [".engine"]


def _in_thread(fn, timeout: float = 120):
    """Run fn in a thread; a hang fails the test instead of blocking it."""
    result: list = []
    thread = threading.Thread(target=lambda: result.append(fn()), daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"still waiting after {timeout} s"
    return result[0]


def test_a_slow_lock_holder_is_waited_for_at_most_cache_lock_timeout(tmp_path, caplog):
    lock = tmp_path / f"{'a' * 64}.engine.lock"
    with open(lock, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        held.write(f"{os.getpid()} {socket.gethostname()}\n")  # alive and running
        held.flush()
        with caplog.at_level(logging.WARNING, logger="mxtrt"):
            hit = _in_thread(lambda: keyed(EngineCache(), tmp_path, "a", lock_timeout=0.5))
    assert hit.source == "built"
    assert [r.message for r in caplog.records if "cache_lock_timeout" in r.message]
    assert unpack((tmp_path / f"{'a' * 64}.engine").read_bytes(), {"rt": "1.0"}).data == b"e" * 1000


HOLDER = textwrap.dedent("""
    import sys, time
    from mxtrt_backend.engine import Serialized
    from mxtrt_backend.engine.cache import EngineCache, Store

    def build():
        print("building", flush=True)
        time.sleep(600)
        return Serialized(b"never", "rt", "1.0")

    EngineCache().get(sys.argv[2], Store(sys.argv[1], 0, 600), {"rt": "1.0"}, build, object)
""")


def test_a_stopped_lock_holder_is_not_waited_for(tmp_path, caplog):
    key = "a" * 64
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path), key],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "building"
        os.kill(holder.pid, signal.SIGSTOP)  # stopped mid-build, not killed: it keeps the lock
        with caplog.at_level(logging.WARNING, logger="mxtrt"):
            hit = _in_thread(lambda: get(EngineCache(), Counter(), tmp_path, key=key,
                                         lock_timeout=600))
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    assert hit.source == "built" and hit.engine.blob == b"engine-bytes"
    assert [r.message for r in caplog.records if f"process {holder.pid}" in r.message
            and "is stopped" in r.message]


def test_an_entry_that_is_a_directory_costs_a_build_not_an_error(tmp_path, caplog):
    (tmp_path / f"{'a' * 64}.engine").mkdir()
    c = EngineCache()
    with caplog.at_level(logging.WARNING, logger="mxtrt"):
        assert keyed(c, tmp_path, "a").source == "built"
        assert keyed(c, tmp_path, "a").source == "memory"
    messages = [r.message for r in caplog.records]
    assert any("cannot read cached engine" in m for m in messages)
    assert any("keeping the engine in memory only" in m for m in messages)


def test_files_are_created_with_the_users_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        keyed(EngineCache(), tmp_path, "a")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / f"{'a' * 64}.engine").stat().st_mode) == 0o644


def test_entries_list_what_each_engine_computes(tmp_path):
    from mxtrt_backend.engine.cache import entries

    c = EngineCache()
    c.get("a" * 64, Store(str(tmp_path), 0, 60), {"rt": "1.0"}, Counter().build, Counter().load,
          label="conv0 .. fc (12 nodes)")
    (tmp_path / f"{'b' * 64}.engine").write_bytes(b"not an engine")
    found = {e.key[0]: e for e in entries(tmp_path)}
    assert found["a"].header["label"] == "conv0 .. fc (12 nodes)"
    assert found["a"].header["runtime"] == "rt" and found["a"].size == (tmp_path / f"{'a' * 64}.engine").stat().st_size
    assert found["b"].header == {}


def test_threads_build_a_key_once_and_other_keys_meanwhile(tmp_path):
    c, release = EngineCache(), threading.Event()

    class Slow(Counter):
        def build(self) -> Serialized:
            release.wait(60)
            return super().build()

    slow = Slow()
    first = threading.Thread(target=lambda: get(c, slow, tmp_path, key="a" * 64))
    second = threading.Thread(target=lambda: get(c, slow, tmp_path, key="a" * 64))
    first.start()
    second.start()
    # Another key is served while "a" is being built.
    assert _in_thread(lambda: keyed(c, tmp_path, "b"), timeout=30).source == "built"
    release.set()
    first.join(60)
    second.join(60)
    assert slow.builds == 1 and len(slow.loads) == 1
