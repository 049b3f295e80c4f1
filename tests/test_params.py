"""ParamTracker: when are the parameters MXNet hands over different from those baked in?

Buffers are real host memory read by the real ONNX Runtime runtime; versions are set by hand to
replay what MXNet does in each situation."""
from __future__ import annotations

import logging

import numpy as np

from mxtrt_backend.engine import TensorRef
from mxtrt_backend.engine.ort import OrtRuntime
from mxtrt_backend.params import VOLATILE_AFTER, ParamTracker

RUNTIME = OrtRuntime()


def refs(buffers: list[np.ndarray], versions: list[int]) -> list[TensorRef]:
    return [TensorRef(b.ctypes.data, b.shape, b.dtype, v) for b, v in zip(buffers, versions)]


def arrays(seed: int) -> list[np.ndarray]:
    rng = np.random.RandomState(seed)
    return [rng.uniform(-1, 1, (4, 3)).astype("f"), rng.uniform(-1, 1, (4,)).astype("f"),
            rng.uniform(0.5, 1.5, (4,)).astype("f")]


def tracker(**kwargs) -> ParamTracker:
    return ParamTracker(RUNTIME, "structure", (0, 1, 2), names=("w", "b", "var"), **kwargs)


def test_first_forward_builds_then_same_versions_do_not():
    t, buffers = tracker(), arrays(0)
    assert t.changed(refs(buffers, [1, 1, 1]))
    t.digest(refs(buffers, [1, 1, 1]))
    assert not t.changed(refs(buffers, [1, 1, 1]))


def test_a_new_version_is_a_change():
    t, buffers = tracker(), arrays(0)
    t.changed(refs(buffers, [1, 1, 1]))
    assert t.changed(refs(buffers, [1, 2, 1]))
    assert not t.changed(refs(buffers, [1, 2, 1]))


def test_a_reordered_copy_at_another_address_is_not_a_change():
    """MXNet hands an MKLDNN-layout parameter over as a fresh default-layout copy at every
    forward: another address, the original's version, the same values."""
    t, buffers = tracker(), arrays(0)
    t.changed(refs(buffers, [1, 1, 1]))
    for _ in range(3):
        copies = [b.copy() for b in buffers]
        assert not t.changed(refs(copies, [1, 1, 1]))


def test_an_input_without_a_version_is_known_by_its_content():
    """MXNet hands an MKLDNN-layout array over as a copy with version 0, whatever was written to
    the original: the values decide, every forward."""
    t, buffers = tracker(), arrays(0)
    t.changed(refs(buffers, [0, 0, 1]))
    t.digest(refs(buffers, [0, 0, 1]))
    assert not t.changed(refs([b.copy() for b in buffers], [0, 0, 1]))
    changed = [b.copy() for b in buffers]
    changed[0][1, 2] += 1.0  # copy_params_from into the original: only the copy's values tell
    assert t.changed(refs(changed, [0, 0, 1]))


def test_gluon_own_writes_of_auxiliary_inputs_are_learnt_from_their_values():
    t, buffers = tracker(mutable=frozenset({2})), arrays(0)
    t.changed(refs(buffers, [1, 1, 5]))
    t.digest(refs(buffers, [1, 1, 5]))
    for version in (6, 7, 8):  # one version per forward, values unchanged: CachedOp's own write
        assert not t.changed(refs(buffers, [1, 1, version]))
    buffers[2][:] = 9.0  # a real write (set_data) gains more than one version
    assert t.changed(refs(buffers, [1, 1, 10]))


def test_a_bound_executor_does_not_write_its_statistics():
    t, buffers = tracker(mutable=frozenset({2})), arrays(0)
    t.changed(refs(buffers, [1, 1, 5]))
    t.digest(refs(buffers, [1, 1, 5]))
    assert not t.changed(refs(buffers, [1, 1, 5]))  # learnt: no own writes in this path
    buffers[2][:] = 2.0  # copy_params_from: one version more, other values
    assert t.changed(refs(buffers, [1, 1, 6]))


def test_memory_of_a_freed_model_reused_with_the_same_versions_gets_its_own_digest():
    """Another model of the same layout at the same addresses, with versions counted the same
    way: the sampled values tell the two apart."""
    buffers = arrays(0)
    before = tracker().digest(refs(buffers, [1, 1, 1]))
    for i, b in enumerate(buffers):
        b[...] = np.random.RandomState(100 + i).uniform(-1, 1, b.shape)
    assert tracker().digest(refs(buffers, [1, 1, 1])) != before


def test_equal_values_give_equal_digests_across_states():
    a, b = arrays(3), arrays(3)
    assert tracker().digest(refs(a, [1, 1, 1])) == tracker().digest(refs(b, [4, 4, 4]))


def test_a_given_input_that_changes_at_every_forward_stops_being_baked(caplog):
    t, buffers = tracker(demotable=frozenset({0})), arrays(0)
    t.changed(refs(buffers, [1, 1, 1]))
    with caplog.at_level(logging.WARNING, logger="mxtrt"):
        for step in range(VOLATILE_AFTER):
            assert t.changed(refs(buffers, [2 + step, 1, 1]))
    assert t.baked == (1, 2)
    assert "input 'w' was given to optimize_for and changes at every forward" in caplog.text
    assert not t.changed(refs(buffers, [9, 1, 1]))  # data now: its changes are not rebuilds


def test_weights_in_their_slots_stay_baked_however_often_they_change():
    t, buffers = tracker(), arrays(0)
    for step in range(5):
        assert t.changed(refs(buffers, [step, 1, 1])) or step == 0
    assert t.baked == (0, 1, 2)
