"""Builds the extension library against the lib_api.h/lib_api.cc of the installed mxnet.

MXNet's extension API is compiled into each extension, so the library must be built with the
exact mxnet (CPU or cu112) it will be loaded into; hence `--no-build-isolation`.
"""
from __future__ import annotations

import os
import sys

from setuptools import Extension, setup


def mxnet_dir() -> str:
    try:
        import mxnet
    except ImportError:
        sys.exit("mxtrt: install mxnet first (pip install mxnet==1.9.1 or mxnet-cu112), then "
                 "install mxtrt with `pip install --no-build-isolation .` so the build sees it")
    return os.path.dirname(mxnet.__file__)


MX = mxnet_dir()

setup(
    ext_modules=[
        Extension(
            "mxtrt_backend.libmxtrt",
            sources=["ops/mxtrt_ops.cc", os.path.join(MX, "src", "lib_api.cc")],
            include_dirs=[os.path.join(MX, "include"), os.path.join(MX, "include", "mxnet")],
            extra_compile_args=["-std=c++17", "-O2", "-fvisibility=default"],
            language="c++",
        )
    ],
)
