"""Loading the C++ extension library and wiring its callbacks to Python.

The library (``ops/mxtrt_ops.cc``) registers the `TensorRT` partitioner and the `_TensorRT` op
with MXNet and forwards every call to the callbacks installed here. Each callback converts raw
C arguments to Python values, calls the policy in ``partition``/``op``, and turns any Python
exception into an MXNet error that carries the message and a traceback summary.
"""
from __future__ import annotations

import atexit
import ctypes
import glob
import os
import threading
import traceback
from ctypes import POINTER, c_char_p, c_int, c_int64, c_uint64, c_void_p
from typing import Any, Callable, Sequence

_HERE = os.path.dirname(os.path.abspath(__file__))

_c_str_array = POINTER(c_char_p)
_c_int_array = POINTER(c_int)
_c_int64_array = POINTER(c_int64)
_c_ptr_array = POINTER(c_void_p)

SUPPORTED = ctypes.CFUNCTYPE(c_int, c_char_p, c_int, _c_str_array, _c_str_array, c_int,
                             _c_int_array, _c_int_array, c_void_p)
REVIEW = ctypes.CFUNCTYPE(c_int, c_char_p, c_int, c_int, _c_str_array, _c_str_array, c_int,
                          _c_str_array, _c_ptr_array, _c_int64_array, _c_int_array, _c_int_array,
                          c_void_p)
CREATE = ctypes.CFUNCTYPE(c_int64, c_int, _c_str_array, _c_str_array, c_int, c_int, c_int,
                          _c_int64_array, _c_int_array, _c_int_array, c_void_p)
FORWARD = ctypes.CFUNCTYPE(c_int, c_int64, c_int, _c_ptr_array, _c_int64_array, _c_int_array,
                           _c_int_array, POINTER(c_uint64), c_int, _c_ptr_array, _c_int64_array,
                           _c_int_array, _c_int_array, c_int, c_int, c_void_p, c_void_p)
DESTROY = ctypes.CFUNCTYPE(None, c_int64)

# MXNet's device codes in the extension API.
DEVICE_NAMES = {1: "cpu", 2: "gpu"}


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


def strings(array: Any, count: int) -> list[str]:
    return [array[i].decode() for i in range(count)]


def key_values(keys: Any, vals: Any, count: int) -> dict[str, str]:
    return dict(zip(strings(keys, count), strings(vals, count)))


def shapes(flat: Any, ndims: Any, count: int) -> list[tuple[int, ...]]:
    # Slices of ctypes arrays are read in C, one call each: this runs on every forward.
    ranks = ndims[:count]
    dims = flat[:sum(ranks)]
    out, pos = [], 0
    for n in ranks:
        out.append(tuple(dims[pos:pos + n]))
        pos += n
    return out


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

    def reply_error(self, reply: int, err: BaseException) -> None:
        self.lib.mxtrt_reply_error(reply, error_text(err).encode())

    def reply_accept(self, reply: int, accept: bool) -> None:
        self.lib.mxtrt_reply_accept(reply, int(accept))

    def reply_attrs(self, reply: int, attrs: dict[str, str]) -> None:
        for key, value in attrs.items():
            self.lib.mxtrt_reply_attr(reply, key.encode(), value.encode())


def ids_from_flags(flags: Sequence[bool], json_to_id: Any, ids: Any) -> None:
    """MXNet's ids: -1 marks a node any subgraph may take; the default (-2) leaves it out."""
    for json_index, flag in enumerate(flags):
        if flag:
            ids[json_to_id[json_index]] = -1
