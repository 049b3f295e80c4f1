"""MXNet's dtype codes, one table for the whole package.

The codes are mshadow's type flags, as the extension API (lib_api.h ``MXDType``) passes them and
as MXNet writes them into ``__ext_dtype__`` graph attributes.
"""
from __future__ import annotations

import numpy as np

MX_DTYPES: dict[int, str] = {0: "float32", 1: "float64", 2: "float16", 3: "uint8", 4: "int32",
                             5: "int8", 6: "int64", 7: "bool", 12: "bfloat16"}


def name_of(code: int) -> str | None:
    """The dtype's name, or None for a code MXNet 1.9 does not define."""
    return MX_DTYPES.get(code)


def dtype_of(code: int) -> np.dtype:
    """The numpy dtype of an MXNet dtype code; bfloat16 has none."""
    name = MX_DTYPES.get(code)
    if name is None or name == "bfloat16":
        raise TypeError(f"MXNet dtype {name or f'code {code}'} is not supported by the TensorRT "
                        "backend")
    return np.dtype(name)
