"""The threaded loopback HTTP server the test servers share."""

from __future__ import annotations

from http.server import ThreadingHTTPServer


class LoopbackServer(ThreadingHTTPServer):
    """ThreadingHTTPServer with a listen backlog that bursts of concurrent clients fit in.

    Python's default backlog is 5: ten threads connecting at once (a decision resolving ten
    images) would see some connections wait a second for a SYN retry, and timings measure that
    instead of the code under test.
    """

    daemon_threads = True
    request_queue_size = 128
