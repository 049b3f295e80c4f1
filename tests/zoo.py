"""The real-model zoo: GluonCV and GluonNLP nets with random weights, as a declarative table.

Each `ZooNet` says how to build the net (no downloads: `pretrained=False`, and
`pretrained_base=False` where the constructor takes it), its inputs, its kind and whether it is
slow on this machine's CPU. The functions below build a net deterministically, export it to a
symbol and parameters, and compute reference outputs with unfused MXNet (MXNet 1.9.1's default
CPU fusion is not ground truth: it is wrong on some nets).
"""
from __future__ import annotations

import json
import os
import tempfile
import warnings
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Iterator, Mapping, Sequence

import mxnet as mx
import numpy as np

from helpers import rel_err, unfused
from mxtrt_backend.config import variable

KINDS = ("classification", "detection", "segmentation", "pose", "nlp")
FLAG = "MXNET_USE_TENSORRT"

# Outputs must be within TOLERANCE (rel_err) of unfused MXNet. Between it and ROUNDING_CEILING,
# `arbitrate` decides whether the difference is float32 rounding; above it, it never is.
TOLERANCE = 1e-4
ROUNDING_CEILING = 1e-2
# How far from float64 the backend may be, in units of MXNet's own float32 distance from it.
FLOAT32_NOISE_FACTOR = 2.0


@dataclass(frozen=True)
class Input:
    name: str
    shape: tuple[int, ...]
    # Values: uniform floats in [-1, 1), or integers in [low, high) (token ids, types, lengths).
    high: int = 0
    low: int = 0


@dataclass(frozen=True)
class ZooNet:
    name: str
    kind: str
    make: Callable[[], mx.gluon.HybridBlock]  # the net with uninitialised parameters
    inputs: tuple[Input, ...]
    slow: bool = False
    # Ops whose outputs are NMS picks: compared through their inputs where picks differ.
    nms_ops: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"{self.name}: kind {self.kind!r} is not one of {KINDS}")

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {i.name: i.shape for i in self.inputs}


def _gluoncv(name: str, **kwargs: Any) -> Callable[[], mx.gluon.HybridBlock]:
    def make() -> mx.gluon.HybridBlock:
        from gluoncv import model_zoo

        return model_zoo.get_model(name, pretrained=False, **kwargs)

    return make


def _bert() -> mx.gluon.HybridBlock:
    """A small BERT (2 layers, 128 units, 4 heads) with pooler, as GluonNLP builds BERT-base."""
    from gluonnlp.model import BERTEncoder, BERTModel

    encoder = BERTEncoder(num_layers=2, units=128, hidden_size=512, max_length=64, num_heads=4,
                          dropout=0.0)
    return BERTModel(encoder, vocab_size=1000, token_type_vocab_size=2, units=128, embed_size=128,
                     use_pooler=True, use_decoder=False, use_classifier=False)


def _image(*hw: int) -> tuple[Input, ...]:
    return (Input("data", (1, 3, *hw)),)


_NO_BASE = {"pretrained_base": False}
_NMS = ("_contrib_box_nms",)

