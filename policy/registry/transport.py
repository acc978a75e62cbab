"""The transport every registry, token-realm and Docker Hub request goes through: one place
for sockets, the egress policy and the total time an exchange may take.

`GuardedAdapter` is a `requests` HTTPAdapter whose connections

- **resolve and check before they connect**: the host is resolved here (DNS bounded by the
  request's time, on a small pool of lookup threads), each address is judged by the
  `egress.EgressPolicy` and the socket connects to an allowed address itself — the address
  actually connected is the one judged, so DNS rebinding or a decimal, hex or IPv4-mapped
  spelling of an address changes nothing. A refusal raises `EgressBlocked` before any packet
  leaves; every decision is reported to `on_connect` (tests record them, the log shows them).
- **end by their deadline whatever the peer does**: `requests`' timeouts bound each socket
  read, so a peer sending one header byte every 0.3 s holds a request forever. Here the read
  timeout given to `requests` is the *total* time for the exchange (connect, TLS, status
  line, headers and body): a `Watchdog` thread shuts the socket down when it runs out, which
  wakes the blocked read at once. A connection given back to the pool is forgotten by the
  watchdog, so kept-alive connections are not cut.

Through a proxy (from the environment, the operator's choice) the connection goes to the
proxy: the target is then judged by name before the request is sent, and by its addresses
when it resolves here too (the proxy resolves it again and is trusted to).
"""

from __future__ import annotations

import contextlib
import heapq
import ipaddress
import itertools
import socket
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
import requests.adapters
from urllib3 import connection as u3connection
from urllib3 import connectionpool as u3pool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from policy.egress import Address, EgressPolicy

DNS_THREADS = 4
"""Lookups run on their own few threads, so a hung DNS server holds no request past its time
(a lookup left running there ends when the system resolver gives up)."""

IDLE_SECONDS = 30.0
"""A watchdog with nothing to watch for this long lets its thread end."""

Resolve = Callable[[str, int], list[tuple[int, Address]]]


def system_resolve(host: str, port: int) -> list[tuple[int, Address]]:
    """(family, address) pairs for `host` from the system resolver, in its order."""
    out: list[tuple[int, Address]] = []
    for family, _, _, _, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if (family, address) not in out:
            out.append((family, address))
    return out


@dataclass(frozen=True)
class ConnectDecision:
    """One connection considered: the host, the address, and why it was refused (or None)."""

    host: str
    port: int
    address: Address | None
    refusal: str | None


class EgressDenied(requests.ConnectionError):
    """What a caller of the session sees for a refused connection: `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"refused by egress policy: {reason}")
        self.reason = reason


class EgressBlocked(NewConnectionError):
    """The egress policy refused every address of the host (nothing was sent)."""

    def __init__(self, conn: u3connection.HTTPConnection, reason: str) -> None:
        super().__init__(conn, f"refused by egress policy: {reason}")
        self.reason = reason


class Watchdog:
    """Shuts down the socket of each exchange that outlives its time (one daemon thread)."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, *, idle: float = IDLE_SECONDS
    ) -> None:
        self._clock = clock
        self._idle = idle
        self._heap: list[tuple[float, int, _GuardedConnection, int]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self.fired = 0

    def watch(self, conn: _GuardedConnection, until: float) -> None:
        """Cut `conn`'s socket at `until` unless it was given back (or reused) by then."""
        with self._cond:
            heapq.heappush(self._heap, (until, next(self._seq), conn, conn.use))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="transport-watchdog", daemon=True
                )
                self._thread.start()
            self._cond.notify()

    @property
    def running(self) -> bool:
        with self._cond:
            return self._thread is not None

    @property
    def watched(self) -> int:
        with self._cond:
            return len(self._heap)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap:
                    if not self._cond.wait(self._idle) and not self._heap:
                        self._thread = None  # idle: the next `watch` starts a new thread
                        return
                until, _, conn, use = self._heap[0]
                wait = until - self._clock()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._heap)
                if conn.use != use:
                    continue  # given back to the pool or reused since: its time is its own
                self.fired += 1
            conn.cut()


_exchange = threading.local()  # .conn: the connection of this thread's latest exchange


def cut_short() -> bool:
    """Whether the watchdog cut this thread's exchange since `forget_exchange`: a body that
    "ended" then was cut short (a peer sending no length ends its body by closing), not
    complete."""
    conn = getattr(_exchange, "conn", None)
    return conn is not None and bool(conn.expired)


