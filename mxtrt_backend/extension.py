"""The C++ extension library: finding and loading it, and the C types of its calls into Python.

The library (``ops/mxtrt_ops.cc``) registers the `TensorRT` partitioner and the `_TensorRT` op
with MXNet and forwards every call to five Python callbacks (``callbacks.py``). This module knows
the C side: the structures those calls pass (``Strings``, ``Tensors``, the same layout as
``MxtrtStrings``/``MxtrtTensors`` in the C++), the callback signatures, and the reply functions
through which Python hands errors and attributes back without sharing memory ownership.
"""
from __future__ import annotations

import atexit
import ctypes
import glob
import os
import threading
import traceback
from ctypes import POINTER, Structure, c_char_p, c_int, c_int64, c_uint64, c_void_p
from typing import Callable

import numpy as np

from .dtypes import dtype_of
from .engine import TensorRef

_HERE = os.path.dirname(os.path.abspath(__file__))

# MXNet's device codes in the extension API.
DEVICE_NAMES = {1: "cpu", 2: "gpu"}


class Strings(Structure):
    """``MxtrtStrings``: key/value pairs (options, node attributes)."""

    _fields_ = [("count", c_int), ("keys", POINTER(c_char_p)), ("vals", POINTER(c_char_p))]

    def to_dict(self) -> dict[str, str]:
        count = self.count
        return {k.decode(): v.decode() for k, v in zip(self.keys[:count], self.vals[:count])}


class Tensors(Structure):
    """``MxtrtTensors``: a list of tensors; ``data``, ``versions`` and ``names`` may be null."""

    _fields_ = [("count", c_int), ("data", POINTER(c_void_p)), ("shapes", POINTER(c_int64)),
                ("ndims", POINTER(c_int)), ("dtypes", POINTER(c_int)),
                ("versions", POINTER(c_uint64)), ("names", POINTER(c_char_p))]

    def shape_list(self) -> list[tuple[int, ...]]:
        # Slices of ctypes arrays are read in C, one call each: this runs on every forward.
        ranks = self.ndims[:self.count]
        dims = self.shapes[:sum(ranks)]
        out, pos = [], 0
        for n in ranks:
            out.append(tuple(dims[pos:pos + n]))
            pos += n
        return out

    def dtype_list(self) -> list[np.dtype]:
        return [dtype_of(code) for code in self.dtypes[:self.count]]

    def name_list(self) -> list[str]:
        return [n.decode() for n in self.names[:self.count]] if self.names else []

    def refs(self) -> list[TensorRef]:
        count = self.count
        data = self.data[:count]
        versions = self.versions[:count] if self.versions else [0] * count
        return [TensorRef(ptr or 0, shape, dtype, version) for ptr, shape, dtype, version in
                zip(data, self.shape_list(), self.dtype_list(), versions)]


_strings_p = POINTER(Strings)
_tensors_p = POINTER(Tensors)

SUPPORTED = ctypes.CFUNCTYPE(c_int, c_char_p, _strings_p, c_int, POINTER(c_int), POINTER(c_int),
                             c_void_p)
REVIEW = ctypes.CFUNCTYPE(c_int, c_char_p, c_int, _strings_p, _tensors_p, c_void_p)
CREATE = ctypes.CFUNCTYPE(c_int64, _strings_p, c_int, c_int, _tensors_p, c_void_p)
FORWARD = ctypes.CFUNCTYPE(c_int, c_int64, _tensors_p, _tensors_p, c_int, c_int, c_void_p,
                           c_void_p)
DESTROY = ctypes.CFUNCTYPE(None, c_int64)


class ExtensionNotBuilt(ImportError):
    pass


def library_path() -> str:
    found = sorted(glob.glob(os.path.join(_HERE, "libmxtrt*.so")))
    if not found:
        raise ExtensionNotBuilt(
            f"mxtrt: the extension library libmxtrt*.so is missing from {_HERE}; install the package "
            "with `pip install --no-build-isolation .` (or `-e .`) after installing mxnet, which "
            "compiles it against the installed mxnet's lib_api.h")
    return found[-1]


_pinned = threading.local()


def pin_thread_state() -> None:
    """Keep this thread's Python thread state for good.

    Around each callback from a thread Python did not start (MXNet's engine workers run the
    forwards), ctypes creates a thread state and destroys it afterwards: about 30 us per call.
    One extra PyGILState_Ensure, never released, keeps the state alive across calls."""
    if not getattr(_pinned, "done", False):
        ctypes.pythonapi.PyGILState_Ensure()
        _pinned.done = True


def error_text(err: BaseException) -> str:
    frames = traceback.extract_tb(err.__traceback__)[-3:]
    where = "; ".join(f"{os.path.basename(f.filename)}:{f.lineno} in {f.name}" for f in frames)
    return f"{type(err).__name__}: {err} [python traceback: {where}]"


class Extension:
    """The loaded library with the Python callbacks installed."""

    def __init__(self, path: str, supported: Callable[..., int], review: Callable[..., int],
                 create: Callable[..., int], forward: Callable[..., int],
                 destroy: Callable[[int], None]) -> None:
        import mxnet as mx

        self.path = path
        self.lib = ctypes.CDLL(path)
        self.lib.mxtrt_reply_error.argtypes = [c_void_p, c_char_p]
        self.lib.mxtrt_reply_accept.argtypes = [c_void_p, c_int]
        self.lib.mxtrt_reply_attr.argtypes = [c_void_p, c_char_p, c_char_p]
        self.lib.mxtrt_default_layouts.argtypes = [c_void_p, c_void_p, c_int]
        from mxnet.base import _LIB

        self._layout_calls = (c_void_p * 2)(ctypes.cast(_LIB.MXNDArrayWaitToRead, c_void_p),
                                            ctypes.cast(_LIB.MXNDArrayGetData, c_void_p))
        # Kept on self: ctypes frees a trampoline once its Python object is gone.
        self._callbacks = (SUPPORTED(supported), REVIEW(review), CREATE(create),
                           FORWARD(forward), DESTROY(destroy))
        self.lib.mxtrt_set_callbacks(*self._callbacks)
        mx.library.load(path, verbose=False)
        atexit.register(self._shutdown)

    def _shutdown(self) -> None:
        """Let queued forwards finish, then cut the callbacks: MXNet destroys op states from its
        own threads, possibly while Python is finalizing. (atexit runs this before MXNet's own
        shutdown hook, which was registered earlier.)"""
        import mxnet as mx

        try:
            mx.nd.waitall()
        except mx.MXNetError:
            pass  # the failure was, or will be, reported where its result is read
        self.lib.mxtrt_clear_callbacks()

    def default_layouts(self, handles: ctypes.Array, count: int) -> None:
        """Reorder the arrays among ``handles`` (NDArray handles) that MXNet keeps in an MKLDNN
        layout back to the default layout, in place (see ``layout``)."""
        from mxnet.base import check_call

        check_call(self.lib.mxtrt_default_layouts(self._layout_calls, handles, count))

    def reply_error(self, reply: int, err: BaseException) -> None:
        self.lib.mxtrt_reply_error(reply, error_text(err).encode())

    def reply_accept(self, reply: int, accept: bool) -> None:
        self.lib.mxtrt_reply_accept(reply, int(accept))

    def reply_attrs(self, reply: int, attrs: dict[str, str]) -> None:
        for key, value in attrs.items():
            self.lib.mxtrt_reply_attr(reply, key.encode(), value.encode())
