"""`export-triton`: a Triton model repository that a stock Triton container serves.

When the partitioner puts the whole graph into one `_TensorRT` subgraph, the repository needs
no mxtrt at serving time: the subgraph's ONNX (parameters baked in, batch dimension symbolic)
is checked against MXNet with ONNX Runtime at two batch sizes, then written as

* CPU: ``REPO/<name>/1/model.onnx``, ``backend: "onnxruntime"``;
* GPU: ``REPO/<name>/1/model.plan``, a TensorRT engine over ``batch_range="1,max,max"`` built
  here, on the GPU model it will serve on, ``platform: "tensorrt_plan"``.

Otherwise (or when that check or TensorRT fails, logged with the reason) it is a Python-backend
model running MXNet + mxtrt, the same `Predictor` as `serve` (``mxtrt_backend.triton_python``);
its ``requirements.txt`` says what the serving image must have. ``config.pbtxt`` is written from
Triton's own ``ModelConfig`` protobuf (shipped with tritonclient), so it always parses.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from . import activation, config, convert, export
from .predictor import (TENSORRT_OP, Model, ServeError, Signature, engine_options, load_model,
                        signature)
from .serve import ModelSettings, model_arguments, model_settings, require, triton_name

log = logging.getLogger("mxtrt")

VERSION = "1"
# The tolerance of the ONNX check, as in the tests (fp32 against plain MXNet).
TOLERANCE = 1e-4
PYTHON_MODEL = "from mxtrt_backend.triton_python import TritonPythonModel  # noqa: F401\n"
# What a Python-backend model needs in the image serving it, besides Triton's Python backend.
REQUIREMENTS = ("mxnet==1.9.1  # mxnet-cu112==1.9.1 for GPU instances\nnumpy==1.23.5\n"
                "onnx==1.16.2\nonnxruntime==1.19.2\nfilelock>=3.12\n"
                "mxtrt  # this package, built against the mxnet above "
                "(pip install --no-build-isolation)\n# GPU instances: tensorrt>=10\n")

_TYPES = {np.dtype(np.float32): "TYPE_FP32", np.dtype(np.float16): "TYPE_FP16",
          np.dtype(np.float64): "TYPE_FP64", np.dtype(np.int8): "TYPE_INT8",
          np.dtype(np.uint8): "TYPE_UINT8", np.dtype(np.int32): "TYPE_INT32",
          np.dtype(np.int64): "TYPE_INT64"}


@dataclass(frozen=True)
class Exported:
    folder: Path  # REPO/<name>
    kind: str  # "onnxruntime", "tensorrt_plan" or "python"
    reason: str = ""  # why a Python-backend model, when it is one


class NotWhole(Exception):
    """The model cannot be one ONNX model / TensorRT engine; the message says why."""


# --- config.pbtxt ---------------------------------------------------------------------------

def model_config(name: str, sig: Signature, settings: ModelSettings, kind: str,
                 filename: str, parameters: dict[str, str] | None = None) -> Any:
    """Triton's ModelConfig message for this model."""
    from tritonclient.grpc import model_config_pb2 as pb

    cfg = pb.ModelConfig(name=name, max_batch_size=settings.max_batch,
                         default_model_filename=filename)
    if kind == "tensorrt_plan":
        cfg.platform = kind
    else:
        cfg.backend = kind
    for specs, field in ((sig.inputs, cfg.input), (sig.outputs, cfg.output)):
        for t in specs:
            if t.dtype not in _TYPES:
                raise ServeError(f"tensor '{t.name}' is {t.dtype}, which Triton configs here do "
                                 f"not cover ({', '.join(map(str, _TYPES))})")
            entry = field.add(name=t.name, data_type=pb.DataType.Value(_TYPES[t.dtype]))
            entry.dims.extend(t.shape)
    cfg.dynamic_batching.max_queue_delay_microseconds = settings.max_queue_delay_us
    devices = settings.devices
    group = cfg.instance_group.add()
    if devices[0].kind == "gpu":
        gpus = sorted({d.id for d in devices})
        group.kind = pb.ModelInstanceGroup.KIND_GPU
        group.count = len(devices) // len(gpus)  # Triton's count is per GPU
        group.gpus.extend(gpus)
    else:
        group.kind = pb.ModelInstanceGroup.KIND_CPU
        group.count = len(devices)
    for key, value in (parameters or {}).items():
        cfg.parameters[key].string_value = value
    return cfg


def write_config(folder: Path, cfg: Any) -> Path:
    from google.protobuf import text_format

    path = folder / "config.pbtxt"
    path.write_text(text_format.MessageToString(cfg))
    return path


# --- the whole graph as one ONNX model --------------------------------------------------------