def forget_exchange() -> None:
    """A request begins in this thread (through a guarded session or not): `cut_short`
    speaks of its exchange only."""
    _exchange.conn = None


class _GuardedConnection(u3connection.HTTPConnection):
    """A connection that connects only where the egress policy allows and registers each
    exchange with the watchdog. `transport` is set on the per-adapter subclass."""

    transport: Transport
    use = 0  # bumped when an exchange begins and when the connection is given back
    _raw: socket.socket | None = None
    _connected_now = False
    expired = False

    def connect(self) -> None:
        self._begin()
        self._connected_now = True
        super().connect()

    def request(self, *args: Any, **kwargs: Any) -> None:
        if self._connected_now:
            self._connected_now = False  # connect() began this exchange (TLS handshake too)
        else:
            self._begin()
        super().request(*args, **kwargs)

    def _begin(self) -> None:
        """A new exchange: the watchdog cuts it when the thread's time for it runs out."""
        self.use += 1
        self.expired = False
        _exchange.conn = self
        until = self.transport.until()
        if until is not None:
            self.transport.watchdog.watch(self, until)

    def getresponse(self) -> Any:
        """The response, unless the watchdog cut the exchange while its status line and
        headers came: a peer's half-sent headers, ended by the cut, are no answer."""
        response = super().getresponse()
        if self.expired:
            response.close()
            raise TimeoutError("the answer's headers did not come in time")
        return response

    def cut(self) -> None:
        """Wake whatever reads or writes this connection now: its time is up."""
        self.expired = True
        for sock in (self.sock, self._raw):
            if sock is None:
                continue
            # The plain socket's shutdown, also for a TLS socket (whose own shutdown would drop
            # its TLS state under the reading thread); closed, detached or never connected
            # sockets say OSError.
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def _new_conn(self) -> socket.socket:
        host, port = self._dns_host, self.port
        transport = self.transport
        why = transport.policy.refusal_by_name(host, port)
        if why is not None:
            transport.report(ConnectDecision(host, port, None, why))
            raise EgressBlocked(self, why)
        try:
            addresses = transport.lookup(host, port)
        except socket.gaierror as exc:
            raise NewConnectionError(self, f"cannot resolve {host}: {exc}") from None
        except TimeoutError:
            raise ConnectTimeoutError(self, f"no DNS answer for {host} in time") from None
        refusals: list[str] = []
        last: OSError | None = None
        for family, address in addresses:
            why = transport.judge(host, port, address)
            if why is not None:
                refusals.append(why)
                continue
            left = transport.left()
            if left is not None and left <= 0:
                raise ConnectTimeoutError(self, f"no time left to connect to {host}")
            sock = socket.socket(family, socket.SOCK_STREAM)
            self._raw = sock
            try:
                timeout = self.timeout if isinstance(self.timeout, int | float) else None
                if left is not None:
                    timeout = left if timeout is None else min(timeout, left)
                sock.settimeout(timeout)
                for option in self.socket_options or ():
                    sock.setsockopt(*option)
                if self.source_address:
                    sock.bind(self.source_address)
                sock.connect((str(address), port))
                return sock
            except TimeoutError:
                sock.close()
                raise ConnectTimeoutError(self, f"connecting to {host} timed out") from None
            except OSError as exc:
                sock.close()
                last = exc
                if self.expired:
                    raise ConnectTimeoutError(self, f"no time left to connect to {host}") from None
        if last is None and refusals:
            raise EgressBlocked(self, refusals[0])
        # Chained, so the cause (connection refused, unreachable) can be told.
        raise NewConnectionError(self, f"cannot connect to {host}: {last}") from last


class _GuardedHTTPSConnection(_GuardedConnection, u3connection.HTTPSConnection):
    pass


class _GuardedPool(u3pool.HTTPConnectionPool):
    def _put_conn(self, conn: Any) -> None:
        if isinstance(conn, _GuardedConnection):
            conn.use += 1  # the exchange is over: the watchdog lets this connection be
        super()._put_conn(conn)


class _GuardedHTTPSPool(_GuardedPool, u3pool.HTTPSConnectionPool):
    pass


