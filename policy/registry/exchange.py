"""One bounded HTTP exchange: the single entry point the protocol modules (the registry
client, the token authenticator, the Docker Hub tier lookup) use to talk to the network.

`exchange` sends one request through a session (whose guarded transport enforces the egress
policy and the exchange's total time, see `transport`), never follows a redirect, reads the
body the caller asks for (`Cap`: how many bytes, and how) under that cap and the caller's
deadline, and returns a `Reply`. Whatever goes wrong on the way is one `ExchangeFailed`
naming what happened in transport terms (no time left, refused by the egress policy,
unreachable, reading failed or was cut at the deadline, too large, an encoding not asked
for); each protocol module words it for its own readers. No protocol module touches a
response stream, a chunk loop or `transport.cut_short()` itself.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import requests
from requests.structures import CaseInsensitiveDict
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import TimeoutError as Urllib3Timeout

from policy.deadline import Deadline
from policy.registry import transport
from policy.registry.transport import EgressDenied

CHUNK_BYTES = 64 * 1024


@dataclass(frozen=True)
class Cap:
    """How to read one answer's body: at most `limit` bytes, and `how`:

    - "whole": the bytes as sent, all of them, in identity encoding only (content checked
      against a digest); a declared or actual length over `limit` is `TooLarge`, another
      `Content-Encoding` is `Encoded`.
    - "decoded": the content decoded (a JSON API may gzip), all of it; over `limit` is
      `TooLarge`.
    - "prefix": the bytes as sent, cut at `limit` (an error body quoted in a message).
    """

    limit: int
    how: Literal["whole", "decoded", "prefix"] = "whole"


ReadPolicy = Callable[[int], Cap | None]
"""What to read of an answer with this status (None: not its body)."""


@dataclass(frozen=True)
class Reply:
    """An answer: its status, headers and the body read as asked. `cut` says the transport
    cut the exchange at its deadline after the headers came (possible only when no body was
    read: a cut body is a `ReadFailed`)."""

    status: int
    headers: CaseInsensitiveDict[str]
    body: bytes
    cut: bool = False


class ExchangeFailed(Exception):
    """No usable answer. `status` and `headers` are what came before the failure (None:
    nothing), `cut` whether the transport had cut the exchange at its deadline by then."""

    status: int | None = None
    headers: CaseInsensitiveDict[str] | None = None
    cut: bool = False


class NoTimeLeft(ExchangeFailed):
    """Nothing was sent: the time for the exchange was already up."""


class Refused(ExchangeFailed):
    """The egress policy refused the connection (nothing was sent); `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Unreachable(ExchangeFailed):
    """Sending the request or receiving its status line and headers failed: `cause`."""

    def __init__(self, cause: requests.RequestException) -> None:
        super().__init__(type(cause).__name__)
        self.cause = cause

    @property
    def timed_out(self) -> bool:
        """Whether `requests` reported a timeout."""
        return isinstance(self.cause, requests.Timeout)


class ReadFailed(ExchangeFailed):
    """Reading the body failed (`cause`), or it "ended" because the transport cut it at its
    deadline (`cut`, `cause` None): either way no complete answer."""

    def __init__(self, cause: BaseException | None) -> None:
        super().__init__(type(cause).__name__ if cause else "cut")
        self.cause = cause


class OutOfTime(ExchangeFailed):
    """The caller's deadline passed while the body was being read."""


class TooLarge(ExchangeFailed):
    """The body is over `limit` bytes (`declared`: the length the answer announced, when that
    was what told)."""

    def __init__(self, limit: int, declared: int | None = None) -> None:
        super().__init__(f"over {limit} bytes")
        self.limit = limit
        self.declared = declared


class Encoded(ExchangeFailed):
    """A "whole" body came in an `encoding` other than identity (it was not asked for)."""

    def __init__(self, encoding: str) -> None:
        super().__init__(encoding)
        self.encoding = encoding


def exchange(
    session: requests.Session,
    method: str,
    url: str,
    *,
    timeout: float,
    read: ReadPolicy,
    deadline: Deadline | None = None,
    headers: Mapping[str, str] | None = None,
    params: Any = None,
    data: Any = None,
    auth: Any = None,
    verify: bool | str | None = None,
) -> Reply:
    """Send one request (no redirects followed) taking at most `timeout` seconds in all, read
    the body `read` asks for by status, checking `deadline` between chunks; the `Reply`, or
    an `ExchangeFailed` saying what went wrong. `verify` None: the session's own."""
    if timeout <= 0:
        raise NoTimeLeft("no time left to send")
    transport.forget_exchange()
    try:
        response = session.request(
            method,
            url,
            headers=headers,
            params=params,
            data=data,
            auth=auth,
            verify=verify,
            timeout=timeout,
            allow_redirects=False,
            stream=True,
        )
    except EgressDenied as exc:
        raise Refused(exc.reason) from None
    except requests.RequestException as exc:
        failure = Unreachable(exc)
        failure.cut = transport.cut_short()
        raise failure from None
    status, headers_in = response.status_code, CaseInsensitiveDict(response.headers)
    try:
        with response:
            cap = read(status)
            body = b"" if cap is None else _read(response, cap, deadline)
    except ExchangeFailed as failure:
        failure.status, failure.headers = status, headers_in
        failure.cut = transport.cut_short()
        raise
    return Reply(status, headers_in, body, transport.cut_short())


def _read(response: requests.Response, cap: Cap, deadline: Deadline | None) -> bytes:
    """The body as `cap` says, checking `deadline` before each chunk."""
    if cap.how == "whole":
        encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise Encoded(encoding)
        declared = content_length(response.headers)
        if declared is not None and declared > cap.limit:
            raise TooLarge(cap.limit, declared)
    chunks: list[bytes] = []
    total = 0
    source = _chunks(response, decoded=cap.how == "decoded")
    try:
        while True:
            if deadline is not None and deadline.expired:
                raise OutOfTime("deadline passed while reading")
            chunk = next(source, b"")
            if not chunk:
                break
            total += len(chunk)
            if total > cap.limit:
                if cap.how != "prefix":
                    raise TooLarge(cap.limit)
                chunks.append(chunk[: len(chunk) - (total - cap.limit)])
                break
            chunks.append(chunk)
    except (requests.RequestException, OSError, Urllib3Error) as exc:
        raise ReadFailed(exc) from None
    if transport.cut_short():  # the body "ended" because its time was up: no answer
        raise ReadFailed(None)
    return b"".join(chunks)


def _chunks(response: requests.Response, *, decoded: bool) -> Iterator[bytes]:
    """The body's chunks: content-decoded, or the bytes as they came."""
    if decoded:
        yield from response.iter_content(CHUNK_BYTES)
        return
    raw = response.raw
    while chunk := raw.read1(CHUNK_BYTES, decode_content=False):
        yield chunk


def content_length(headers: Mapping[str, str]) -> int | None:
    """The `Content-Length` an answer declares, None when absent or not a number."""
    value = headers.get("Content-Length")
    if value is None or not value.strip().isdigit():
        return None
    return int(value.strip())


def describe_failure(exc: BaseException) -> str:
    """A short cause for a failed request, without URLs, headers or credentials."""
    seen: set[int] = set()
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append(current)
        nxt = getattr(current, "reason", None)
        if not isinstance(nxt, BaseException):
            nxt = next((a for a in current.args if isinstance(a, BaseException)), None)
        current = nxt or current.__cause__ or current.__context__
    for error in reversed(chain):
        if isinstance(error, ssl.SSLCertVerificationError):
            return f"TLS certificate verification failed ({error.verify_message})"
        if isinstance(error, ssl.SSLError):
            return "TLS handshake failed"
    for error in reversed(chain):
        if isinstance(error, OSError) and error.strerror:
            return error.strerror.lower()
    for error in chain:
        if isinstance(error, requests.Timeout | TimeoutError | Urllib3Timeout):
            return "timed out"
    names = {type(e).__name__ for e in chain}
    if "IncompleteRead" in names or "ProtocolError" in names:
        return "connection closed before the body was complete"
    return type(exc).__name__
