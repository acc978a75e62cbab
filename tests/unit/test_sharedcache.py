"""The shared tier's pure parts: envelopes (format, kind, size cap, digest check) and the
breaker, stepped by a fake clock. The I/O is tested against a real redis-server
(tests/integration/test_sharedcache_redis.py)."""

from __future__ import annotations

import hashlib

import pytest

from policy import sharedlink
from policy.sharedcache import Invalid, decode, decode_content, decode_tag, encode

BODY = b'{"config":{}}'
DIGEST = "sha256:" + hashlib.sha256(BODY).hexdigest()


def test_round_trip() -> None:
    value = encode("blob", {"t": "x"}, BODY)
    assert value.startswith(b"ipc1 ")
    assert decode(value, "blob", max_bytes=1000) == ({"k": "blob", "t": "x"}, BODY)
    assert decode_content(value, DIGEST, "blob", max_bytes=1000) == ("x", BODY)


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (None, "not a string value"),
        ("text", "not a string value"),
        (b"x" * 2000, "over the entry size cap"),
        (b"ipc2 {}\n", "not this format"),
        (b"ipc1 {}", "no header line"),
        (b"ipc1 {]\n", "header is not JSON"),
        (b"ipc1 \xff\n", "header is not JSON"),
        (b'ipc1 {"k":"tag"}\n', "not an entry of this kind"),
        (b"ipc1 7\n", "not an entry of this kind"),
    ],
)
def test_decode_refuses(value: object, why: str) -> None:
    with pytest.raises(Invalid, match=why):
        decode(value, "blob", max_bytes=1000)


def test_content_must_match_its_digest() -> None:
    with pytest.raises(Invalid, match="does not match its digest"):
        decode_content(encode("blob", {}, BODY + b" "), DIGEST, "blob", max_bytes=1000)


def test_tag_age_and_skew() -> None:
    header = {"digest": DIGEST, "mediaType": "m", "size": 3}
    assert decode_tag(encode("tag", header | {"at": 990.0}), now=1000.0, max_bytes=999).age == 10
    # a replica's clock a little ahead: age 0, not negative
    assert decode_tag(encode("tag", header | {"at": 1030.0}), now=1000.0, max_bytes=999).age == 0
    with pytest.raises(Invalid, match="bad time"):
        decode_tag(encode("tag", header | {"at": 1000.0 + 3600}), now=1000.0, max_bytes=999)


def test_breaker_opens_after_consecutive_failures_then_probes_once() -> None:
    now = [0.0]
    breaker = sharedlink._Breaker(2, 5.0, lambda: now[0])
    breaker.failure()
    assert breaker.admit() and breaker.failing and not breaker.open
    breaker.failure()
    assert breaker.open and not breaker.admit()
    now[0] = 5.0
    assert breaker.admit()  # the probe
    assert not breaker.admit()  # one at a time
    breaker.failure()
    assert breaker.open and not breaker.admit()
    now[0] = 10.0
    assert breaker.admit()
    breaker.success()
    assert not breaker.failing and breaker.admit() and breaker.admit()
