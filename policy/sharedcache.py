"""The cluster's shared cache tier on Redis (or Valkey): what one replica learned from a
registry, every replica (and CI runner) reuses (shell layer).

The in-process caches answer first, this tier second, the registry last. What it holds:
```
<prefix>manifest:<registry>/<repository>@<digest>   a manifest body and its media type
<prefix>blob:<registry>/<repository>@<digest>       a config blob
<prefix>tag:<registry>/<repository>:<tag>           {"digest", "mediaType", "size", "at"}
<prefix>missing:<kind>:<registry>/<repository>:<ref> a registry's 404, for a short while
<prefix>tier:<namespace>                            a Docker Hub namespace's tier answer
<prefix>signatures:<registry>/<repository>@<digest> the signature artifacts found for it
<prefix>attestations:<registry>/<repository>@<digest> the attestation artifacts (cosign's .att,
                                                    referrer bundles) found for it
<prefix>lease:<what is being fetched>                which replica is fetching it now
```
Every value is an envelope: `ipc1 ` (the format version), a JSON header line, then the bytes.
Each entry carries its own Redis TTL (content: `contentTTL`; a tag: as long as the resolver
remembers tags; a 404 or a tier: their own TTLs), and no entry larger than `maxEntryBytes` is
written or read (reads ask for at most that many bytes, `GETRANGE`).

Trust: content by digest is verified on every read (the body must hash to the digest in its
key): a poisoned entry is dropped and the registry asked instead. Signature artifacts are
verified (cryptographically, against the rules' keys and identities) on every decision, as
when fetched: an injected artifact verifies only if its signer really signed that digest, and
an entry saying "none found" can only deny. Tag → digest answers, 404s
and tier answers cannot be verified and are trusted for their TTL: write access to this Redis
is the power to answer for the registries. Protect it (ACL user, TLS, NetworkPolicy;
docs/operations.md). Anything unreadable — wrong Redis type, truncated, oversized, bad JSON, an
older format — is a miss (and dropped), never an error.

Redis is never in the critical path: each command is bounded by short socket timeouts, with
no retries; after `breakAfter` consecutive failures a breaker skips Redis for `breakFor`
(then one call probes it); any failure is a miss and the replica carries on with its own
cache and the registry.

Cross-replica coalescing: a replica that misses takes a short lease (`SET NX PX`) on what it
is about to fetch; another replica missing the same thing waits (polling, bounded by its
review's deadline) until the lease is released, then reads the answer. Leases are held until
the resolution that took them ends (`holding()`), so a replica that fetched a tag has also
fetched that image's config before the others look: one replica, one token, one request per
fact. A lease holder that dies leaves a lease that expires after `lease` seconds; a waiter
then takes its own.

The Redis address is operator-configured (settings), so it is not subject to the egress
policy, which governs where pod-named registries may make the webhook connect.

Here: `SharedCache` (keys, reads and writes, leases) and `from_settings`. Redis is reached
through `policy.sharedlink` (calls behind the breaker, counters, `connect`); the entries'
format is `policy.sharedformat` (pure). Their names are re-exported here.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import partial
from typing import TypeVar

import redis

from policy.deadline import Deadline
from policy.registry import media
from policy.settings import SharedCacheSettings
from policy.sharedformat import (
    CLOCK_SKEW,
    MAGIC,
    MAX_HEADER,
    MAX_MESSAGE,
    Invalid,
    Missing,
    Signatures,
    Tag,
    decode,
    decode_content,
    decode_missing,
    decode_signatures,
    decode_tag,
    decode_tier,
    encode,
    encode_signatures,
)
from policy.sharedlink import (
    FAILED,
    LATENCY_BUCKETS,
    REFUSED,
    Link,
    SharedStats,
    connect,
)

__all__ = [
    "CLOCK_SKEW",
    "LATENCY_BUCKETS",
    "MAGIC",
    "MAX_HEADER",
    "MAX_MESSAGE",
    "Invalid",
    "Missing",
    "SharedCache",
    "SharedStats",
    "Signatures",
    "Tag",
    "connect",
    "decode",
    "decode_content",
    "decode_missing",
    "decode_signatures",
    "decode_tag",
    "decode_tier",
    "encode",
    "encode_signatures",
    "from_settings",
]

T = TypeVar("T")

_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


class SharedCache:
    """The Redis tier: its keys, reads and writes, and the leases (module docstring).

    Thread-safe: one instance (one connection pool) serves every thread of a worker.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = "image-policy:",
        lease: float = 3.0,
        content_ttl: float = 7 * 24 * 3600.0,
        max_entry_bytes: int = 4 * 1024 * 1024,
        break_after: int = 3,
        break_for: float = 5.0,
        poll: tuple[float, float] = (0.002, 0.02),
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self._lease_ms = max(1, int(lease * 1000))
        self._content_ms = max(1, int(content_ttl * 1000))
        self._link = Link(
            client,
            max_entry_bytes=max_entry_bytes,
            break_after=break_after,
            break_for=break_for,
            clock=clock,
        )
        self._poll = poll
        self._now = wall_clock
        self._local = threading.local()
        self._release = client.register_script(_RELEASE)

    # --- state and counters ---------------------------------------------------------------

    def state(self) -> str:
        """`ok`, `down` (the last call failed) or `breaker-open` (Redis skipped for now)."""
        return self._link.state()

    def stats(self) -> SharedStats:
        return self._link.stats()

    def close(self) -> None:
        """Close the pool's connections."""
        self.client.close()

    # --- keys -----------------------------------------------------------------------------

    def _key(self, kind: str, name: str) -> str:
        return f"{self.prefix}{kind}:{name}"

    # --- content by digest ------------------------------------------------------------------

    def get_manifest(
        self, registry: str, repository: str, digest: str
    ) -> tuple[bytes, str] | Missing | None:
        """`(body, media type)` of a manifest whose body matches `digest`, the 404 another
        replica met for it, or None (one round trip for both)."""
        name = f"{registry}/{repository}@{digest}"
        keys = [self._key("manifest", name), self._key("missing", f"digest:{name}")]
        values = self._link.read(keys)
        if values is None:
            self._link.hit(None)
            return None
        found = self._link.decoded(
            keys[0],
            values[0],
            lambda v: decode_content(v, digest, "manifest", max_bytes=self._link.read_bytes),
        )
        if found is not None:
            self._link.hit(found)
            return found[1], found[0]
        missing = self._link.decoded(
            keys[1], values[1], lambda v: decode_missing(v, max_bytes=self._link.read_bytes)
        )
        self._link.hit(missing)
        return missing

    def put_manifest(
        self, registry: str, repository: str, digest: str, body: bytes, media_type: str
    ) -> None:
        """Store a manifest body already verified against `digest`."""
        key = self._key("manifest", f"{registry}/{repository}@{digest}")
        self._link.write(key, encode("manifest", {"t": media_type}, body), self._content_ms)

    def get_blob(self, registry: str, repository: str, digest: str) -> bytes | None:
        """A config blob whose body matches `digest`, or None."""
        key = self._key("blob", f"{registry}/{repository}@{digest}")
        found = self._link.decoded(
            key,
            self._read_one(key),
            lambda v: decode_content(v, digest, "blob", max_bytes=self._link.read_bytes),
        )
        self._link.hit(found)
        return None if found is None else found[1]

    def put_blob(self, registry: str, repository: str, digest: str, body: bytes) -> None:
        """Store a blob already verified against `digest`."""
        key = self._key("blob", f"{registry}/{repository}@{digest}")
        self._link.write(key, encode("blob", {}, body), self._content_ms)

    def _read_one(self, key: str) -> object:
        values = self._link.read([key])
        return b"" if values is None else values[0]

    # --- answers with an age ----------------------------------------------------------------

    def get_tag(self, registry: str, repository: str, tag: str) -> Tag | Missing | None:
        """The tag's answer (any age Redis still keeps), the 404 another replica met, or None."""
        name = f"{registry}/{repository}:{tag}"
        keys = [self._key("tag", name), self._key("missing", f"tag:{name}")]
        return self._answer(keys)

    def put_tag(
        self,
        registry: str,
        repository: str,
        tag: str,
        digest: str,
        media_type: str,
        size: int | None,
        *,
        ttl: float,
        age: float = 0.0,
    ) -> None:
        """Store what the registry answered for the tag `age` seconds ago, kept `ttl` seconds."""
        header: dict[str, object] = {
            "digest": digest,
            "mediaType": media_type,
            "size": size,
            "at": self._now() - age,
        }
        key = self._key("tag", f"{registry}/{repository}:{tag}")
        self._link.write(key, encode("tag", header), int(ttl * 1000))

    def put_missing(
        self, registry: str, repository: str, reference: str, message: str, *, ttl: float
    ) -> None:
        """Remember a 404 for `reference` (a tag or a digest) for `ttl` seconds."""
        if media.is_digest(reference):
            name = f"digest:{registry}/{repository}@{reference}"
        else:
            name = f"tag:{registry}/{repository}:{reference}"
        value = encode("missing", {"message": message[:MAX_MESSAGE]})
        self._link.write(self._key("missing", name), value, int(ttl * 1000))

    def _answer(self, keys: list[str]) -> Tag | Missing | None:
        values = self._link.read(keys)
        if values is None:
            self._link.hit(None)
            return None
        found: Tag | Missing | None = None
        now = self._now()
        for key, value in zip(keys, values, strict=True):
            decoded: Tag | Missing | None
            if key.startswith(self._key("tag", "")):
                decoded = self._link.decoded(
                    key, value, lambda v: decode_tag(v, now=now, max_bytes=self._link.read_bytes)
                )
            else:
                decoded = self._link.decoded(
                    key, value, lambda v: decode_missing(v, max_bytes=self._link.read_bytes)
                )
            found = found or decoded
        self._link.hit(found)
        return found

    def get_tier(self, namespace: str) -> tuple[str, str] | None:
        """`(tier, source)` of a Docker Hub namespace another replica learned, or None."""
        key = self._key("tier", namespace)
        value = self._link.decoded(
            key, self._read_one(key), lambda v: decode_tier(v, max_bytes=self._link.read_bytes)
        )
        self._link.hit(value)
        return value

    def put_tier(self, namespace: str, tier: str, source: str, *, ttl: float) -> None:
        self._link.write(
            self._key("tier", namespace),
            encode("tier", {"tier": tier, "source": source}),
            int(ttl * 1000),
        )

    # --- signature artifacts ----------------------------------------------------------------

    def get_signatures(
        self, registry: str, repository: str, digest: str, fact: str = "signatures"
    ) -> Signatures | None:
        """The signature artifacts (`fact` "signatures") or attestation artifacts
        ("attestations") another replica found for `digest` (maybe none), or None."""
        key = self._key(fact, f"{registry}/{repository}@{digest}")
        now = self._now()
        found = self._link.decoded(
            key,
            self._read_one(key),
            lambda v: decode_signatures(v, now=now, max_bytes=self._link.read_bytes),
        )
        self._link.hit(found)
        return found

    def put_signatures(
        self,
        registry: str,
        repository: str,
        digest: str,
        fact: str,
        cosign: Sequence[tuple[bytes, Mapping[str, str]]],
        bundles: Sequence[bytes],
        refused: Sequence[tuple[str, str]],
        *,
        ttl: float | None = None,
    ) -> None:
        """Store what was found of `fact` for `digest`, kept `ttl` seconds (default: as
        content is)."""
        key = self._key(fact, f"{registry}/{repository}@{digest}")
        value = encode_signatures(cosign, bundles, refused, at=self._now())
        self._link.write(key, value, self._content_ms if ttl is None else int(ttl * 1000))

    # --- leases -----------------------------------------------------------------------------

    @contextmanager
    def holding(self) -> Iterator[None]:
        """Leases taken inside are released when the outermost `holding()` ends (a resolution
        holds its image's leases until it has fetched all it needs)."""
        held: list[tuple[str, str]] | None = getattr(self._local, "held", None)
        if held is not None:
            yield
            return
        mine: list[tuple[str, str]] = []
        self._local.held = mine
        try:
            yield
        finally:
            self._local.held = None
            for key, token in mine:
                self._let_go(key, token)

    def _let_go(self, key: str, token: str) -> None:
        """Release a lease if it is still ours (it may have expired and been taken)."""

        def release(client: redis.Redis) -> object:
            return self._release(keys=[key], args=[token], client=client)

        self._link.call(release)

    def turn(
        self, name: str, look: Callable[[], T | None], deadline: Deadline, *, first: bool = False
    ) -> T | None:
        """Another replica's answer for `name`, or None when this replica is to fetch it.

        With `first`, `look()` is tried before anything else (a hit needs no lease).

        Takes the lease on `name` (held until the enclosing `holding()` ends) and returns None;
        if another replica holds it, waits until it is released or expires (or the deadline)
        and returns `look()` if that finds the answer now, else tries again. Redis failing at
        any point: None at once (fetch without the others).
        """
        if first:
            found = look()
            if found is not None:
                return found
        key = self._key("lease", name)
        waited = False
        while True:
            token = secrets.token_hex(8)
            got = self._link.call(partial(_take, key=key, token=token, px=self._lease_ms))
            if got is FAILED or got is REFUSED:
                return None
            if got:
                held: list[tuple[str, str]] | None = getattr(self._local, "held", None)
                if held is not None:
                    held.append((key, token))
                self._link.count("leases")
                return None
            if not waited:
                self._link.count("waits")
                waited = True
            if not self._wait_released(key, deadline):
                return None
            found = look()
            if found is not None:
                self._link.count("shared")
                return found

    def _wait_released(self, key: str, deadline: Deadline) -> bool:
        """Poll until the lease on `key` is gone: True; False when the deadline passed or
        Redis failed."""
        pause, longest = self._poll
        while True:
            present = self._link.call(lambda c: c.exists(key))
            if present is FAILED or present is REFUSED:
                return False
            if not present:
                return True
            left = deadline.remaining()
            if left <= 0:
                return False
            time.sleep(min(pause, left))
            pause = min(pause * 2, longest)


def _take(client: redis.Redis, *, key: str, token: str, px: int) -> object:
    """`SET key token NX PX px`: whether the lease was free (and is now `token`'s)."""
    return client.set(key, token, nx=True, px=px)


def from_settings(settings: SharedCacheSettings) -> SharedCache:
    """The shared tier `cache.shared` describes (connecting lazily: a Redis down at start is
    a Redis down, not a failure to start)."""
    client = connect(
        settings.url,
        username=settings.username,
        password=settings.password,
        ca=settings.ca,
        connect_timeout=settings.connect_timeout,
        command_timeout=settings.command_timeout,
        max_connections=settings.max_connections,
    )
    return SharedCache(
        client,
        prefix=settings.key_prefix,
        lease=settings.lease,
        content_ttl=settings.content_ttl,
        max_entry_bytes=settings.max_entry_bytes,
        break_after=settings.break_after,
        break_for=settings.break_for,
    )
