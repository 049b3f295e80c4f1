"""Fixtures every test gets. Shared helpers live in helpers.py."""
from __future__ import annotations

import pytest

import mxtrt_backend  # noqa: F401  registers the TensorRT backend


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Each test gets its own engine cache folder and an empty in-memory cache."""
    from mxtrt_backend.engine.cache import ENGINES

    folder = tmp_path / "engine-cache"
    monkeypatch.setenv("MXTRT_CACHE_DIR", str(folder))
    ENGINES.clear_memory()
    yield folder
    ENGINES.clear_memory()
