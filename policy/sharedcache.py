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
"""

from __future__ import annotations

import base64
import json
import logging
import math
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from policy import jsonbound
from policy.deadline import Deadline
from policy.errors import IntegrityError
from policy.registry import media
from policy.settings import SharedCacheSettings

T = TypeVar("T")

log = logging.getLogger("policy.sharedcache")

MAGIC = b"ipc1 "
"""The envelope's format version: an entry of another format is a miss."""
MAX_HEADER = 4096
MAX_MESSAGE = 512
CLOCK_SKEW = 60.0
"""Seconds a tag answer's `at` may lie in the future (replicas' clocks differ a little)."""
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)

_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


class Tag(NamedTuple):
    """A tag's answer: what it named, and how many seconds ago a registry said so."""

    digest: str
    media_type: str
    size: int | None
    age: float


class Missing(NamedTuple):
    """A registry's 404 for a tag or digest, as another replica met it."""

    message: str


class Invalid(ValueError):
    """An entry that is not one this version wrote: a miss, and dropped."""


# --- envelopes (pure) ---------------------------------------------------------------------


def encode(kind: str, header: dict[str, object], payload: bytes = b"") -> bytes:
    """The stored form of an entry: format, kind and header, then the payload bytes."""
    line = json.dumps({"k": kind, **header}, separators=(",", ":")).encode()
    return MAGIC + line + b"\n" + payload


def decode(value: object, kind: str, *, max_bytes: int) -> tuple[dict[str, Any], bytes]:
    """`(header, payload)` of an entry of `kind`; `Invalid` for anything else (another type,
    another format or kind, truncated, over `max_bytes`, a header that is no JSON object)."""
    if not isinstance(value, bytes):
        raise Invalid("not a string value")
    if len(value) > max_bytes:
        raise Invalid("over the entry size cap")
    if not value.startswith(MAGIC):
        raise Invalid("not this format")
    end = value.find(b"\n", len(MAGIC), len(MAGIC) + MAX_HEADER + 1)
    if end < 0:
        raise Invalid("no header line")
    try:
        header = json.loads(value[len(MAGIC) : end])
    except (ValueError, UnicodeDecodeError):
        raise Invalid("header is not JSON") from None
    if not isinstance(header, dict) or header.get("k") != kind:
        raise Invalid("not an entry of this kind")
    return header, value[end + 1 :]


def decode_content(value: object, digest: str, kind: str, *, max_bytes: int) -> tuple[str, bytes]:
    """`(media type, body)` of a content entry whose body hashes to `digest`; `Invalid` else."""
    header, body = decode(value, kind, max_bytes=max_bytes)
    media_type = header.get("t", "")
    if not isinstance(media_type, str):
        raise Invalid("media type is not a string")
    try:
        media.verify_digest(body, digest)
    except IntegrityError:
        raise Invalid("body does not match its digest") from None
    return media_type, body


def decode_tag(value: object, *, now: float, max_bytes: int) -> Tag:
    """A tag answer; its age from its `at` (wall clock); `Invalid` for anything malformed."""
    header, _ = decode(value, "tag", max_bytes=max_bytes)
    digest, media_type, size, at = (header.get(k) for k in ("digest", "mediaType", "size", "at"))
    if not isinstance(digest, str) or not media.is_digest(digest):
        raise Invalid("no digest")
    if not isinstance(media_type, str) or len(media_type) > 255:
        raise Invalid("no media type")
    if size is not None and (type(size) is not int or size < 0):
        raise Invalid("bad size")
    if isinstance(at, bool) or not isinstance(at, int | float):
        raise Invalid("bad time")
    age = now - float(at)
    if not -CLOCK_SKEW < age < float("inf"):  # NaN fails too
        raise Invalid("bad time")
    return Tag(digest, media_type, size, max(0.0, age))


def decode_missing(value: object, *, max_bytes: int) -> Missing:
    header, _ = decode(value, "missing", max_bytes=max_bytes)
    message = header.get("message")
    if not isinstance(message, str):
        raise Invalid("no message")
    return Missing(message[:MAX_MESSAGE])


