"""A loopback TCP relay that holds every HTTP request `latency` seconds and counts it.

`CountingProxy` does the same at the HTTP level: it parses each request and response with
`http.server`/`http.client` and opens an upstream connection per request, which costs a few
milliseconds of CPU per request. That is fine for tests; in the cold-resolution benchmark the
proxies share one core with the registry, and their CPU was a large part of what a burst of
requests waits for — cost a real network does not add. The relay reads only request heads
(for the count and the request's length) and copies bytes otherwise, on one asyncio loop, over
one upstream connection per client connection (keep-alive passes through).

Requests with a chunked body are not supported (the connection is closed); registry clients
send none.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading

from tests.support.httpserver import Closing
from tests.support.proxy import RequestCounts

MAX_HEAD = 64 * 1024


class LatencyRelay(RequestCounts, Closing):
    """Relay connections to `upstream` (an http:// base URL), holding each request `latency`
    seconds before passing it on; `counts()` by (method, path without query), as
    `CountingProxy.counts()`."""

    def __init__(self, upstream: str, *, latency: float = 0.0) -> None:
        super().__init__(upstream, latency)
        self._loop = asyncio.new_event_loop()
        self._connections: set[asyncio.Task[None]] = set()
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(started,), daemon=True)
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError("the relay did not start")
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"

    def close(self) -> None:
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    # --- the loop ---------------------------------------------------------------------------

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._accept, "127.0.0.1", 0, backlog=512, limit=MAX_HEAD)
        )
        self.port = int(server.sockets[0].getsockname()[1])
        started.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()
            for task in list(self._connections):
                task.cancel()
            self._loop.run_until_complete(
                asyncio.gather(*self._connections, return_exceptions=True)
            )
            self._loop.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await self._relay(reader, writer)
        finally:
            self._connections.discard(task)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _no_delay(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection(
                self.upstream_host, self.upstream_port
            )
        except OSError:
            writer.close()
            return
        _no_delay(up_writer)
        answers = asyncio.ensure_future(_copy(up_reader, writer))
        try:
            await self._requests(reader, up_writer)
        finally:
            up_writer.close()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await answers  # the upstream's last answer, then its close, reach the client

    async def _requests(
        self, reader: asyncio.StreamReader, up_writer: asyncio.StreamWriter
    ) -> None:
        """Pass each request on, `latency` seconds after it arrived, in order."""
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                return
            request_line, _, headers = head.partition(b"\r\n")
            method, _, rest = request_line.decode("latin-1").partition(" ")
            target = rest.partition(" ")[0]
            length = 0
            for line in headers.split(b"\r\n"):
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value.strip())
                elif name == b"transfer-encoding":
                    return  # a chunked request body: not supported (see the module docstring)
            try:
                body = await reader.readexactly(length) if length else b""
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            self._record(method, target)
            if self.latency:
                await asyncio.sleep(self.latency)
            try:
                up_writer.write(head + body)
                await up_writer.drain()
            except ConnectionError:
                return


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


def _no_delay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
