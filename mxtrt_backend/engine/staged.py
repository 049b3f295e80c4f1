"""ONNX Runtime on the host for a GPU context: the fallback when TensorRT cannot serve it.

The op hands over device pointers; ONNX Runtime's CPU provider reads host memory. Inputs are
copied to the host and outputs back, after waiting for the device, so this is correct but slow:
it only runs when TensorRT is missing or rejected a subgraph, which is logged as a WARNING.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..config import Options
from . import Blob, DeviceRuntime, Engine, FileRegion, TensorRef, cuda
from .ort import OrtRuntime


class StagedEngine(Engine):
    def __init__(self, host_engine: Engine) -> None:
        self._host = host_engine

    def run(self, inputs: Sequence[TensorRef], outputs: Sequence[TensorRef], stream: int) -> None:
        host_in = [cuda.copy_to_host(t) for t in inputs]
        host_out = [np.empty(t.shape, dtype=t.dtype) for t in outputs]
        self._host.run([_ref(a) for a in host_in], [_ref(a) for a in host_out], 0)
        for ref, value in zip(outputs, host_out):
            cuda.copy_to_device(ref.ptr, value)
        # A copy from pageable memory may still be in flight when cudaMemcpy returns, and MXNet's
        # next op on its own stream would not wait for it.
        cuda.synchronize()


def _ref(array: np.ndarray) -> TensorRef:
    return TensorRef(array.ctypes.data, tuple(array.shape), array.dtype)


class StagedOrtRuntime(DeviceRuntime):
    name = "onnxruntime-staged"
    title = "ONNX Runtime on the host, copying inputs and outputs (slow)"

    def __init__(self) -> None:
        self._ort = OrtRuntime(portable=True)

    def version(self) -> str:
        return self._ort.version()

    def device_key(self, device_id: int) -> str:
        return "host"  # the engine runs on the CPU whatever the GPU

    def build(self, onnx_bytes: bytes, input_names: Sequence[str], output_names: Sequence[str],
              options: Options, device_id: int) -> bytes:
        return self._ort.build(onnx_bytes, input_names, output_names, options, device_id)

    def load(self, blob: Blob, input_names: Sequence[str], output_names: Sequence[str],
             options: Options, device_id: int, region: FileRegion | None = None) -> Engine:
        return StagedEngine(self._ort.load(blob, input_names, output_names, options, device_id,
                                           region))
