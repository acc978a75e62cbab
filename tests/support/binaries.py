"""Finding the real servers the tests run (the registry, redis-server): a missing one skips
its tests loudly on a developer machine, and fails them under CI (`CI=true`), where nothing
real may be silently skipped."""

from __future__ import annotations

import os
import shutil

import pytest


def find(path: str, name: str) -> str | None:
    """`path` when it is executable, else `name` on the PATH, else None."""
    if os.access(path, os.X_OK):
        return path
    return shutil.which(name)


def require(path: str, name: str, missing: str) -> str:
    """The binary; skip with `missing` when it is not installed (fail when CI=true)."""
    binary = find(path, name)
    if binary is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(missing)
        pytest.skip(missing)
    return binary
