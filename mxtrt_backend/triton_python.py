"""The Python-backend model `export-triton` writes for graphs that do not convert whole.

Triton's Python backend loads ``REPO/<name>/1/model.py``, which imports ``TritonPythonModel``
from here: each model instance builds a `Predictor` (the same as `serve`'s) on the device
Triton gives it, from the files next to model.py and the settings in config.pbtxt. The dynamic
batcher hands ``execute`` several requests; they run as one batch.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from . import convert
from .predictor import Predictor, load_model, signature


class TritonPythonModel:
    """Triton's Python-backend interface (``initialize``, ``execute``, ``finalize``)."""

    predictor: Predictor

    def initialize(self, args: dict[str, str]) -> None:
        import mxnet as mx

        cfg = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in cfg.get("parameters", {}).items()}
        folder = Path(args["model_repository"]) / args["model_version"]
        if params.get("mxtrt_converted") == "1":
            model = load_model(str(folder), None)
        else:
            model = load_model(str(folder / convert.PREFIX), convert.EPOCH)
        sig = signature(model, {i["name"]: tuple(int(d) for d in i["dims"])
                                for i in cfg["input"]})
        ctx = (mx.gpu(int(args["model_instance_device_id"]))
               if args["model_instance_kind"] == "GPU" else mx.cpu())
        self.predictor = Predictor(model, sig, ctx, int(cfg["max_batch_size"]),
                                   json.loads(params.get("mxtrt_options", "{}")))

    def execute(self, requests: list[Any]) -> list[Any]:
        import triton_python_backend_utils as pb_utils

        sig = self.predictor.signature
        per_request = [{t.name: pb_utils.get_input_tensor_by_name(r, t.name).as_numpy()
                        for t in sig.inputs} for r in requests]
        sizes = [len(inputs[sig.inputs[0].name]) for inputs in per_request]
        try:
            outputs = self.predictor({t.name: np.concatenate([i[t.name] for i in per_request])
                                      for t in sig.inputs})
        except Exception as err:  # noqa: BLE001 - every request gets the error, Triton goes on
            return [pb_utils.InferenceResponse(error=pb_utils.TritonError(str(err)))
                    for _ in requests]
        responses, start = [], 0
        for size in sizes:
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor(t.name, np.ascontiguousarray(outputs[t.name][start:start + size]))
                for t in sig.outputs]))
            start += size
        return responses

    def finalize(self) -> None:
        del self.predictor