def _whole_subgraph(model: Model, sig: Signature, max_batch: int,
                    options: dict[str, str]) -> tuple[dict, Any]:
    """The one `_TensorRT` node that computes every output, and the partitioned symbol."""
    import mxnet as mx

    if model.partitioned:
        sym = model.sym
    else:
        shapes = {t.name: (max_batch, *t.shape) for t in (*sig.inputs, *sig.labels)}
        sym = model.sym.optimize_for(activation.BACKEND, model.args, model.aux, ctx=mx.cpu(),
                                     shape_dict=shapes, **options)
    graph = json.loads(sym.tojson())
    compute = [n for n in graph["nodes"] if n["op"] != "null"]
    subgraphs = [n for n in compute if n["op"] == TENSORRT_OP]
    if len(compute) != 1 or len(subgraphs) != 1:
        left = sorted({n["op"] for n in compute if n["op"] != TENSORRT_OP})
        raise NotWhole(f"the partitioner made {len(subgraphs)} TensorRT subgraph(s) and left "
                       f"{len(compute) - len(subgraphs)} node(s) to MXNet ({', '.join(left)}); "
                       "`python -m mxtrt_backend inspect` says why")
    return subgraphs[0], sym


def whole_onnx(model: Model, sig: Signature, max_batch: int,
               options: dict[str, str]) -> tuple[bytes, list[str]]:
    """The whole model as one ONNX graph: parameters baked in, dim 0 of the data inputs
    symbolic, tensors named as in MXNet (as `serve` names them). Returns it with the names of
    its data inputs. Raises NotWhole when the graph does not convert whole."""
    from .engine.trt import with_dynamic_batch

    node, sym = _whole_subgraph(model, sig, max_batch, options)
    graph = json.loads(sym.tojson())
    subgraph = export.Subgraph.from_json(json.dumps(node["subgraphs"][0]))
    # The partitioner renames the subgraph's inputs ("data" -> "data0").
    outer = dict(zip(subgraph.input_names, subgraph.source_names))
    values = {n: v.asnumpy() for n, v in (*model.args.items(), *model.aux.items())}
    values.update({t.name: np.zeros((1, *t.shape), t.dtype) for t in sig.labels})
    data = {t.name: t for t in sig.inputs}
    shapes, dtypes = [], []
    for inner in subgraph.input_names:
        name = outer[inner]
        if name in data:
            shapes.append((1, *data[name].shape))
            dtypes.append(data[name].dtype)
        elif name in values:
            shapes.append(values[name].shape)
            dtypes.append(values[name].dtype)
        else:
            raise NotWhole(f"subgraph input '{name}' is neither a model input nor a parameter")
    try:
        structure = export.export_structure(subgraph, shapes, dtypes)
        baked = export.bake_params(structure, {inner: values[name] for inner, name in outer.items()
                                               if name not in data})
    except export.ExportError as err:
        raise NotWhole(str(err)) from None
    # Main-graph head i is output `index` of the subgraph: name it as MXNet names head i.
    renames = {baked.output_names[index]: t.name
               for (_, index, _), t in zip(graph["heads"], sig.outputs)}
    renames.update({inner: outer[inner] for inner in baked.input_names})
    names = [outer[inner] for inner in baked.input_names]
    return with_dynamic_batch(_renamed(baked.onnx_bytes, renames), names), names


def _renamed(onnx_bytes: bytes, renames: dict[str, str]) -> bytes:
    """The graph with these inputs and outputs renamed wherever they are used, and without the
    constants no node reads (labels such as softmax_label, which inference ignores)."""
    import onnx

    model = onnx.load_from_string(onnx_bytes)
    for node in model.graph.node:
        node.output[:] = [renames.get(o, o) for o in node.output]
        node.input[:] = [renames.get(i, i) for i in node.input]
    for value in (*model.graph.input, *model.graph.output):
        value.name = renames.get(value.name, value.name)
    used = {name for node in model.graph.node for name in node.input}
    kept = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def check_onnx(onnx_bytes: bytes, model: Model, sig: Signature, max_batch: int) -> None:
    """ONNX Runtime on the exported graph against MXNet (unfused), at batch 1 and max: a batch
    size baked into the graph (e.g. in a Reshape) shows here, before anything is written."""
    import mxnet as mx
    import onnxruntime as ort

    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    rng = np.random.RandomState(0)
    for batch in sorted({1, max_batch}):
        inputs = {t.name: rng.uniform(-1, 1, (batch, *t.shape)).astype(t.dtype)
                  for t in sig.inputs}
        labels = {t.name: mx.nd.zeros((batch, *t.shape), dtype=t.dtype) for t in sig.labels}
        with activation.subgraph_backend("NONE"):
            ex = model.sym.bind(mx.cpu(), dict(model.args, **labels, **{
                n: mx.nd.array(v, dtype=v.dtype) for n, v in inputs.items()}),
                aux_states=model.aux, grad_req="null")
        ex.forward(is_train=False)
        try:
            got = session.run([t.name for t in sig.outputs], inputs)
        except Exception as err:  # noqa: BLE001 - ONNX Runtime raises its own types
            raise NotWhole(f"ONNX Runtime cannot run the exported graph at batch {batch}: "
                           f"{str(err).splitlines()[0]}") from None
        for t, out, ref in zip(sig.outputs, got, (o.asnumpy() for o in ex.outputs)):
            if out.shape != ref.shape:
                raise NotWhole(f"the exported graph's output '{t.name}' is {list(out.shape)} at "
                               f"batch {batch}, MXNet's {list(ref.shape)}")
            rel = float(np.abs(out - ref).max() / max(float(np.abs(ref).max()), 1e-12))
            if not rel < TOLERANCE:
                raise NotWhole(f"the exported graph's output '{t.name}' differs from MXNet at "
                               f"batch {batch} (relative error {rel:.2g})")


