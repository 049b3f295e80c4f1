"""A model behind a batching server: its signature, and one instance bound on one context.

Shared by `serve` (PyTriton), the Python-backend model of `export-triton` and the benchmark, so
the three run the same code on the hot path.

Triton's dynamic batcher hands an instance batches of any size from 1 to ``max_batch_size``. An
engine is made for one shape (CPU), or for a range of batch sizes (GPU, ``batch_range``), so an
instance binds one executor per *chunk size* at start-up and runs a batch as chunks:

* GPU: every size from 1 to max, all on one TensorRT engine over ``batch_range="1,opt,max"``;
  a batch is one chunk.
* CPU (ONNX Runtime, one engine per shape): the powers of two up to max, and max. A batch runs as
  the fewest chunks of those sizes, largest first (7 = 4 + 2 + 1). On CPU the time per sample
  depends little on the batch beyond 2, so this costs 4 to 11 % on average (36 % at worst) over
  an engine per size, where padding to the next power of two costs 16 to 29 % (76 % at worst);
  and it builds log2(max) + 1 engines at start-up instead of max (resnet18_v1: each about 130 MB
  and a second or more to build). Measurements in docs/serving.md.
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from . import activation, cli, config, convert, export, partition

# MXNet's convention for the label inputs of training outputs (SoftmaxOutput's softmax_label):
# inference ignores them, so they are bound to zeros instead of being asked from clients.
LABEL_SUFFIX = "label"
TENSORRT_OP = "_TensorRT"


class ServeError(cli.CliError):
    """A model or a setting that cannot be served; the message names the fix."""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: np.dtype
    shape: tuple[int, ...]  # one sample's: without the batch dimension


@dataclass(frozen=True)
class Signature:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    labels: tuple[TensorSpec, ...] = ()  # bound to zeros, not asked from clients


@dataclass(frozen=True)
class Model:
    name: str
    sym: Any
    args: dict[str, Any]
    aux: dict[str, Any]
    partitioned: bool  # a `convert` folder: its symbol holds _TensorRT nodes already


def load_model(source: str, epoch: int | None) -> Model:
    """A checkpoint (PREFIX EPOCH), or a `convert` output folder (FOLDER, no epoch)."""
    if epoch is None:
        folder = Path(source)
        if not (folder / f"{convert.PREFIX}-symbol.json").is_file():
            raise ServeError(f"{source} is not a folder written by `convert` (no "
                             f"{convert.PREFIX}-symbol.json in it); for a checkpoint give "
                             "PREFIX EPOCH")
        sym, args, aux = convert.load(str(folder))
        return Model(folder.resolve().name, sym, args, aux, partitioned=True)
    found = cli.load_checkpoint(source, epoch)
    return Model(Path(source).name, found.symbol, found.args, found.aux, partitioned=False)


def output_names(sym: Any) -> list[str]:
    """The outputs' names as in the source model: partitioning renames a head computed inside a
    subgraph after its `_TensorRT` node ("_op0_output"); clients should not see that."""
    import mxnet as mx

    graph = json.loads(sym.tojson())
    names = sym.list_outputs()
    for i, (node_id, index, _) in enumerate(graph["heads"]):
        node = graph["nodes"][node_id]
        if node["op"] == TENSORRT_OP:
            inner = export.Subgraph.from_json(json.dumps(node["subgraphs"][0]))
            names[i] = mx.sym.load_json(inner.to_json()).list_outputs()[index]
    return names


def _data_inputs(model: Model) -> list[str]:
    return [n for n in model.sym.list_arguments() if n not in model.args and n not in model.aux]


def _named_shapes(model: Model, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """``--shape`` values by input name; an unnamed shape ("data") goes to a model's only input."""
    inputs = _data_inputs(model)
    wanted = [n for n in inputs if not n.endswith(LABEL_SUFFIX)]
    named = dict(shapes)
    if list(named) == ["data"] and "data" not in inputs and len(wanted) == 1:
        named = {wanted[0]: named["data"]}
    unknown = sorted(set(named) - set(inputs))
    if unknown:
        raise ServeError(f"the model has no input {', '.join(map(repr, unknown))}; its inputs: "
                         f"{', '.join(inputs)}")
    missing = [n for n in wanted if n not in named]
    if missing:
        raise ServeError(f"input '{missing[0]}' needs its shape per sample (without the batch): "
                         f"--shape {missing[0]}:D1,D2,...")
    return named


