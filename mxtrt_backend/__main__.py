"""`python -m mxtrt_backend`: the command line (mxtrt_backend.cli)."""
from __future__ import annotations

import sys

from .cli import main

__all__ = ["main"]  # also the `mxtrt` console script

if __name__ == "__main__":
    sys.exit(main())