def tensorrt_plan(onnx_bytes: bytes, input_names: Sequence[str], options: dict[str, str],
                  device_id: int) -> bytes:
    """A TensorRT engine for the GPU it is built on, over the options' batch_range."""
    from .engine import cuda, trt, trt_build

    runtime = trt.TrtRuntime()
    cuda.set_device(device_id)
    try:
        return trt_build.build_plan(onnx_bytes, input_names, config.resolve(options),
                                    runtime.version(), runtime.device_key(device_id))
    except trt_build.TrtBuildError as err:
        raise NotWhole(str(err)) from None


# --- the repository -----------------------------------------------------------------------------

def _python_model(folder: Path, model: Model, source: str, epoch: int | None) -> None:
    """The model files next to model.py, in `convert`'s layout (``model-symbol.json``,
    ``model-0000.params`` and, for a converted folder, its ``engines/``)."""
    version = folder / VERSION
    if model.partitioned:
        shutil.copytree(source, version, dirs_exist_ok=True)
    else:
        assert epoch is not None
        shutil.copy2(f"{source}-symbol.json", version / f"{convert.PREFIX}-symbol.json")
        shutil.copy2(f"{source}-{epoch:04d}.params",
                     version / f"{convert.PREFIX}-{convert.EPOCH:04d}.params")
    (version / "model.py").write_text(PYTHON_MODEL)
    (folder / "requirements.txt").write_text(REQUIREMENTS)


def export_repository(settings: ModelSettings, out: Path) -> Exported:
    model = load_model(settings.source, settings.epoch)
    sig = signature(model, settings.shapes)
    name = triton_name(settings.name or model.name)
    folder = out / name
    device, device_id = settings.devices[0].kind, settings.devices[0].id
    if any(d.kind != device for d in settings.devices):
        raise ServeError("instances must all be on CPU or all on GPUs")
    options = engine_options(device, settings.max_batch, settings.options)
    if folder.exists():
        if not (folder / "config.pbtxt").is_file():
            raise ServeError(f"{folder} exists and is no Triton model folder; it is left as it "
                             "is: choose another --out or --name")
        shutil.rmtree(folder)  # an earlier export of this model: replaced whole
    (folder / VERSION).mkdir(parents=True)
    try:
        onnx_bytes, data_names = whole_onnx(model, sig, settings.max_batch, settings.options)
        check_onnx(onnx_bytes, model, sig, settings.max_batch)
        if device == "gpu":
            kind, filename = "tensorrt_plan", "model.plan"
            payload = tensorrt_plan(onnx_bytes, data_names, options, device_id)
        else:
            kind, filename, payload = "onnxruntime", "model.onnx", onnx_bytes
        (folder / VERSION / filename).write_bytes(payload)
        write_config(folder, model_config(name, sig, settings, kind, filename))
        return Exported(folder, kind)
    except NotWhole as why:
        log.warning("mxtrt: %s becomes a Python-backend model (MXNet + mxtrt at serving time): "
                    "%s", name, why)
        _python_model(folder, model, settings.source, settings.epoch)
        write_config(folder, model_config(
            name, sig, settings, "python", "model.py",
            {"mxtrt_options": json.dumps(options, sort_keys=True),
             "mxtrt_converted": "1" if model.partitioned else "0"}))
        return Exported(folder, "python", str(why))


def arguments(parser: argparse.ArgumentParser) -> None:
    model_arguments(parser)
    parser.add_argument("--out", required=True, type=Path, help="model repository folder")


def run(args: argparse.Namespace) -> int:
    require("tritonclient")
    exported = export_repository(model_settings(args), args.out)
    files = sorted(str(p.relative_to(args.out)) for p in exported.folder.rglob("*") if p.is_file())
    print(f"{exported.folder}: {exported.kind} model ({', '.join(files)})")
    if exported.reason:
        print(f"  a Python-backend model because {exported.reason}; the serving image needs "
              f"{exported.folder / 'requirements.txt'}")
    return 0
