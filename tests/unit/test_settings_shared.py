"""`cache.shared` in the settings file: defaults, the password from a file or the
environment, and every bad value a located error (file:line:column, the key's path)."""

from __future__ import annotations

from pathlib import Path

import pytest

from policy.errors import SettingsErrors
from policy.settings import SharedCacheSettings, parse_settings


def parse(text: str, tmp_path: Path, env: dict[str, str] | None = None) -> SharedCacheSettings:
    settings = parse_settings(text, str(tmp_path / "s.yaml"), base=tmp_path, env=env or {})
    assert settings.shared_cache is not None
    return settings.shared_cache


def test_without_it_there_is_no_shared_tier(tmp_path: Path) -> None:
    assert parse_settings("cache: {tagTTL: 1m}\n", "s.yaml").shared_cache is None


def test_defaults(tmp_path: Path) -> None:
    shared = parse("cache: {shared: {url: 'redis://redis:6379/0'}}\n", tmp_path)
    assert shared == SharedCacheSettings(url="redis://redis:6379/0")
    assert (shared.connect_timeout, shared.command_timeout) == (0.05, 0.025)
    assert (shared.lease, shared.break_after, shared.break_for) == (3.0, 3, 5.0)
    assert shared.max_entry_bytes == 4 * 1024 * 1024
    assert shared.key_prefix == "image-policy:"


def test_every_key(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("s3cret\n")
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    text = """\
cache:
  shared:
    url: rediss://redis.image-policy.svc:6380/2
    username: image-policy
    passwordFile: pw
    ca: ca.pem
    keyPrefix: "prod:"
    timeouts: {connect: 20ms, command: 5ms}
    lease: 1500ms
    contentTTL: 1d
    maxEntryBytes: 1MiB
    maxConnections: 8
    breakAfter: 2
    breakFor: 30s
"""
    shared = parse(text, tmp_path)
    assert shared == SharedCacheSettings(
        url="rediss://redis.image-policy.svc:6380/2",
        username="image-policy",
        password="s3cret",
        ca=str(tmp_path / "ca.pem"),
        key_prefix="prod:",
        connect_timeout=0.02,
        command_timeout=0.005,
        lease=1.5,
        content_ttl=86400.0,
        max_entry_bytes=1024 * 1024,
        max_connections=8,
        break_after=2,
        break_for=30.0,
    )
    assert "s3cret" not in repr(shared)


def test_password_from_the_environment(tmp_path: Path) -> None:
    text = "cache: {shared: {url: 'redis://r', passwordEnv: REDIS_PASSWORD}}\n"
    assert parse(text, tmp_path, env={"REDIS_PASSWORD": "from-env"}).password == "from-env"


BAD = [
    ("cache: {shared: {}}\n", "1:17: cache.shared: missing required key"),
    ("cache: {shared: redis://r}\n", "1:17: cache.shared: expected a mapping"),
    ("cache:\n  shared:\n    url: 'tcp://r'\n", "3:10: cache.shared.url: expected a redis://"),
    ("cache: {shared: {url: 'redis://'}}\n", "cache.shared.url: expected a host in the URL"),
    ("cache: {shared: {url: 'redis://r/db'}}\n", "cache.shared.url: expected a database number"),
    (
        "cache: {shared: {url: 'redis://r', passwordEnv: NOPE}}\n",
        "cache.shared.passwordEnv: environment variable NOPE is not set",
    ),
    (
        "cache: {shared: {url: 'redis://r', passwordEnv: A, passwordFile: b}}\n",
        "cache.shared: give passwordFile or passwordEnv, not both",
    ),
    (
        "cache: {shared: {url: 'redis://r', passwordFile: missing}}\n",
        "cache.shared.passwordFile: cannot read password file: No such file or directory",
    ),
    ("cache: {shared: {url: 'redis://r', ca: nope.pem}}\n", "cache.shared.ca: no such file"),
    (
        "cache: {shared: {url: 'redis://r', timeouts: {command: 0s}}}\n",
        "cache.shared.timeouts.command: expected a positive duration",
    ),
    (
        "cache: {shared: {url: 'redis://r', timeouts: {read: 1s}}}\n",
        "cache.shared.timeouts: unknown key (expected one of: connect, command)",
    ),
    ("cache: {shared: {url: 'redis://r', lease: soon}}\n", "cache.shared.lease: expected a"),
    (
        "cache: {shared: {url: 'redis://r', maxEntryBytes: -1}}\n",
        "cache.shared.maxEntryBytes: expected a positive size like 4MiB",
    ),
    (
        "cache: {shared: {url: 'redis://r', maxConnections: 0}}\n",
        "cache.shared.maxConnections: expected a positive integer",
    ),
    (
        "cache: {shared: {url: 'redis://r', breakAfter: many}}\n",
        "cache.shared.breakAfter: expected a positive integer",
    ),
    ("cache: {shared: {url: 'redis://r', keyPrefix: ''}}\n", "cache.shared.keyPrefix: expected"),
    ("cache: {shared: {url: 'redis://r', lesae: 1s}}\n", 'unknown key (did you mean "lease"?)'),
]


@pytest.mark.parametrize(("text", "expected"), BAD, ids=[e for _, e in BAD])
def test_bad_values_are_located_errors(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(SettingsErrors) as info:
        parse_settings(text, str(tmp_path / "s.yaml"), base=tmp_path, env={})
    message = str(info.value)
    assert expected in message
    assert message.startswith(f"{tmp_path / 's.yaml'}:")
