"""TensorRT: the runtime of GPU contexts (TensorRT 10 Python API).

``TrtRuntime.build`` hands the subgraph to the builder (``trt_build``); ``load`` deserializes the
plan; ``TrtEngine.run`` enqueues it on MXNet's CUDA stream with ``set_input_shape`` +
``set_tensor_address`` + ``execute_async_v3`` and never synchronises. When TensorRT rejects a
subgraph, its fallback (ONNX Runtime on the host) serves it; the engine cache's header records
which of the two an entry holds.

``tensorrt`` is imported inside functions only: importing this module must work without it.
"""
from __future__ import annotations

import functools
import threading
from typing import TYPE_CHECKING, Sequence

from ..config import Options
from . import Blob, DeviceRuntime, Engine, FileRegion, Runtime, TensorRef, cuda
from .onnx_shapes import with_dynamic_batch
from .staged import StagedOrtRuntime
from .trt_build import build_plan, trt_logger

if TYPE_CHECKING:
    import tensorrt as trt


@functools.lru_cache(maxsize=None)
def _trt_runtime() -> trt.Runtime:
    # Kept for the process: engines must not outlive the runtime that deserialized them.
    import tensorrt as trt

    return trt.Runtime(trt_logger())


class TrtEngine(Engine):
    """A deserialized engine; one execution context per CUDA stream, because a context's
    activation memory may be used by one enqueued run at a time."""

    def __init__(self, engine: trt.ICudaEngine, input_names: Sequence[str],
                 output_names: Sequence[str]) -> None:
        self._engine = engine
        self._inputs = tuple(input_names)
        self._outputs = tuple(output_names)
        self._contexts: dict[int, tuple[trt.IExecutionContext, threading.Lock]] = {}
        self._guard = threading.Lock()

    def _context(self, stream: int) -> tuple[trt.IExecutionContext, threading.Lock]:
        with self._guard:
            found = self._contexts.get(stream)
            if found is None:
                context = self._engine.create_execution_context()
                if context is None:
                    raise RuntimeError("TensorRT could not create an execution context (out of "
                                       "GPU memory?)")
                found = self._contexts[stream] = (context, threading.Lock())
            return found

    def run(self, inputs: Sequence[TensorRef], outputs: Sequence[TensorRef], stream: int) -> None:
        context, lock = self._context(stream)
        with lock:
            for name, ref in zip(self._inputs, inputs):
                if not context.set_input_shape(name, ref.shape):
                    raise ValueError(f"input '{name}' has shape {list(ref.shape)}, outside what the "
                                     "TensorRT engine was built for (see the batch_range option)")
                context.set_tensor_address(name, ref.ptr)
            for name, ref in zip(self._outputs, outputs):
                context.set_tensor_address(name, ref.ptr)
            if not context.execute_async_v3(stream):
                raise RuntimeError("TensorRT could not enqueue the engine (see the TensorRT "
                                   "messages in the 'mxtrt' log)")


class TrtRuntime(DeviceRuntime):
    name = "tensorrt"
    title = "TensorRT on the GPU"

    def version(self) -> str:
        import tensorrt as trt

        return trt.__version__

    def device_key(self, device_id: int) -> str:
        return cuda.device_key(device_id)

    def fallback(self) -> Runtime | None:
        return StagedOrtRuntime()

    def model_key(self, onnx_bytes: bytes, data_names: Sequence[str], options: Options) -> str:
        # With batch_range one engine serves every batch in the range: ops created for other
        # batch sizes share it, unless their models differ elsewhere (a batch baked into a Reshape).
        if options.batch_range:
            onnx_bytes = with_dynamic_batch(onnx_bytes, data_names)
        return super().model_key(onnx_bytes, data_names, options)

    def build(self, onnx_bytes: bytes, input_names: Sequence[str], output_names: Sequence[str],
              options: Options, device_id: int) -> bytes:
        cuda.set_device(device_id)
        return build_plan(onnx_bytes, input_names, options, self.version(),
                          self.device_key(device_id))

    def load(self, blob: Blob, input_names: Sequence[str], output_names: Sequence[str],
             options: Options, device_id: int, region: FileRegion | None = None) -> Engine:
        cuda.set_device(device_id)
        engine = _trt_runtime().deserialize_cuda_engine(blob)
        if engine is None:
            raise RuntimeError("TensorRT could not deserialize the cached engine (built by another "
                               "TensorRT version or GPU?); clear the cache folder")
        return TrtEngine(engine, input_names, output_names)
