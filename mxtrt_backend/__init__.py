"""mxtrt: the TensorRT subgraph backend for Apache MXNet 1.9, as a plugin.

``import mxtrt_backend`` loads the extension library, which registers the subgraph backend
``TensorRT`` and its op ``_TensorRT``; then ``sym.optimize_for('TensorRT', ...)`` works.
"""
from __future__ import annotations

import logging

from . import activation, callbacks, compat
from .config import Options, OptionError
from .convert import load
from .engine.calibration import register as calibration_data
from .extension import library_path
from .partition import PartitionReport, last_report
from .report import inspect

__version__ = "0.1.0"
__all__ = ["Options", "OptionError", "PartitionReport", "BACKEND", "OP_NAME", "last_report",
           "calibration_data", "load", "inspect"]

BACKEND = activation.BACKEND
OP_NAME = activation.OP_NAME

logging.getLogger("mxtrt").addHandler(logging.NullHandler())

callbacks.install(library_path())
activation.install()  # optimize_for, MXNET_USE_TENSORRT for bind/simple_bind, Gluon hybridize
compat.install()  # mx.contrib.tensorrt (MXNet 1.3/1.5), get_backend_symbol('TensorRT')