NETS: tuple[ZooNet, ...] = (
    ZooNet("resnet50_v1d", "classification", _gluoncv("resnet50_v1d"), _image(224, 224)),
    ZooNet("resnest50", "classification", _gluoncv("resnest50"), _image(224, 224), slow=True),
    ZooNet("se_resnext50_32x4d", "classification", _gluoncv("se_resnext50_32x4d"),
           _image(224, 224), slow=True),
    ZooNet("mobilenetv3_large", "classification", _gluoncv("mobilenetv3_large"), _image(224, 224)),
    ZooNet("shufflenet_v2", "classification", _gluoncv("shufflenet_v2"), _image(224, 224)),
    ZooNet("xception", "classification", _gluoncv("xception"), _image(299, 299), slow=True),
    ZooNet("hrnet_w18_small_v1_c", "classification", _gluoncv("hrnet_w18_small_v1_c"),
           _image(224, 224), slow=True),
    ZooNet("nasnet_4_1056", "classification", _gluoncv("nasnet_4_1056"), _image(224, 224),
           slow=True),
    ZooNet("ssd_300_vgg16_atrous_voc", "detection",
           _gluoncv("ssd_300_vgg16_atrous_voc", **_NO_BASE), _image(300, 300), slow=True,
           nms_ops=_NMS),
    ZooNet("ssd_512_mobilenet1.0_voc", "detection",
           _gluoncv("ssd_512_mobilenet1.0_voc", **_NO_BASE), _image(512, 512), nms_ops=_NMS),
    ZooNet("yolo3_darknet53_voc", "detection", _gluoncv("yolo3_darknet53_voc", **_NO_BASE),
           _image(320, 320), slow=True, nms_ops=_NMS),
    ZooNet("yolo3_mobilenet1.0_voc", "detection", _gluoncv("yolo3_mobilenet1.0_voc", **_NO_BASE),
           _image(320, 320), nms_ops=_NMS),
    ZooNet("faster_rcnn_resnet50_v1b_voc", "detection",
           _gluoncv("faster_rcnn_resnet50_v1b_voc", **_NO_BASE), _image(320, 320), slow=True,
           nms_ops=_NMS),
    ZooNet("center_net_resnet18_v1b_voc", "detection",
           _gluoncv("center_net_resnet18_v1b_voc", **_NO_BASE), _image(256, 256)),
    # The segmentation heads resize to a size fixed at construction (crop_size).
    ZooNet("fcn_resnet50_voc", "segmentation",
           _gluoncv("fcn_resnet50_voc", crop_size=240, **_NO_BASE), _image(240, 240), slow=True),
    ZooNet("psp_resnet50_ade", "segmentation",
           _gluoncv("psp_resnet50_ade", crop_size=120, **_NO_BASE), _image(120, 120)),
    ZooNet("deeplab_resnet50_ade", "segmentation",
           _gluoncv("deeplab_resnet50_ade", crop_size=240, **_NO_BASE), _image(240, 240),
           slow=True),
    ZooNet("simple_pose_resnet18_v1b", "pose",
           _gluoncv("simple_pose_resnet18_v1b", **_NO_BASE), _image(256, 192)),
    ZooNet("bert_2_128_4", "nlp", _bert,
           # Gluon's export names a block's inputs data0, data1...: token ids, token types and
           # valid lengths.
           (Input("data0", (2, 16), high=1000), Input("data1", (2, 16), high=2),
            Input("data2", (2,), high=17, low=1))),
)

BY_NAME = {net.name: net for net in NETS}


# --- Building, data, export ----------------------------------------------------------------


def _fan_in(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape[1:])) if len(shape) > 1 else int(shape[0])


def _value(name: str, shape: tuple[int, ...], rng: np.random.RandomState) -> np.ndarray:
    """A deterministic random value for a parameter, by its role (read from its name).

    Affine terms of the normalisations are drawn away from their defaults (gamma 1, beta 0) so
    that a backend which dropped or swapped them would be seen; statistics are set by
    `_calibrate_batchnorm`."""
    if name.endswith(("running_var", "moving_var", "gamma")):
        return rng.uniform(0.5, 1.5, shape)
    if name.endswith(("running_mean", "moving_mean", "beta", "bias")):
        return rng.uniform(-0.2, 0.2, shape)
    if name.endswith("alpha"):  # PReLU slopes
        return rng.uniform(0.1, 0.3, shape)
    return rng.normal(0.0, np.sqrt(2.0 / _fan_in(shape)), shape)


def _blocks(block: mx.gluon.Block) -> Iterator[mx.gluon.Block]:
    yield block
    for child in block._children.values():
        yield from _blocks(child)


_WEIGHTED_LAYERS = (mx.gluon.nn.conv_layers._Conv, mx.gluon.nn.Dense)


def _calibrate_batchnorm(block: mx.gluon.HybridBlock, data: Mapping[str, np.ndarray]) -> None:
    """Set every BatchNorm's moving statistics to the statistics of its own input on ``data``,
    layer after layer, as training would leave them. Random statistics let activations grow
    through the layers (to inf in YOLOv3, NaN in Faster R-CNN), which would make a relative
    error meaningless."""
    def set_statistics(bn: mx.gluon.nn.BatchNorm, inputs: Sequence[mx.nd.NDArray]) -> None:
        x = inputs[0]
        axis = bn._kwargs["axis"] % x.ndim
        axes = tuple(a for a in range(x.ndim) if a != axis)
        mean = x.mean(axis=axes)
        bn.running_mean.set_data(mean)
        bn.running_var.set_data(mx.nd.square(x - mean.reshape(
            [-1 if a == axis else 1 for a in range(x.ndim)])).mean(axis=axes))

    hooks = [bn.register_forward_pre_hook(set_statistics) for bn in _blocks(block)
             if isinstance(bn, mx.gluon.nn.BatchNorm)]
    try:
        gluon_forward(block, data)
    finally:
        for hook in hooks:
            hook.detach()


