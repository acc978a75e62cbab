"""The threaded loopback HTTP server the test servers share, and its thread."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Self


class LoopbackServer(ThreadingHTTPServer):
    """ThreadingHTTPServer with a listen backlog that bursts of concurrent clients fit in.

    Python's default backlog is 5: ten threads connecting at once (a decision resolving ten
    images) would see some connections wait a second for a SYN retry, and timings measure that
    instead of the code under test.
    """

    daemon_threads = True
    request_queue_size = 128


class Closing:
    """`with x:` closes `x` on the way out: for the loopback servers and relays of the tests."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class ServedInThread(Closing):
    """A LoopbackServer serving from a daemon thread; `close()` (or leaving a `with`) stops it.

    Subclasses call `_serve(handler)` once and may extend `close()`.
    """

    _server: LoopbackServer
    _thread: threading.Thread

    def _serve(
        self,
        handler: type[BaseHTTPRequestHandler],
        *,
        bind: str = "127.0.0.1",
        server_class: type[LoopbackServer] = LoopbackServer,
    ) -> int:
        """Start serving on a free port of `bind`; returns the port."""
        self._server = server_class((bind, 0), handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return int(self._server.server_address[1])

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
