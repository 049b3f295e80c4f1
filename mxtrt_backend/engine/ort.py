"""ONNX Runtime: the runtime of CPU contexts.

Its serialized engine is the ONNX model itself with parameters as initializers: a session is
cheap to create from it, and ONNX Runtime's optimised graphs are not portable across builds.
Inputs and outputs are bound to MXNet's buffers by address (IOBinding), so nothing is copied.
"""
from __future__ import annotations

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

    def run(self, inputs: Sequence[TensorRef], outputs: Sequence[TensorRef], stream: int) -> None:
        # A session may run from several threads at once, an IOBinding may not: one per call.
        binding = self._session.io_binding()
        for name, t in zip(self._inputs, inputs):
            binding.bind_input(name, "cpu", 0, t.dtype, list(t.shape), t.ptr)
        for name, t in zip(self._outputs, outputs):
            binding.bind_output(name, "cpu", 0, t.dtype, list(t.shape), t.ptr)
        self._session.run_with_iobinding(binding)


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