def signature(model: Model, shapes: Mapping[str, tuple[int, ...]]) -> Signature:
    """Inputs (per-sample shapes from ``shapes``), labels and outputs, with their dtypes, as
    MXNet infers them; every output must have the batch as its first dimension."""
    import mxnet as mx

    named = _named_shapes(model, shapes)
    inputs = _data_inputs(model)
    per_batch = []
    for batch in (1, 2):
        try:
            arg_shapes, out_shapes, _ = model.sym.infer_shape_partial(
                **{n: (batch, *s) for n, s in named.items()})
        except mx.MXNetError as err:
            raise ServeError(f"MXNet cannot infer the model's shapes from --shape "
                             f"{named}: {str(err).splitlines()[0]}") from None
        per_batch.append((dict(zip(model.sym.list_arguments(), arg_shapes)), out_shapes))
    (args1, outs1), (args2, outs2) = per_batch
    labels = {}
    for name in inputs:
        if name in named:
            continue
        one, two = args1[name], args2[name]
        if not one or 0 in one or two[0] != 2:
            raise ServeError(f"the shape of input '{name}' is unknown: give it with --shape "
                             f"{name}:D1,D2,...")
        labels[name] = tuple(one[1:])
    names = output_names(model.sym)
    for name, one, two in zip(names, outs1, outs2):
        if not one or one[0] != 1 or two[0] != 2:
            raise ServeError(f"output '{name}' (shape {list(one)} for one sample) does not have "
                             "the batch as its first dimension; a batching server cannot split it")
    known = {n: a.dtype for n, a in (*model.args.items(), *model.aux.items())}
    arg_types, out_types, _ = model.sym.infer_type_partial(**known)
    types = {n: np.dtype(t) if t is not None else np.dtype(np.float32)
             for n, t in zip(model.sym.list_arguments(), arg_types)}
    return Signature(
        inputs=tuple(TensorSpec(n, types[n], tuple(named[n])) for n in inputs if n in named),
        outputs=tuple(TensorSpec(n, np.dtype(t if t is not None else np.float32), tuple(s[1:]))
                      for n, t, s in zip(names, out_types, outs1)),
        labels=tuple(TensorSpec(n, types[n], s) for n, s in labels.items()))


def chunk_sizes(device: str, max_batch: int) -> tuple[int, ...]:
    """The batch sizes an instance binds executors (and so builds engines) for."""
    if device == "gpu":
        return tuple(range(1, max_batch + 1))
    powers = {1 << k for k in range(max_batch.bit_length()) if 1 << k <= max_batch}
    return tuple(sorted(powers | {max_batch}))


def split(batch: int, sizes: Sequence[int]) -> list[int]:
    """``batch`` as the fewest chunks of these sizes, largest first (sizes include 1)."""
    chunks = []
    for size in sorted(sizes, reverse=True):
        count, batch = divmod(batch, size)
        chunks += [size] * count
    return chunks


def engine_options(device: str, max_batch: int, options: Mapping[str, str]) -> dict[str, str]:
    """The backend options of an instance: on GPU one TensorRT engine over every batch size the
    batcher may produce (``batch_range`` = 1, max, max unless given and covering that range)."""
    merged = dict(options)
    if device != "gpu":
        return merged
    given = config.resolve(merged).batch_range
    if given is None:
        merged["batch_range"] = f"1,{max_batch},{max_batch}"
    elif given[0] != 1 or given[2] < max_batch:
        raise ServeError(f"batch_range {','.join(map(str, given))} must cover every batch the "
                         f"server forms, 1 to {max_batch}: e.g. -o batch_range=1,{max_batch},"
                         f"{max_batch}")
    return merged


