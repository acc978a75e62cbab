"""The shared tier's link to Redis: never in the critical path (shell layer).

`Link.call` runs one command with the client's short socket timeouts and no retries, timed,
counted and told to a breaker: after `break_after` consecutive failures Redis is skipped for
`break_for` seconds (then one call probes it). A failure, or a skip, is `FAILED` — a miss for
the caller, who carries on with its own cache and the registry. Redis going down or coming back
is logged once per change. `connect` makes the client.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from policy.sharedformat import MAGIC, MAX_HEADER, Invalid

T = TypeVar("T")

log = logging.getLogger("policy.sharedcache")

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)

FAILED: Any = object()
"""What a call answers when Redis failed or the breaker skipped it."""
REFUSED: Any = object()
"""What a call answers when Redis refused it for the key's type (`WRONGTYPE`)."""


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


class Link:
    """One Redis client behind the breaker, with the counters and the latency histogram.

    Thread-safe: one instance (one connection pool) serves every thread of a worker.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        max_entry_bytes: int,
        break_after: int,
        break_for: float,
        clock: Callable[[], float],
    ) -> None:
        self.client = client
        self.max_bytes = max_entry_bytes
        self.read_bytes = max_entry_bytes + len(MAGIC) + MAX_HEADER + 1
        self._breaker = _Breaker(break_after, break_for, clock)
        self._clock = clock
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(
            ("hits", "misses", "errors", "invalid", "skipped", "leases", "waits", "shared"), 0
        )
        self._up = True  # as last logged: a line per change, not per failure
        self._calls = 0
        self._seconds = 0.0
        self._buckets = [0] * len(LATENCY_BUCKETS)

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

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def call(self, fn: Callable[[redis.Redis], T]) -> T:
        """`fn(client)`, timed and told to the breaker; `FAILED` when Redis failed or the
        breaker is open. A key of the wrong type (`WRONGTYPE`) is an answer about that entry,
        not a failure: `REFUSED`, for the caller to drop the entry. Any other refusal (no
        password, a wrong one, no ACL permission, a read-only replica) is a failure."""
        if not self._breaker.admit():
            self.count("skipped")
            return FAILED  # type: ignore[no-any-return]
        started = self._clock()
        try:
            result = fn(self.client)
        except redis.ResponseError as exc:
            if not _wrong_type(exc):
                return self._failed(started, exc)  # type: ignore[no-any-return]
            self._timed(started)
            self._breaker.success()
            return REFUSED  # type: ignore[no-any-return]
        except (redis.RedisError, OSError) as exc:
            return self._failed(started, exc)  # type: ignore[no-any-return]
        self._timed(started)
        self._breaker.success()
        self._changed(up=True)
        return result

    def _failed(self, started: float, exc: BaseException) -> Any:
        self._timed(started)
        self._breaker.failure()
        self.count("errors")
        self._changed(up=False, error=exc)
        return FAILED

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

    def read(self, keys: list[str]) -> list[object] | None:
        """Up to the size cap of each key's value (None: Redis failed); each item is the bytes
        (b"" when absent) or the ResponseError Redis answered for that key."""

        def run(client: redis.Redis) -> list[object]:
            pipe = client.pipeline(transaction=False)
            for key in keys:
                pipe.getrange(key, 0, self.read_bytes)
            found = list(pipe.execute(raise_on_error=False))
            for item in found:
                if isinstance(item, redis.ResponseError) and not _wrong_type(item):
                    raise item  # no password, no permission: Redis failing, not an entry
            return found

        found = self.call(run)
        if found is REFUSED:
            return [found] * len(keys)
        return None if found is FAILED else found

    def drop(self, key: str) -> None:
        """Delete an entry found unreadable or poisoned, so the next reader fetches anew."""
        self.count("invalid")
        self.call(lambda c: c.delete(key))

    def write(self, key: str, value: bytes, ttl_ms: int) -> None:
        if len(value) > self.max_bytes or ttl_ms < 1:
            return
        self.call(lambda c: c.set(key, value, px=ttl_ms))

    def decoded(self, key: str, value: object, decoder: Callable[[object], T]) -> T | None:
        """`decoder(value)`; None for an absent key; a dropped miss for an invalid entry."""
        if value == b"":
            return None
        try:
            return decoder(value)
        except Invalid:
            self.drop(key)
            return None

    def hit(self, found: object) -> None:
        self.count("hits" if found is not None else "misses")


def _wrong_type(error: redis.ResponseError) -> bool:
    return str(error).startswith("WRONGTYPE")


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