def _normalise_layers(block: mx.gluon.HybridBlock, data: Mapping[str, np.ndarray]) -> None:
    """Scale each convolution's and dense layer's weight so that its output has unit standard
    deviation on ``data``, layer after layer, in one forward (data-dependent initialisation).
    Without it, nets without BatchNorm grow their activations with depth: SSD-300's boxes
    reached 4e22, which makes a relative error meaningless."""
    busy: list[bool] = []

    def rescale(layer: mx.gluon.HybridBlock, inputs: Sequence[mx.nd.NDArray]) -> None:
        if busy:  # the probing call below
            return
        busy.append(True)
        try:
            std = float(layer(*inputs).asnumpy().std())
        finally:
            busy.pop()
        if std > 1e-6:
            layer.weight.set_data(layer.weight.data() / std)

    layers = [b for b in _blocks(block) if isinstance(b, _WEIGHTED_LAYERS)]
    hooks = [layer.register_forward_pre_hook(rescale) for layer in layers]
    try:
        gluon_forward(block, data)
    finally:
        for hook in hooks:
            hook.detach()


def build(net: ZooNet, seed: int = 0) -> mx.gluon.HybridBlock:
    """The net with deterministic random parameters, not hybridized.

    Shapes come from one imperative forward of zeros (deferred initialisation); values are then
    drawn from numpy's seeded generator parameter by parameter, weights scaled and BatchNorm
    statistics set on seeded random inputs, as training would leave them. Constants (anchors,
    offsets of the detection heads) keep the values the net computed for them."""
    block = net.make()
    with warnings.catch_warnings():  # segmentation nets initialise their heads themselves
        warnings.filterwarnings("ignore", "Parameter .* is already initialized")
        block.initialize()
    gluon_forward(block, zero_inputs(net))
    rng = np.random.RandomState(seed)
    # Registration order, not names: some nets (mobilenetv3) name blocks from global counters,
    # which differ from one build to the next.
    for name, param in block.collect_params().items():
        if isinstance(param, mx.gluon.Constant):
            continue
        param.set_data(mx.nd.array(_value(name, param.shape, rng), dtype=param.dtype))
    calibration = random_inputs(net, seed + 1000)
    _normalise_layers(block, calibration)
    _calibrate_batchnorm(block, calibration)
    return block


def zero_inputs(net: ZooNet) -> dict[str, np.ndarray]:
    return {i.name: (np.full(i.shape, i.high - 1, "f") if i.high else np.zeros(i.shape, "f"))
            for i in net.inputs}


