"""mxtrt: the TensorRT subgraph backend for Apache MXNet 1.9, as a plugin.

``import mxtrt_backend`` loads the extension library, which registers the subgraph backend
``TensorRT`` and its op ``_TensorRT``; then ``sym.optimize_for('TensorRT', ...)`` works.
"""
from __future__ import annotations

import logging

from . import activation
from . import op as _op
from .config import Options, OptionError
from .convert import load
from .engine.calibration import register as calibration_data
from .extension import library_path
from .partition import PartitionReport
from .report import inspect

__version__ = "0.1.0"
__all__ = ["Options", "OptionError", "PartitionReport", "BACKEND", "OP_NAME", "last_report",
           "calibration_data", "load", "inspect"]

BACKEND = activation.BACKEND
OP_NAME = "_TensorRT"

logging.getLogger("mxtrt").addHandler(logging.NullHandler())

_op.install(library_path())
activation.install()  # MXNET_USE_TENSORRT for bind/simple_bind and Gluon hybridize


def last_report() -> PartitionReport:
    """What the most recent partitioning in this process converted and refused."""
    from . import partition

    return partition.last_report
