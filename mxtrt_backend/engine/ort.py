"""ONNX Runtime: the runtime of CPU contexts.

Its serialized engine is the ONNX model itself with parameters as initializers: a session is
cheap to create from it, and ONNX Runtime's optimised graphs are not portable across builds.
Inputs and outputs are bound to MXNet's buffers by address (IOBinding), so nothing is copied.
"""
from __future__ import annotations

import threading
from typing import Sequence

import onnxruntime as ort

from ..config import Options
from . import Engine, Runtime, TensorRef


class OrtEngine(Engine):
    def __init__(self, session: ort.InferenceSession, input_names: Sequence[str],
                 output_names: Sequence[str]) -> None:
        self._session = session
        self._inputs = tuple(input_names)
        self._outputs = tuple(output_names)
        # MXNet usually hands the same buffers call after call: keep the last binding. A session
        # may run from several threads at once, a binding may not, hence the lock.
        self._lock = threading.Lock()
        self._bound: tuple[tuple[object, ...], ort.IOBinding] | None = None

    def _bind(self, inputs: Sequence[TensorRef], outputs: Sequence[TensorRef]) -> ort.IOBinding:
        binding = self._session.io_binding()
        for name, t in zip(self._inputs, inputs):
            binding.bind_input(name, "cpu", 0, t.dtype, list(t.shape), t.ptr)
        for name, t in zip(self._outputs, outputs):
            binding.bind_output(name, "cpu", 0, t.dtype, list(t.shape), t.ptr)
        return binding

    def run(self, inputs: Sequence[TensorRef], outputs: Sequence[TensorRef], stream: int) -> None:
        if not self._lock.acquire(blocking=False):  # another thread runs the kept binding
            self._session.run_with_iobinding(self._bind(inputs, outputs))
            return
        try:
            key = tuple((t.ptr, t.shape, t.dtype) for t in (*inputs, *outputs))
            if self._bound is None or self._bound[0] != key:
                self._bound = (key, self._bind(inputs, outputs))
            self._session.run_with_iobinding(self._bound[1])
        finally:
            self._lock.release()


class OrtRuntime(Runtime):
    name = "onnxruntime"

    def version(self) -> str:
        return ort.__version__

    def build(self, onnx_bytes: bytes, input_names: Sequence[str], output_names: Sequence[str],
              options: Options, device_id: int) -> bytes:
        # Creating the session here validates the graph before it is cached.
        self._session(onnx_bytes, options)
        return onnx_bytes

    def load(self, blob: bytes, input_names: Sequence[str], output_names: Sequence[str],
             options: Options, device_id: int) -> Engine:
        return OrtEngine(self._session(blob, options), input_names, output_names)

    @staticmethod
    def _session(onnx_bytes: bytes, options: Options) -> ort.InferenceSession:
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = options.ort_threads
        so.log_severity_level = 3
        return ort.InferenceSession(onnx_bytes, so, providers=["CPUExecutionProvider"])
