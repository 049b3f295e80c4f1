"""Every zoo net (tests/zoo.py) through the three user paths, against unfused MXNet.

(a) ``sym.optimize_for('TensorRT', args, aux, ctx=mx.cpu())`` (no shape_dict, as MXNet 1.9's own
    TensorRT test calls it), then ``bind`` with every array, and ``simple_bind`` + forward as
    MXNet 1.9's test does (the values given to optimize_for are what must run);
(b) the flag: ``MXNET_USE_TENSORRT=1``, ``simple_bind(..., shared_buffer=all_params)`` and
    ``copy_params_from``, as MXNet 1.3's TensorRT tests do;
(c) Gluon: ``hybridize()`` under the flag, and ``hybridize(backend='TensorRT')``.

Every output must be within 1e-4 relative error (max|out - ref| / max|ref|) of unfused MXNet;
where a deep net's float32 rounding alone exceeds that, float64 MXNet arbitrates
(`nms_check.arbitrate`);
outputs picked by NMS are compared as `nms_check` explains. Each case prints one ``ZOO`` line
(error, subgraphs, converted share); with ``MXTRT_ZOO_REPORT=path`` set it also appends it to
that file as JSON. Nets marked slow in the table run with ``-m slow``; CI runs the others.
"""
from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Callable

import mxnet as mx
import numpy as np
import pytest

import mxtrt_backend
import nms_check
import zoo
from helpers import rel_err

TOLERANCE = zoo.TOLERANCE


@dataclass
class Case:
    net: zoo.ZooNet
    exported: zoo.Exported
    data: dict[str, np.ndarray]
    ref: list[np.ndarray]
    _exact: list[np.ndarray] | None = None

    def exact(self) -> list[np.ndarray]:
        """Float64 outputs, computed on first use (seconds to a minute: no MKLDNN kernels)."""
        if self._exact is None:
            self._exact = zoo.reference_float64(self.exported, self.data)
        return self._exact

    def default(self) -> list[np.ndarray]:
        """MXNet's default CPU path (MKLDNN-fused): a second float32 opinion."""
        with zoo.flag("0"):
            return zoo.bind_forward(self.exported.sym, self.exported.copy().params, self.data)


@dataclass
class Outcome:
    """What one path produced: its outputs and the partitioned symbol that computed them."""

    outputs: list[np.ndarray]
    partitioned: mx.sym.Symbol
    params: dict[str, mx.nd.NDArray]
    report: mxtrt_backend.PartitionReport


@dataclass
class Record:
    net: str
    path: str
    rel_err: list[float]
    subgraphs: int
    converted: int
    compute: int
    refused: dict[str, int] = field(default_factory=dict)
    note: str = ""  # how a difference above the tolerance was judged


_cases: dict[str, Case] = {}


def _case(net: zoo.ZooNet) -> Case:
    """Export and reference outputs, once per net per session (the paths share them)."""
    if net.name not in _cases:
        _cases.clear()  # one net at a time: the slow ones hold hundreds of MB
        exported = zoo.export(net)
        data = zoo.random_inputs(net)
        _cases[net.name] = Case(net, exported, data, zoo.reference(exported, data))
    return _cases[net.name]


def _partitioned_count(sym: mx.sym.Symbol) -> int:
    return len(zoo.op_nodes(sym, mxtrt_backend.OP_NAME))


def _record(case: Case, path: str, outcome: Outcome, errors: list[float], note: str) -> None:
    report = outcome.report
    refused = Counter(f"{r.op}: {r.reason}" for r in report.refused)
    record = Record(case.net.name, path, errors, _partitioned_count(outcome.partitioned),
                    report.converted_nodes, report.compute_nodes, dict(refused), note)
    print(f"\nZOO {record.net} {path}: rel_err={max(errors):.2e} subgraphs={record.subgraphs} "
          f"converted={record.converted}/{record.compute} {note}")
    _report(asdict(record))


def _report(entry: dict) -> None:
    target = os.environ.get("MXTRT_ZOO_REPORT")
    if target:
        with open(target, "a") as f:
            f.write(json.dumps(entry) + "\n")