def with_engine_options(sym: Any, options: Mapping[str, str]) -> Any:
    """A converted symbol whose `_TensorRT` nodes use these options too (a `convert` folder was
    partitioned with its own; the engine options, such as batch_range on GPU, are set here)."""
    import mxnet as mx

    if not options:
        return sym
    graph = json.loads(sym.tojson())
    for node in graph["nodes"]:
        if node["op"] == TENSORRT_OP:
            attrs = node["attrs"]
            merged = dict(json.loads(attrs.get(partition.ATTR_OPTIONS, "{}")), **options)
            attrs[partition.ATTR_OPTIONS] = json.dumps(merged, sort_keys=True)
    return mx.sym.load_json(json.dumps(graph))


class Predictor:
    """One model instance: executors on one context for each chunk size, engines built (or
    loaded from the cache) and run once at construction, so the first request builds nothing.

    Calls are serialised: an executor's arrays are shared state. Several instances run at once.
    """

    def __init__(self, model: Model, sig: Signature, ctx: Any, max_batch: int,
                 options: Mapping[str, str] | None = None) -> None:
        import mxnet as mx

        self.signature = sig
        self.max_batch = max_batch
        self.sizes = chunk_sizes(ctx.device_type, max_batch)
        opts = engine_options(ctx.device_type, max_batch, options or {})
        args = {n: v.as_in_context(ctx) for n, v in model.args.items()}
        aux = {n: v.as_in_context(ctx) for n, v in model.aux.items()}
        if model.partitioned:
            sym = with_engine_options(model.sym, opts)
        else:
            shape_dict = {t.name: (max_batch, *t.shape) for t in (*sig.inputs, *sig.labels)}
            sym = model.sym.optimize_for(activation.BACKEND, args, aux, ctx=ctx,
                                         shape_dict=shape_dict, **opts)
        self._executors = {}
        for size in self.sizes:  # bound without MXNet's MKLDNN fusion, as every backend symbol
            arrays = {t.name: mx.nd.zeros((size, *t.shape), ctx=ctx, dtype=t.dtype)
                      for t in (*sig.inputs, *sig.labels)}
            self._executors[size] = sym.bind(ctx, dict(args, **arrays), aux_states=aux,
                                             grad_req="null")
        self._lock = threading.Lock()
        for size in self.sizes:  # warm start: every engine now, none on the hot path
            self._run(self._executors[size])

    def _run(self, executor: Any) -> list[np.ndarray]:
        executor.forward(is_train=False)
        return [out.asnumpy() for out in executor.outputs]

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs by name for a batch of ``inputs`` (by name, batch first, 1 to max_batch)."""
        sig = self.signature
        batch = self._check(inputs)
        outputs = {t.name: np.empty((batch, *t.shape), t.dtype) for t in sig.outputs}
        start = 0
        with self._lock:
            for size in split(batch, self.sizes):
                executor = self._executors[size]
                for t in sig.inputs:
                    executor.arg_dict[t.name][:] = inputs[t.name][start:start + size]
                for t, value in zip(sig.outputs, self._run(executor)):
                    outputs[t.name][start:start + size] = value
                start += size
        return outputs

    def _check(self, inputs: Mapping[str, np.ndarray]) -> int:
        """The batch size; a request the executors cannot take is an error naming the fix
        (Triton checks the same before a request reaches us; direct callers may not)."""
        batches = set()
        for t in self.signature.inputs:
            if t.name not in inputs:
                raise ServeError(f"input '{t.name}' is missing")
            value = inputs[t.name]
            if value.dtype != t.dtype or tuple(value.shape[1:]) != t.shape:
                raise ServeError(f"input '{t.name}' is {value.dtype}{list(value.shape)}, the model "
                                 f"takes {t.dtype}[batch, {', '.join(map(str, t.shape))}]")
            batches.add(value.shape[0])
        if len(batches) != 1 or not 1 <= min(batches) <= self.max_batch:
            raise ServeError(f"inputs must share one batch size from 1 to {self.max_batch}; got "
                             f"{sorted(batches)}")
        return batches.pop()