def decode_tier(value: object, *, max_bytes: int) -> tuple[str, str]:
    header, _ = decode(value, "tier", max_bytes=max_bytes)
    tier, source = header.get("tier"), header.get("source")
    if not isinstance(tier, str) or not isinstance(source, str):
        raise Invalid("no tier")
    return tier[:64], source[:MAX_MESSAGE]


class Signatures(NamedTuple):
    """The signature artifacts found for a digest (as the resolver keeps them), and how many
    seconds ago they were found."""

    cosign: tuple[tuple[bytes, dict[str, str]], ...]
    bundles: tuple[bytes, ...]
    refused: tuple[tuple[str, str], ...]
    age: float


def encode_signatures(
    cosign: Sequence[tuple[bytes, Mapping[str, str]]],
    bundles: Sequence[bytes],
    refused: Sequence[tuple[str, str]],
    *,
    at: float,
) -> bytes:
    """The stored form of a digest's signature artifacts (bytes as base64 in a JSON body)."""
    body = {
        "cosign": [
            {"payload": base64.b64encode(payload).decode(), "annotations": dict(annotations)}
            for payload, annotations in cosign
        ],
        "bundles": [base64.b64encode(bundle).decode() for bundle in bundles],
        "refused": [[form, why] for form, why in refused],
    }
    return encode("signatures", {"at": at}, json.dumps(body, separators=(",", ":")).encode())


def decode_signatures(value: object, *, now: float, max_bytes: int) -> Signatures:
    header, payload = decode(value, "signatures", max_bytes=max_bytes)
    at = header.get("at")
    if isinstance(at, bool) or not isinstance(at, int | float) or not math.isfinite(at):
        raise Invalid("no time it was found")
    if at > now + CLOCK_SKEW:
        raise Invalid("found in the future")
    try:
        body = jsonbound.loads(payload, max_bytes=max_bytes, max_depth=8)
    except jsonbound.JSONRefused:
        raise Invalid("body is not bounded JSON") from None
    if not isinstance(body, dict):
        raise Invalid("body is not an object")
    cosign, bundles, refused = body.get("cosign"), body.get("bundles"), body.get("refused")
    if not (isinstance(cosign, list) and isinstance(bundles, list) and isinstance(refused, list)):
        raise Invalid("not the three lists")
    layers: list[tuple[bytes, dict[str, str]]] = []
    for layer in cosign:
        annotations = layer.get("annotations") if isinstance(layer, dict) else None
        if not isinstance(annotations, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()
        ):
            raise Invalid("a cosign layer without string annotations")
        layers.append((_unbase64(layer.get("payload")), annotations))
    pairs: list[tuple[str, str]] = []
    for item in refused:
        if not (
            isinstance(item, list) and len(item) == 2 and all(isinstance(x, str) for x in item)
        ):
            raise Invalid("a refusal that is not two strings")
        pairs.append((item[0][:MAX_MESSAGE], item[1][:MAX_MESSAGE]))
    return Signatures(
        tuple(layers), tuple(_unbase64(b) for b in bundles), tuple(pairs), max(0.0, now - at)
    )


def _unbase64(text: object) -> bytes:
    if not isinstance(text, str):
        raise Invalid("not base64 text")
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        raise Invalid("not base64") from None


# --- the breaker ----------------------------------------------------------------------------


class _Breaker:
    """Consecutive failures open it for `break_for` seconds; then one call probes."""

    def __init__(self, break_after: int, break_for: float, clock: Callable[[], float]) -> None:
        self._break_after = break_after
        self._break_for = break_for
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._open_until = 0.0
        self._probing = False

    def admit(self) -> bool:
        """Whether a call may go to Redis now (when the window has passed: one probe)."""
        with self._lock:
            if self._failures < self._break_after:
                return True
            if self._clock() < self._open_until or self._probing:
                return False
            self._probing = True
            return True

    def success(self) -> None:
        with self._lock:
            self._failures = 0
            self._probing = False

    def failure(self) -> None:
        with self._lock:
            self._failures += 1
            self._probing = False
            if self._failures >= self._break_after:
                self._open_until = self._clock() + self._break_for

    @property
    def open(self) -> bool:
        with self._lock:
            return self._failures >= self._break_after and self._clock() < self._open_until

    @property
    def failing(self) -> bool:
        with self._lock:
            return self._failures > 0