def _check(case: Case, path: str, outcome: Outcome) -> None:
    assert len(outcome.outputs) == len(case.ref)
    for out, ref in zip(outcome.outputs, case.ref):
        assert out.shape == ref.shape
    errors = [rel_err(out, ref) for out, ref in zip(outcome.outputs, case.ref)]
    if max(errors) >= TOLERANCE and case.net.nms_ops:
        # Post-NMS picks may differ where scores tie: explain it from the pre-NMS tensors.
        explanation = nms_check.explain(case.net.nms_ops, case.exported, case.data,
                                        outcome.partitioned, outcome.params, case.ref,
                                        outcome.outputs)
        nms = explanation.summary()
        _record(case, path, outcome, errors, nms)
        assert explanation.ok, nms
        return
    if max(errors) >= TOLERANCE:
        ok, verdict = zoo.arbitrate(outcome.outputs, case.ref, case.exact, case.default)
        if verdict:
            _record(case, path, outcome, errors, verdict)
            assert ok, (errors, verdict)
            return
    _record(case, path, outcome, errors, "")
    assert max(errors) < TOLERANCE, errors


# --- The paths ---------------------------------------------------------------------------------


def _optimize_for(case: Case) -> tuple[mx.sym.Symbol, zoo.Exported]:
    exported = case.exported.copy()
    with zoo.flag("0"):
        trt = exported.sym.optimize_for("TensorRT", exported.args, exported.aux, ctx=mx.cpu())
    return trt, exported


def path_optimize_for_bind(case: Case) -> Outcome:
    trt, exported = _optimize_for(case)
    report = mxtrt_backend.last_report()
    with zoo.flag("0"):
        outputs = zoo.bind_forward(trt, exported.params, case.data)
    return Outcome(outputs, trt, exported.params, report)


def path_optimize_for_simple_bind(case: Case) -> Outcome:
    trt, exported = _optimize_for(case)
    report = mxtrt_backend.last_report()
    with zoo.flag("0"):
        ex = trt.simple_bind(mx.cpu(), grad_req="null", force_rebind=True,
                             **{k: v.shape for k, v in case.data.items()})
        ex.forward(is_train=False, **{k: mx.nd.array(v) for k, v in case.data.items()})
        outputs = [o.asnumpy() for o in ex.outputs]
    return Outcome(outputs, trt, exported.params, report)


def path_flag_simple_bind(case: Case) -> Outcome:
    exported = case.exported.copy()
    all_params = exported.params
    with zoo.flag("1"):
        ex = exported.sym.simple_bind(mx.cpu(), grad_req="null", shared_buffer=all_params,
                                      **{k: v.shape for k, v in case.data.items()})
        report = mxtrt_backend.last_report()
        ex.copy_params_from(exported.args, exported.aux, allow_extra_params=True)
        ex.forward(is_train=False, **{k: mx.nd.array(v) for k, v in case.data.items()})
        outputs = [o.asnumpy() for o in ex.outputs]
        partitioned = ex.get_optimized_symbol()
    return Outcome(outputs, partitioned, all_params, report)


def _gluon(case: Case, hybridize: Callable[[mx.gluon.HybridBlock], None], flag: str) -> Outcome:
    block = zoo.build(case.net)
    with zoo.flag(flag):
        hybridize(block)
        outputs = zoo.gluon_forward(block, case.data)
    report = mxtrt_backend.last_report()
    params = {p.name: p.data() for p in block.collect_params().values()}
    return Outcome(outputs, block._cached_graph[1], params, report)


def path_gluon_flag_hybridize(case: Case) -> Outcome:
    return _gluon(case, lambda block: block.hybridize(), "1")


def path_gluon_backend(case: Case) -> Outcome:
    return _gluon(case, lambda block: block.hybridize(backend="TensorRT"), "0")


PATHS: dict[str, Callable[[Case], Outcome]] = {
    "optimize_for+bind": path_optimize_for_bind,
    "optimize_for+simple_bind": path_optimize_for_simple_bind,
    "flag+simple_bind": path_flag_simple_bind,
    "gluon flag+hybridize()": path_gluon_flag_hybridize,
    "gluon hybridize(backend)": path_gluon_backend,
}


def _params(nets: tuple[zoo.ZooNet, ...]) -> list:
    return [pytest.param(net, path, id=f"{net.name}-{path}",
                         marks=[pytest.mark.slow] if net.slow else [])
            for net in nets for path in PATHS]


@pytest.mark.parametrize("net,path", _params(zoo.NETS))
def test_zoo_net_matches_unfused_mxnet(net: zoo.ZooNet, path: str) -> None:
    case = _case(net)
    try:
        outcome = PATHS[path](case)
    except Exception as err:
        _report({"net": net.name, "path": path, "error": f"{type(err).__name__}: "
                 f"{str(err).strip().splitlines()[0] if str(err).strip() else ''}"})
        raise
    _check(case, path, outcome)