class Transport:
    """What the guarded connections share: the egress policy (replaceable at any time), the
    DNS lookup, the watchdog, and the per-thread end of the current exchange."""

    def __init__(
        self,
        policy: EgressPolicy,
        *,
        resolve: Resolve = system_resolve,
        on_connect: Callable[[ConnectDecision], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy
        self.on_connect = on_connect
        self.watchdog = Watchdog(clock)
        self._resolve = resolve
        self._clock = clock
        self._dns: ThreadPoolExecutor | None = None  # made on the first lookup
        self._dns_lock = threading.Lock()
        self._local = threading.local()

    def until(self) -> float | None:
        """When the current thread's exchange must end (None: no bound)."""
        until: float | None = getattr(self._local, "until", None)
        return until

    def left(self) -> float | None:
        until = self.until()
        return None if until is None else until - self._clock()

    def bound(self, seconds: float | None) -> None:
        """The current thread's next exchange ends `seconds` from now (None: unbounded)."""
        self._local.until = None if seconds is None else self._clock() + seconds

    def lookup(self, host: str, port: int) -> list[tuple[int, Address]]:
        """Resolve `host` (an IP literal without DNS) within the current exchange's time."""
        try:
            address = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            pass
        else:
            family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
            return [(family, address)]
        left = self.left()
        with self._dns_lock:
            if self._dns is None:
                self._dns = ThreadPoolExecutor(DNS_THREADS, thread_name_prefix="transport-dns")
            future = self._dns.submit(self._resolve, host, port)
        try:
            return future.result(timeout=left if left is None else max(left, 0.0))
        except FutureTimeout:
            raise TimeoutError(f"no DNS answer for {host}") from None

    def close(self) -> None:
        """Let the lookup threads go (the session using this transport is closed); a later
        lookup makes new ones."""
        with self._dns_lock:
            dns, self._dns = self._dns, None
        if dns is not None:
            dns.shutdown(wait=False, cancel_futures=True)

    def judge(self, host: str, port: int, address: Address) -> str | None:
        """Why connecting to `address` for `host:port` is refused (None: allowed), reported."""
        why = self.policy.refusal(host, port, address)
        self.report(ConnectDecision(host, port, address, why))
        return why

    def report(self, decision: ConnectDecision) -> None:
        if self.on_connect is not None:
            self.on_connect(decision)

    def check_target(self, url: str) -> None:
        """For a proxied request: judge the target's name, and its addresses when it is an
        address or resolves here (behind a proxy it often does not: the proxy resolves it)."""
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        why = self.policy.refusal_by_name(host, port)
        if why is None:
            try:
                addresses = self.lookup(host, port)
            except (OSError, TimeoutError):
                addresses = []
            for _, address in addresses:
                why = self.judge(host, port, address)
                if why is not None:
                    break
        if why is not None:
            raise EgressDenied(why)


class GuardedAdapter(requests.adapters.HTTPAdapter):
    """An HTTPAdapter whose connections go through `transport` (see the module docstring).
    The read timeout of each request is its total time."""

    def __init__(self, transport: Transport, **kwargs: Any) -> None:
        self.transport = transport
        attrs = {"transport": transport}
        http = type("GuardedConnection", (_GuardedConnection,), attrs)
        https = type("GuardedHTTPSConnection", (_GuardedHTTPSConnection,), attrs)
        self._pools: Mapping[str, type[u3pool.HTTPConnectionPool]] = {
            "http": type("GuardedPool", (_GuardedPool,), {"ConnectionCls": http}),
            "https": type("GuardedHTTPSPool", (_GuardedHTTPSPool,), {"ConnectionCls": https}),
        }
        super().__init__(**kwargs)

    def close(self) -> None:
        super().close()
        self.transport.close()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(self._pools)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        manager.pool_classes_by_scheme = dict(self._pools)
        return manager

    def send(
        self, request: requests.PreparedRequest, *args: Any, **kwargs: Any
    ) -> requests.Response:
        timeout = kwargs.get("timeout")
        total = timeout[1] if isinstance(timeout, tuple) else timeout
        self.transport.bound(float(total) if isinstance(total, int | float) else None)
        proxies = kwargs.get("proxies") or {}
        if request.url and requests.utils.select_proxy(request.url, proxies):
            self.transport.check_target(request.url)
        try:
            return super().send(request, *args, **kwargs)
        except requests.ConnectionError as exc:
            reason = getattr(exc.args[0], "reason", None) if exc.args else None
            if isinstance(reason, EgressBlocked):
                raise EgressDenied(reason.reason) from None
            left = self.transport.left()
            if left is not None and left <= 0:
                raise requests.Timeout(f"no answer in time ({type(exc).__name__})") from None
            raise
