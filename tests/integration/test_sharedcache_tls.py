"""`rediss://` against a real redis-server serving TLS only: with the settings' `ca` the tier
works; without it (the system CAs do not know the test CA) the certificate is refused, and
that is Redis down — a miss, never an exception."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from policy import sharedcache
from policy.settings import SharedCacheSettings
from tests.support.redisserver import RunningRedis, start_redis
from tests.support.tlsca import CA

BODY = b"{}"
DIGEST = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[RunningRedis]:
    ca = CA.create(tmp_path)
    issued = ca.issue("redis.test")
    (tmp_path / "redis.crt").write_bytes(issued.cert)
    (tmp_path / "redis.key").write_bytes(issued.key)
    running = start_redis(
        tmp_path / "redis", tls=(tmp_path / "redis.crt", tmp_path / "redis.key", ca.path)
    )
    try:
        yield running
    finally:
        running.stop()


def test_rediss_with_the_settings_ca(tls_redis: RunningRedis) -> None:
    assert tls_redis.url.startswith("rediss://") and tls_redis.tls is not None
    settings = SharedCacheSettings(url=tls_redis.url, ca=str(tls_redis.tls[2]), command_timeout=1)
    shared = sharedcache.from_settings(settings)
    shared.put_blob("r.example", "a/b", DIGEST, BODY)
    assert shared.get_blob("r.example", "a/b", DIGEST) == BODY
    assert shared.state() == "ok" and shared.stats().errors == 0
    shared.close()


def test_rediss_refuses_a_certificate_it_cannot_verify(tls_redis: RunningRedis) -> None:
    settings = SharedCacheSettings(url=tls_redis.url, connect_timeout=1, command_timeout=1)
    shared = sharedcache.from_settings(settings)
    assert shared.get_blob("r.example", "a/b", DIGEST) is None
    assert shared.state() == "down" and shared.stats().errors == 1
    shared.close()


def test_plain_redis_url_to_a_tls_port_is_down_not_a_crash(tls_redis: RunningRedis) -> None:
    plain = tls_redis.url.replace("rediss://", "redis://")
    shared = sharedcache.from_settings(SharedCacheSettings(url=plain, command_timeout=0.5))
    assert shared.get_blob("r.example", "a/b", DIGEST) is None
    assert shared.state() == "down"
    shared.close()
