"""Settings shared by every test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.redisserver import RunningRedis, start_redis


@pytest.fixture(autouse=True)
def _isolated_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every test gets its own XDG cache directory, so the CLI's disk cache never carries
    answers from one test (or a developer's own runs) into another."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RunningRedis]:
    """A real redis-server of its own on a free loopback port (skipped loudly when
    redis-server is missing, failed under CI=true)."""
    running = start_redis(tmp_path / "redis")
    try:
        yield running
    finally:
        running.stop()
