"""The engine cache: keys, the file format, damaged files, and reuse by a new process."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap

import pytest

from mxtrt_backend.engine import Serialized
from mxtrt_backend.engine.cache import CorruptEntry, EngineCache, cache_key, pack, unpack


class Counter:
    """A build/load pair that records calls; stands in for a runtime, not for MXNet or ONNX."""

    def __init__(self, blob: bytes = b"engine-bytes") -> None:
        self.blob, self.builds, self.loads = blob, 0, []

    def build(self) -> Serialized:
        self.builds += 1
        return Serialized(self.blob, "rt", "1.0")

    def load(self, entry: Serialized) -> object:
        self.loads.append(entry.data)
        return ("engine", entry.data)


def get(c: EngineCache, counter: Counter, folder, key: str = "k" * 64, device_id: int = 0):
    return c.get(key, str(folder), {"rt": "1.0"}, counter.build, counter.load, device_id)


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
