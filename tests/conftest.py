"""Shared test fixtures.

The data root is ``$CONVEXLIB_DATA`` (``.ci/run`` points it at ``../shared/data``); tests that need real data
use the ``data_root`` fixture and are skipped, with the reason, when it is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def _find_data_root() -> Path | None:
    env = os.environ.get("CONVEXLIB_DATA")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[1].parent / "shared" / "data")
    for c in candidates:
        if (c / "thingsvision" / "things_concepts.tsv").is_file():
            return c.resolve()
    return None


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The real data root (``../shared/data`` layout); skips the test when it is not available."""
    root = _find_data_root()
    if root is None:
        pytest.skip("real data root not found: set CONVEXLIB_DATA to a folder laid out like ../shared/data")
    return root


@pytest.fixture()
def tmp_cache(tmp_path, monkeypatch) -> Path:
    """A fresh, empty cache directory set as ``$CONVEXLIB_CACHE`` for the test."""
    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv("CONVEXLIB_CACHE", str(cache))
    return cache