def random_inputs(net: ZooNet, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.RandomState(seed)
    return {i.name: (rng.randint(i.low, i.high, i.shape)
                     if i.high else rng.uniform(-1, 1, i.shape)).astype("f")
            for i in net.inputs}


def _flat(out: Any) -> list[mx.nd.NDArray]:
    if isinstance(out, (list, tuple)):
        return [a for o in out for a in _flat(o)]
    return [out]


def gluon_forward(block: mx.gluon.HybridBlock, data: Mapping[str, np.ndarray]
                  ) -> list[np.ndarray]:
    """Call a (possibly hybridized) block on the inputs, in the table's order; flat outputs."""
    return [o.asnumpy() for o in _flat(block(*[mx.nd.array(v) for v in data.values()]))]


@dataclass
class Exported:
    """A net as a Module checkpoint holds it: symbol, argument and auxiliary parameters."""

    sym: mx.sym.Symbol
    args: dict[str, mx.nd.NDArray]
    aux: dict[str, mx.nd.NDArray]

    @property
    def params(self) -> dict[str, mx.nd.NDArray]:
        return dict(self.args, **self.aux)

    def copy(self) -> "Exported":
        """Fresh parameter arrays: MXNet's MKLDNN ops rewrite the layout of the arrays they
        read, so each path gets its own."""
        return Exported(self.sym, {k: v.copy() for k, v in self.args.items()},
                        {k: v.copy() for k, v in self.aux.items()})


def flag(value: str | None) -> ContextManager[None]:
    """MXNET_USE_TENSORRT set to ``value`` (None: unset) for the duration of the block."""
    return variable(FLAG, value)


def export(net: ZooNet, seed: int = 0) -> Exported:
    """Build the net and export it as a user would (`HybridBlock.export`, then
    `mx.model.load_checkpoint`), with the backend's flag off."""
    block = build(net, seed)
    with flag("0"), tempfile.TemporaryDirectory(prefix="mxtrt-zoo-") as folder:
        block.hybridize()
        gluon_forward(block, zero_inputs(net))
        prefix = os.path.join(folder, "net")
        block.export(prefix, 0)
        sym, args, aux = mx.model.load_checkpoint(prefix, 0)
    return Exported(sym, args, aux)


def bind_forward(sym: mx.sym.Symbol, params: Mapping[str, mx.nd.NDArray],
                 data: Mapping[str, np.ndarray], simple: bool = False) -> list[np.ndarray]:
    """One inference forward of a symbol: ``bind`` with every array given, or ``simple_bind``
    followed by ``copy_params_from``."""
    args = set(sym.list_arguments())
    if simple:
        ex = sym.simple_bind(mx.cpu(), grad_req="null", **{k: v.shape for k, v in data.items()})
        ex.copy_params_from({k: v for k, v in params.items() if k in args},
                            {k: v for k, v in params.items() if k not in args},
                            allow_extra_params=True)
    else:
        ex = sym.bind(mx.cpu(), dict({k: v for k, v in params.items() if k in args},
                                     **{k: mx.nd.array(v) for k, v in data.items()}),
                      aux_states={k: v for k, v in params.items() if k not in args},
                      grad_req="null")
    ex.forward(is_train=False, **{k: mx.nd.array(v) for k, v in data.items()})
    return [o.asnumpy() for o in ex.outputs]


def reference(exported: Exported, data: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """Outputs of unfused MXNet: a symbol bind with MXNET_SUBGRAPH_BACKEND=NONE and the
    backend's flag off, on its own copy of the parameters."""
    with flag("0"), unfused():
        return bind_forward(exported.sym, exported.copy().params, data)


def reference_float64(exported: Exported, data: Mapping[str, np.ndarray],
                      sym: mx.sym.Symbol | None = None) -> list[np.ndarray]:
    """The same in float64 (unfused MXNet, without MKLDNN, which has no float64 kernels): the
    arbiter when two float32 results differ by more than the tolerance. ``sym``: the exported
    symbol with other outputs, if given."""
    sym = exported.sym if sym is None else sym
    params = {k: v.astype("float64") for k, v in exported.params.items()}
    arg_names = set(sym.list_arguments())
    with flag("0"), unfused():
        ex = sym.simple_bind(mx.cpu(), grad_req="null",
                                      type_dict={k: "float64" for k in [*params, *data]},
                                      **{k: v.shape for k, v in data.items()})
        ex.copy_params_from({k: v for k, v in params.items() if k in arg_names},
                            {k: v for k, v in params.items() if k not in arg_names})
        ex.forward(is_train=False, **{k: mx.nd.array(v, dtype="float64") for k, v in data.items()})
        return [o.asnumpy() for o in ex.outputs]


def op_nodes(sym: mx.sym.Symbol, op: str) -> list[dict]:
    return [n for n in json.loads(sym.tojson())["nodes"] if n["op"] == op]


# --- Comparing ------------------------------------------------------------------------------


def arbitrate(outs: Sequence[np.ndarray], refs: Sequence[np.ndarray],
              exact: Callable[[], Sequence[np.ndarray]],
              default: Callable[[], Sequence[np.ndarray]]) -> tuple[bool, str]:
    """Is a difference between 1e-4 and 1e-2 from unfused MXNet float32 rounding?

    Deep nets (dilated ResNets, ResNeSt, Faster R-CNN's RPN) differ from one float32
    computation to another by more than 1e-4. float64 MXNet (``exact``) arbitrates: the backend
    may be FLOAT32_NOISE_FACTOR times as far from it as MXNet's own float32. Where MXNet cannot
    compute the net in float64 (ops that make float32 constants), MXNet's default CPU path
    (``default``, MKLDNN-fused) gives the float32 spread instead."""
    err = max(rel_err(o, r) for o, r in zip(outs, refs))
    if err >= ROUNDING_CEILING:
        return False, ""
    try:
        truth = exact()
    except (mx.MXNetError, RuntimeError) as failure:
        spread = max(rel_err(d, r) for d, r in zip(default(), refs))
        reason = str(failure).strip().splitlines()[-1][:80]
        return (spread < ROUNDING_CEILING and err <= max(TOLERANCE, FLOAT32_NOISE_FACTOR * spread),
                f"no float64 ({reason}); MXNet's default path differs from unfused by "
                f"{spread:.1e}")
    noise = max(rel_err(r, t) for r, t in zip(refs, truth))
    to_exact = max(rel_err(o, t) for o, t in zip(outs, truth))
    return (to_exact <= max(TOLERANCE, FLOAT32_NOISE_FACTOR * noise),
            f"float64 arbiter: backend {to_exact:.1e}, MXNet float32 {noise:.1e}")
