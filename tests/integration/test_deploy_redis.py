"""The shared-cache overlay's redis.conf, run by the real redis-server as the overlay runs it
(the password written to the included file): it needs the password, refuses the commands it
disables, holds maxmemory, and serves everything the shared tier uses (leases' EVAL too)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from policy.deadline import Deadline
from policy.sharedcache import SharedCache, connect
from tests.support.redisserver import require_redis
from tests.support.registry import free_port

CONF = Path(__file__).resolve().parents[2] / "deploy/kubernetes/overlays/shared-cache/redis.conf"
PASSWORD = "overlay-password-5b1d"


@pytest.fixture
def overlay_redis(tmp_path: Path) -> Iterator[int]:
    binary = require_redis()
    (tmp_path / "auth.conf").write_text(f"requirepass {PASSWORD}\n")
    port = free_port()
    text = CONF.read_text().replace("/run/redis/auth.conf", str(tmp_path / "auth.conf"))
    text = text.replace("port 6379", f"port {port}").replace("bind * -::*", "bind 127.0.0.1")
    (tmp_path / "redis.conf").write_text(text + f"\ndir {tmp_path}\n")
    process = subprocess.Popen(
        [binary, str(tmp_path / "redis.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    try:
        end = time.monotonic() + 10
        while True:
            assert process.poll() is None, "redis-server refused the overlay's redis.conf"
            try:
                with redis.Redis(port=port, password=PASSWORD, socket_timeout=1) as client:
                    client.ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < end
                time.sleep(0.02)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=5)


def test_the_overlay_redis_conf_serves_the_shared_tier(overlay_redis: int) -> None:
    with (
        redis.Redis(port=overlay_redis, socket_timeout=1) as anonymous,
        pytest.raises(redis.AuthenticationError),
    ):
        anonymous.get("x")
    with redis.Redis(port=overlay_redis, password=PASSWORD, socket_timeout=1) as client:
        assert client.info("memory")["maxmemory"] == 256 * 1024 * 1024
        assert client.info("memory")["maxmemory_policy"] == "allkeys-lru"
        for command in ("FLUSHALL", "CONFIG GET *", "KEYS *", "FLUSHDB"):
            with pytest.raises(redis.ResponseError, match="unknown command"):
                client.execute_command(command)
    shared = SharedCache(connect(f"redis://127.0.0.1:{overlay_redis}/0", password=PASSWORD))
    with shared.holding():
        assert shared.turn("blob:x", lambda: None, Deadline(1)) is None  # SET NX PX
    shared.put_tier("acme", "official", "docker hub", ttl=60)
    assert shared.get_tier("acme") == ("official", "docker hub")
    stats = shared.stats()
    assert stats.errors == 0 and stats.leases == 1
    with redis.Redis(port=overlay_redis, password=PASSWORD, socket_timeout=1) as client:
        assert client.exists("image-policy:lease:blob:x") == 0  # released by EVAL
