"""mxtrt: the TensorRT subgraph backend for Apache MXNet 1.9, as a plugin.

``import mxtrt_backend`` loads the extension library, which registers the subgraph backend
``TensorRT`` and its op ``_TensorRT``; then ``sym.optimize_for('TensorRT', ...)`` works.
"""
from __future__ import annotations

import logging

from . import op as _op
from .config import Options, OptionError
from .extension import library_path
from .partition import PartitionReport

__version__ = "0.1.0"
__all__ = ["Options", "OptionError", "PartitionReport", "BACKEND", "OP_NAME", "last_report"]

BACKEND = "TensorRT"
OP_NAME = "_TensorRT"

logging.getLogger("mxtrt").addHandler(logging.NullHandler())

_op.install(library_path())


def last_report() -> PartitionReport:
    """What the most recent partitioning in this process converted and refused."""
    from . import partition

    return partition.last_report