# --- the tier ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SharedStats:
    """Counters since start: `hits`/`misses` of lookups, `errors` (Redis unreachable, slow or
    refusing; each also a miss), `invalid` entries dropped (unreadable or, for content, not
    matching their digest), `skipped` calls not made while the breaker was open, `leases`
    taken, `waits` for another replica's lease and `shared` answers got by waiting, and the
    latency histogram of the calls made (`buckets`: cumulative counts for
    `LATENCY_BUCKETS`)."""

    hits: int
    misses: int
    errors: int
    invalid: int
    skipped: int
    leases: int
    waits: int
    shared: int
    calls: int
    seconds: float
    buckets: tuple[int, ...]


_FAILED: Any = object()
_REFUSED: Any = object()


class SharedCache:
    """The Redis tier, with the breaker, the leases and the counters (module docstring).

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
        self._max_bytes = max_entry_bytes
        self._read_bytes = max_entry_bytes + len(MAGIC) + MAX_HEADER + 1
        self._breaker = _Breaker(break_after, break_for, clock)
        self._poll = poll
        self._clock = clock
        self._now = wall_clock
        self._local = threading.local()
        self._release = client.register_script(_RELEASE)
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(
            ("hits", "misses", "errors", "invalid", "skipped", "leases", "waits", "shared"), 0
        )
        self._up = True  # as last logged: a line per change, not per failure
        self._calls = 0
        self._seconds = 0.0
        self._buckets = [0] * len(LATENCY_BUCKETS)

    # --- state and counters ---------------------------------------------------------------

    def state(self) -> str:
        """`ok`, `down` (the last call failed) or `breaker-open` (Redis skipped for now)."""
        if self._breaker.open:
            return "breaker-open"
        return "down" if self._breaker.failing else "ok"

    def stats(self) -> SharedStats:
        with self._lock:
            running, buckets = 0, []
            for n in self._buckets:
                running += n
                buckets.append(running)
            return SharedStats(
                **self._counts, calls=self._calls, seconds=self._seconds, buckets=tuple(buckets)
            )

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def close(self) -> None:
        """Close the pool's connections."""
        self.client.close()

    # --- calls ----------------------------------------------------------------------------

    def _call(self, fn: Callable[[redis.Redis], T]) -> T:
        """`fn(client)`, timed and told to the breaker; `_FAILED` when Redis failed or the
        breaker is open. A key of the wrong type (`WRONGTYPE`) is an answer about that entry,
        not a failure: `_REFUSED`, for the caller to drop the entry. Any other refusal (no
        password, a wrong one, no ACL permission, a read-only replica) is a failure."""
        if not self._breaker.admit():
            self._count("skipped")
            return _FAILED  # type: ignore[no-any-return]
        started = self._clock()
        try:
            result = fn(self.client)
        except redis.ResponseError as exc:
            if not _wrong_type(exc):
                return self._failed(started, exc)  # type: ignore[no-any-return]
            self._timed(started)
            self._breaker.success()
            return _REFUSED  # type: ignore[no-any-return]
        except (redis.RedisError, OSError) as exc:
            return self._failed(started, exc)  # type: ignore[no-any-return]
        self._timed(started)
        self._breaker.success()
        self._changed(up=True)
        return result

    def _failed(self, started: float, exc: BaseException) -> Any:
        self._timed(started)
        self._breaker.failure()
        self._count("errors")
        self._changed(up=False, error=exc)
        return _FAILED

    def _changed(self, *, up: bool, error: BaseException | None = None) -> None:
        """Log when Redis goes down or comes back: the error's class, never its text (which
        could one day quote what was sent)."""
        with self._lock:
            if self._up == up:
                return
            self._up = up
        fields: dict[str, object] = {"event": "shared_cache", "state": "ok" if up else "down"}
        if error is not None:
            fields["error"] = type(error).__name__
        (log.info if up else log.warning)(json.dumps(fields))

    def _timed(self, started: float) -> None:
        elapsed = max(0.0, self._clock() - started)
        with self._lock:
            self._calls += 1
            self._seconds += elapsed
            for i, bound in enumerate(LATENCY_BUCKETS):
                if elapsed <= bound:
                    self._buckets[i] += 1
                    break

    def _read(self, keys: list[str]) -> list[object] | None:
        """Up to the size cap of each key's value (None: Redis failed); each item is the bytes
        (b"" when absent) or the ResponseError Redis answered for that key."""

        def run(client: redis.Redis) -> list[object]:
            pipe = client.pipeline(transaction=False)
            for key in keys:
                pipe.getrange(key, 0, self._read_bytes)
            found = list(pipe.execute(raise_on_error=False))
            for item in found:
                if isinstance(item, redis.ResponseError) and not _wrong_type(item):
                    raise item  # no password, no permission: Redis failing, not an entry
            return found

        found = self._call(run)
        if found is _REFUSED:
            return [found] * len(keys)
        return None if found is _FAILED else found

    def _drop(self, key: str) -> None:
        """Delete an entry found unreadable or poisoned, so the next reader fetches anew."""
        self._count("invalid")
        self._call(lambda c: c.delete(key))

    def _write(self, key: str, value: bytes, ttl_ms: int) -> None:
        if len(value) > self._max_bytes or ttl_ms < 1:
            return
        self._call(lambda c: c.set(key, value, px=ttl_ms))

    def _decoded(self, key: str, value: object, decoder: Callable[[object], T]) -> T | None:
        """`decoder(value)`; None for an absent key; a dropped miss for an invalid entry."""
        if value == b"":
            return None
        try:
            return decoder(value)
        except Invalid:
            self._drop(key)
            return None

    def _hit(self, found: object) -> None:
        self._count("hits" if found is not None else "misses")

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
        values = self._read(keys)
        if values is None:
            self._hit(None)
            return None
        found = self._decoded(
            keys[0],
            values[0],
            lambda v: decode_content(v, digest, "manifest", max_bytes=self._read_bytes),
        )
        if found is not None:
            self._hit(found)
            return found[1], found[0]
        missing = self._decoded(
            keys[1], values[1], lambda v: decode_missing(v, max_bytes=self._read_bytes)
        )
        self._hit(missing)
        return missing

    def put_manifest(
        self, registry: str, repository: str, digest: str, body: bytes, media_type: str
    ) -> None:
        """Store a manifest body already verified against `digest`."""
        key = self._key("manifest", f"{registry}/{repository}@{digest}")
        self._write(key, encode("manifest", {"t": media_type}, body), self._content_ms)

    def get_blob(self, registry: str, repository: str, digest: str) -> bytes | None:
        """A config blob whose body matches `digest`, or None."""
        key = self._key("blob", f"{registry}/{repository}@{digest}")
        found = self._decoded(
            key,
            self._read_one(key),
            lambda v: decode_content(v, digest, "blob", max_bytes=self._read_bytes),
        )
        self._hit(found)
        return None if found is None else found[1]

    def put_blob(self, registry: str, repository: str, digest: str, body: bytes) -> None:
        """Store a blob already verified against `digest`."""
        key = self._key("blob", f"{registry}/{repository}@{digest}")
        self._write(key, encode("blob", {}, body), self._content_ms)

    def _read_one(self, key: str) -> object:
        values = self._read([key])
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
        self._write(key, encode("tag", header), int(ttl * 1000))

    def put_missing(
        self, registry: str, repository: str, reference: str, message: str, *, ttl: float
    ) -> None:
        """Remember a 404 for `reference` (a tag or a digest) for `ttl` seconds."""
        if media.is_digest(reference):
            name = f"digest:{registry}/{repository}@{reference}"
        else:
            name = f"tag:{registry}/{repository}:{reference}"
        value = encode("missing", {"message": message[:MAX_MESSAGE]})
        self._write(self._key("missing", name), value, int(ttl * 1000))

    def _answer(self, keys: list[str]) -> Tag | Missing | None:
        values = self._read(keys)
        if values is None:
            self._hit(None)
            return None
        found: Tag | Missing | None = None
        now = self._now()
        for key, value in zip(keys, values, strict=True):
            decoded: Tag | Missing | None
            if key.startswith(self._key("tag", "")):
                decoded = self._decoded(
                    key, value, lambda v: decode_tag(v, now=now, max_bytes=self._read_bytes)
                )
            else:
                decoded = self._decoded(
                    key, value, lambda v: decode_missing(v, max_bytes=self._read_bytes)
                )
            found = found or decoded
        self._hit(found)
        return found

    def get_tier(self, namespace: str) -> tuple[str, str] | None:
        """`(tier, source)` of a Docker Hub namespace another replica learned, or None."""
        key = self._key("tier", namespace)
        value = self._decoded(
            key, self._read_one(key), lambda v: decode_tier(v, max_bytes=self._read_bytes)
        )
        self._hit(value)
        return value

    def put_tier(self, namespace: str, tier: str, source: str, *, ttl: float) -> None:
        self._write(
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
        found = self._decoded(
            key,
            self._read_one(key),
            lambda v: decode_signatures(v, now=now, max_bytes=self._read_bytes),
        )
        self._hit(found)
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
        self._write(key, value, self._content_ms if ttl is None else int(ttl * 1000))

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

        self._call(release)

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
            got = self._call(partial(_take, key=key, token=token, px=self._lease_ms))
            if got is _FAILED or got is _REFUSED:
                return None
            if got:
                held: list[tuple[str, str]] | None = getattr(self._local, "held", None)
                if held is not None:
                    held.append((key, token))
                self._count("leases")
                return None
            if not waited:
                self._count("waits")
                waited = True
            if not self._wait_released(key, deadline):
                return None
            found = look()
            if found is not None:
                self._count("shared")
                return found

    def _wait_released(self, key: str, deadline: Deadline) -> bool:
        """Poll until the lease on `key` is gone: True; False when the deadline passed or
        Redis failed."""
        pause, longest = self._poll
        while True:
            present = self._call(lambda c: c.exists(key))
            if present is _FAILED or present is _REFUSED:
                return False
            if not present:
                return True
            left = deadline.remaining()
            if left <= 0:
                return False
            time.sleep(min(pause, left))
            pause = min(pause * 2, longest)


def _wrong_type(error: redis.ResponseError) -> bool:
    return str(error).startswith("WRONGTYPE")


def _take(client: redis.Redis, *, key: str, token: str, px: int) -> object:
    """`SET key token NX PX px`: whether the lease was free (and is now `token`'s)."""
    return client.set(key, token, nx=True, px=px)


def connect(
    url: str,
    *,
    username: str | None = None,
    password: str | None = None,
    ca: str | None = None,
    connect_timeout: float = 0.05,
    command_timeout: float = 0.025,
    max_connections: int = 64,
) -> redis.Redis:
    """A client with its own pool: bounded timeouts, no retries (a failure is a miss, and the
    breaker decides when to try again). Connects lazily; a bad address fails at first use."""
    options: dict[str, Any] = {
        "socket_timeout": command_timeout,
        "socket_connect_timeout": connect_timeout,
        "retry": Retry(NoBackoff(), 0),
        "retry_on_timeout": False,
        "max_connections": max_connections,
        "health_check_interval": 0,
    }
    if username is not None:
        options["username"] = username
    if password is not None:
        options["password"] = password
    if ca is not None and url.startswith("rediss://"):
        options["ssl_ca_certs"] = ca
    return redis.Redis.from_url(url, **options)


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
