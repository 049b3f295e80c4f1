"""Which parameter values an engine holds, and whether MXNet now hands over others.

An engine has its op's parameter inputs baked in as constants. At every forward the op asks its
``ParamTracker`` one question, ``changed(inputs)``, and when the answer is yes, gets one answer,
``digest(inputs)``: a digest of the values now, the part of the engine's cache key that follows
the weights.

MXNet bumps an array's version on every write (``copy_params_from``, ``set_data``, ``x[:] =``),
so within one op state the versions decide. Two of MXNet's habits are not changes:

* Gluon's CachedOp counts each forward of this op as a write of its auxiliary inputs (they are
  declared mutable), so there they gain exactly one version per forward; a bound executor does
  not bump them. Which of the two holds is learnt the first time an auxiliary input gains one
  version, from a sample of its values.
* An array MXNet keeps in an MKLDNN layout reaches the op as a fresh default-layout copy at every
  forward: another address, and the copy's version, 0, whatever was written to the original.
  Such an input has no identity: it is checked by content (a CRC-32 of all its values) at every
  forward. (Version 0 otherwise means an array never written, which holds nothing of the user's.)
"""
from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from typing import Sequence

import numpy as np

from .engine import Runtime, TensorRef

log = logging.getLogger("mxtrt")

# A parameter given to optimize_for that feeds no weight slot and changes at this many
# consecutive forwards is data passed by mistake: it stops being baked.
VOLATILE_AFTER = 2

# Digests of parameter values across op states: Gluon without static_alloc makes a new op state
# per forward, and hashing every weight again each time would cost more than the forward. Keyed
# by what identifies a set of arrays without reading them all (see `_memo_key`); bounded.
_MEMO_SIZE = 256
_memo: OrderedDict[tuple[object, ...], str] = OrderedDict()
_memo_lock = threading.Lock()


class ParamTracker:
    """The parameter inputs of one op state: their versions, and the values the engine holds."""

    def __init__(self, runtime: Runtime, structure_digest: str, params: Sequence[int],
                 mutable: frozenset[int] = frozenset(), demotable: frozenset[int] = frozenset(),
                 names: Sequence[str] = ()) -> None:
        self._runtime = runtime
        self._structure = structure_digest
        self._params = tuple(params)
        self._mutable = mutable
        self._demotable = demotable
        self._names = tuple(names)  # by input index, for messages
        self._versions: tuple[int, ...] | None = None
        self._samples: dict[int, bytes] = {}
        self._own_writes: bool | None = None
        self._volatile: dict[int, int] = {}  # demotable input -> consecutive changes
        # Checksums of the inputs without a version (see the module docstring) at the last build.
        self._checksums: dict[int, int] = {}

    @property
    def baked(self) -> tuple[int, ...]:
        """The input indices baked into the engine: the parameters, less those found to be data."""
        return self._params

    def changed(self, inputs: Sequence[TensorRef]) -> bool:
        """Do the parameters MXNet hands over differ from those the engine was built with?
        True before the first build. Records what it sees."""
        versions = tuple(inputs[i].version for i in self._params)
        previous, self._versions = self._versions, versions
        if previous is None or self._checksums != self._unversioned(inputs):
            return True
        moved = {i: (old, new) for i, old, new in zip(self._params, previous, versions)
                 if old != new}
        if self._demote_volatile(moved):
            self._versions = tuple(inputs[i].version for i in self._params)
            return True
        if not moved:
            if self._mutable and self._own_writes is None:
                self._own_writes = False
            return False
        if any(i not in self._mutable or new != old + 1 for i, (old, new) in moved.items()):
            return True
        if self._own_writes is None:
            self._own_writes = all(self._runtime.sample(inputs[i]) == self._samples.get(i)
                                   for i in moved)
        return not self._own_writes

    def _demote_volatile(self, moved: dict[int, tuple[int, int]]) -> bool:
        """Stop baking given inputs that changed at VOLATILE_AFTER consecutive forwards."""
        for i in self._demotable.intersection(self._params):
            self._volatile[i] = self._volatile.get(i, 0) + 1 if i in moved else 0
        volatile = [i for i, n in self._volatile.items() if n >= VOLATILE_AFTER]
        if not volatile:
            return False
        names = ", ".join(f"'{self._names[i]}'" for i in volatile)
        log.warning("mxtrt: input %s was given to optimize_for and changes at every forward: it "
                    "is data, not a parameter, and is no longer baked into the engine. Leave data "
                    "out of optimize_for's args (or name it in the option data_inputs) so no "
                    "engine is built for its first values.", names)
        self._params = tuple(i for i in self._params if i not in volatile)
        for i in volatile:
            del self._volatile[i]
        return True

    def _unversioned(self, inputs: Sequence[TensorRef]) -> dict[int, int]:
        return {i: self._runtime.checksum(inputs[i]) for i in self._params
                if inputs[i].version == 0}

    def digest(self, inputs: Sequence[TensorRef]) -> str:
        """A digest of the parameter values now; remembers samples of the mutable ones and
        checksums of those without a version."""
        self._samples = {i: self._runtime.sample(inputs[i]) for i in self._mutable
                         if i in self._params}
        self._checksums = self._unversioned(inputs)
        key = self._memo_key(inputs)
        with _memo_lock:
            found = _memo.get(key)
            if found is not None:
                _memo.move_to_end(key)
                return found
        h = hashlib.sha256()
        for i in self._params:
            h.update(np.ascontiguousarray(self._runtime.to_host(inputs[i])).data)  # no copy
        digest = h.hexdigest()
        with _memo_lock:
            _memo[key] = digest
            while len(_memo) > _MEMO_SIZE:
                _memo.popitem(last=False)
        return digest

    def _memo_key(self, inputs: Sequence[TensorRef]) -> tuple[object, ...]:
        # Addresses and versions alone repeat when a freed model's memory is reused by another
        # of the same layout (MXNet's pooled allocator, versions counted the same way); a sample
        # of every parameter's values tells such models apart. Versions of mutable inputs are
        # left out: Gluon bumps them at every forward. An input without a version is known by
        # its checksum.
        stable = tuple(("crc", self._checksums[i]) if i in self._checksums
                       else (inputs[i].ptr, inputs[i].version)
                       for i in self._params if i not in self._mutable)
        sample = hashlib.sha256(b"".join(self._runtime.sample(inputs[i]) for i in self._params))
        return self._structure, self._params, stable, sample.digest()
