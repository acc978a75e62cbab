"""Loopback peers that hold a connection open on purpose, and a listener that only counts.

- `Trickle`: answers every request with a status line and headers sent one byte every
  `interval` seconds, without end (the header slowloris no per-read timeout stops); `active`
  counts the connections whose client has not hung up (a send fails within two bytes). With
  `hang_up` it closes the connection once it has sent what it was given, with a FIN or a TCP
  reset (a body shorter than its `Content-Length`, a reset mid-body).
- `Counting`: accepts connections and counts them, answering nothing (a destination that
  must never be reached).
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from typing import Literal

from tests.support.httpserver import Closing

HEAD = b"HTTP/1.1 200 OK\r\n" + b"".join(
    b"X-Slow-%d: %s\r\n" % (i, b"x" * 40) for i in range(10**4)
)


class _Listener(Closing):
    def __init__(self, bind: str = "127.0.0.1", port: int = 0) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((bind, port))
        self._sock.listen(256)
        self.port = self._sock.getsockname()[1]
        self.host = f"{bind}:{self.port}"
        self.url = f"http://{self.host}"
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.connections = 0
        self.active = 0  # connections the client has not hung up yet
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                self.active += 1
                self._open.append(conn)
            threading.Thread(target=self._serving, args=(conn,), daemon=True).start()

    def _serving(self, conn: socket.socket) -> None:
        try:
            self._serve(conn)
        finally:
            with self._lock:
                self.active -= 1

    def _serve(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._stop.set()
        self._sock.close()
        with self._lock:
            for conn in self._open:
                conn.close()


class Trickle(_Listener):
    """Reads a request, then sends its status line and headers a byte every `interval` s
    (or: sends `at_once` at once, then `trickled` a byte every `interval` s); then, with
    `hang_up` "fin" or "reset", closes the connection that way (else keeps it open)."""

    def __init__(
        self,
        interval: float = 0.3,
        *,
        at_once: bytes = b"",
        trickled: bytes = HEAD,
        hang_up: Literal["fin", "reset"] | None = None,
    ) -> None:
        self.interval = interval
        self.at_once = at_once
        self.trickled = trickled
        self.hang_up = hang_up
        super().__init__()

    def _serve(self, conn: socket.socket) -> None:
        try:
            conn.recv(65536)
            if self.at_once:
                conn.sendall(self.at_once)
            for i in range(len(self.trickled)):
                if self._stop.is_set():
                    return
                conn.sendall(self.trickled[i : i + 1])
                time.sleep(self.interval)
            if self.hang_up == "reset":  # SO_LINGER with a zero timeout: close() sends RST
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            if self.hang_up is not None:
                conn.close()
        except OSError:
            return  # the client hung up: what the test wants


class Counting(_Listener):
    """Counts connections; answers nothing."""

    def _serve(self, conn: socket.socket) -> None:
        return
