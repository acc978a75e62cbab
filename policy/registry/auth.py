"""Registry authentication: `WWW-Authenticate` parsing, token-realm policy, token fetch and cache.

The protocol pieces are plain functions, table-tested without a network:

- `parse_challenges` reads a `WWW-Authenticate` header (RFC 7235 §4.1 grammar: several
  challenges, auth-params with quoted strings and escapes, token68).
- `realm_refusal` / `realm_allowed` decide whether a Bearer realm may be contacted at all.
- `build_token_request` describes the token request (the Docker registry token spec's
  `GET realm?service=..&scope=..` with Basic auth, or the OAuth2 refresh-token `POST`).
- `parse_token_response` reads the token server's JSON answer.

`Authenticator` ties them to a `requests.Session`, a `CredentialStore` and a clock, and keeps a
thread-safe cache of Bearer tokens keyed by (registry, realm, service, scope).

Safe by construction: nothing (not even an anonymous request) is sent to a token realm that
`realm_refusal` rejects, redirects from a token realm are never followed, and no error message
carries a password or a token.
"""

from __future__ import annotations

import base64
import ipaddress
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal
from urllib.parse import SplitResult, urlsplit

import requests

from policy import jsonbound, reference
from policy.cache import Coalescer
from policy.errors import (
    EgressRefused,
    RateLimited,
    RegistryAuthError,
    RegistryError,
    RegistryUnavailable,
)
from policy.registry import exchange
from policy.registry.credentials import Credential, CredentialStore

__all__ = [
    "CLIENT_ID",
    "Authenticator",
    "Challenge",
    "TokenRequest",
    "TokenResponse",
    "basic_header",
    "build_token_request",
    "parse_challenges",
    "parse_token_response",
    "realm_allowed",
    "realm_refusal",
    "registrable_domain",
]

CLIENT_ID = "image-policy"
"""The OAuth2 `client_id` sent with refresh-token requests."""

DEFAULT_EXPIRES_IN = 60
"""Token lifetime when the server does not say, and the minimum honoured (token spec)."""

EXPIRY_MARGIN = 10.0
"""Seconds before a token's expiry at which it is no longer handed out."""

MAX_TOKEN_BODY = 1 << 20
"""A token response larger than this (1 MiB) is refused."""

MAX_CACHED_TOKENS = 4096

# --------------------------------------------------------------------------------------------
# WWW-Authenticate parsing (RFC 7235 §2.1, §4.1; RFC 7230 §3.2.6)
# --------------------------------------------------------------------------------------------

_ALPHA_DIGIT = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_TCHAR = frozenset(_ALPHA_DIGIT + "!#$%&'*+-.^_`|~")
_TOKEN68 = frozenset(_ALPHA_DIGIT + "-._~+/")
_OWS = " \t"
# Schemes whose challenges carry auth-params, never a token68.
_PARAM_SCHEMES = frozenset({"basic", "bearer"})


@dataclass(frozen=True)
class Challenge:
    """One challenge of a `WWW-Authenticate` header.

    `scheme` is lowercased; `params` maps lowercased auth-param names to their unquoted values;
    `token68` holds the token68 form some schemes use instead of params.
    """

    scheme: str
    params: dict[str, str] = field(default_factory=dict)
    token68: str = ""


class _Scanner:
    """A cursor over a header value; every failure is a RegistryAuthError."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    @property
    def eof(self) -> bool:
        return self.pos >= len(self.text)

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def fail(self, problem: str) -> RegistryAuthError:
        return RegistryAuthError(
            f"malformed WWW-Authenticate header: {problem} at position {self.pos}"
        )

    def skip_ows(self) -> bool:
        start = self.pos
        while self.peek() and self.peek() in _OWS:
            self.pos += 1
        return self.pos > start

    def skip_separators(self) -> None:
        """Skip OWS and commas (the `#rule` list allows empty elements)."""
        while self.peek() and (self.peek() in _OWS or self.peek() == ","):
            self.pos += 1

    def token(self) -> str:
        start = self.pos
        while self.peek() and self.peek() in _TCHAR:
            self.pos += 1
        return self.text[start : self.pos]

    def quoted_string(self) -> str:
        # Caller has checked the opening quote.
        self.pos += 1
        out: list[str] = []
        while True:
            if self.eof:
                raise self.fail("unterminated quoted string")
            c = self.text[self.pos]
            if c == '"':
                self.pos += 1
                return "".join(out)
            if c == "\\":
                self.pos += 1
                if self.eof:
                    raise self.fail("unterminated escape in quoted string")
                c = self.text[self.pos]
            if _is_ctl(c):
                raise self.fail(f"control character {c!r} in quoted string")
            out.append(c)
            self.pos += 1

    def at_param(self, *, token68_allowed: bool) -> bool:
        """Does an auth-param (`token BWS "=" ...`) start here (rather than a token68/scheme)?"""
        start = self.pos
        try:
            if not self.token():
                return False
            self.skip_ows()
            if self.peek() != "=":
                return False
            self.pos += 1
            self.skip_ows()
            nxt = self.peek()
            if nxt == "=":
                return False  # token68 padding, e.g. `abc==`
            # `name=` followed by nothing: a token68 with one pad char where one may stand,
            # otherwise an auth-param missing its value (reported by the param parser).
            return not (token68_allowed and nxt in ("", ","))
        finally:
            self.pos = start

    def param(self) -> tuple[str, str]:
        name = self.token().lower()
        self.skip_ows()
        self.pos += 1  # "=" (checked by at_param)
        self.skip_ows()
        if self.peek() == '"':
            return name, self.quoted_string()
        value = self.token()
        if not value:
            raise self.fail(f"auth-param {name!r} has no value")
        return name, value

    def token68(self) -> str:
        start = self.pos
        while self.peek() and self.peek() in _TOKEN68:
            self.pos += 1
        if self.pos == start:
            return ""
        while self.peek() == "=":
            self.pos += 1
        return self.text[start : self.pos]


def _is_ctl(c: str) -> bool:
    return (ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F


def parse_challenges(header: str) -> list[Challenge]:
    """Parse a `WWW-Authenticate` value into its challenges, in order.

    Follows RFC 7235: `1#challenge`, `challenge = auth-scheme [ 1*SP ( token68 / #auth-param ) ]`,
    `auth-param = token BWS "=" BWS ( token / quoted-string )`. Param names are case-insensitive
    (lowercased here) and may appear once per challenge. Anything malformed raises
    RegistryAuthError, never another exception type.
    """
    if not isinstance(header, str):
        raise RegistryAuthError("malformed WWW-Authenticate header: not a string")
    s = _Scanner(header)
    s.skip_separators()
    if s.eof:
        raise RegistryAuthError("empty WWW-Authenticate header")
    challenges: list[Challenge] = []
    while True:
        scheme = s.token().lower()
        if not scheme:
            raise s.fail(f"expected an auth scheme, found {s.peek()!r}")
        params: dict[str, str] = {}
        token68 = ""
        spaced = s.skip_ows()
        if not (s.eof or s.peek() == ","):
            if not spaced:
                raise s.fail(f"unexpected {s.peek()!r} after scheme {scheme!r}")
            if s.at_param(token68_allowed=True):
                name, value = s.param()
                params[name] = value
            else:
                token68 = s.token68()
                if not token68:
                    raise s.fail(f"unexpected {s.peek()!r} after scheme {scheme!r}")
                if scheme in _PARAM_SCHEMES:
                    raise s.fail(f"{scheme} challenge must carry auth-params, not a token68")
        next_scheme = False
        while not next_scheme:
            s.skip_ows()
            if s.eof:
                challenges.append(Challenge(scheme, params, token68))
                return challenges
            if s.peek() != ",":
                raise s.fail(f"expected ',' but found {s.peek()!r}")
            s.skip_separators()
            if s.eof:
                challenges.append(Challenge(scheme, params, token68))
                return challenges
            if not token68 and s.at_param(token68_allowed=False):
                name, value = s.param()
                if name in params:
                    raise s.fail(f"auth-param {name!r} repeated in the {scheme} challenge")
                params[name] = value
            else:
                challenges.append(Challenge(scheme, params, token68))
                next_scheme = True


# --------------------------------------------------------------------------------------------
# Token realm policy
# --------------------------------------------------------------------------------------------

DOCKER_HUB_REALM_HOST = "auth.docker.io"

# Second-level labels that, under a two-letter country TLD, act as public suffixes
# (example.co.uk, example.com.au, example.ac.jp, ...).
_GENERIC_SECOND_LEVEL = frozenset({"ac", "co", "com", "edu", "gov", "net", "org"})
_HOST_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789.-")
_ZERO_NETWORK = ipaddress.ip_network("0.0.0.0/8")

_IP = ipaddress.IPv4Address | ipaddress.IPv6Address


def registrable_domain(host: str) -> str:
    """A naive eTLD+1 of a lowercase host name, used to match a token realm to its registry.

    The heuristic, without the Public Suffix List: the last two labels (`example.com` for
    `registry.example.com`), or the last three when the TLD has two letters and the label
    before it is a generic second level (`ac co com edu gov net org`: `example.co.uk`).
    A host with fewer labels than that is its own domain (`localhost`). Known limits: shared
    hosting suffixes (`github.io`, `herokuapp.com`) are treated as one domain, and country
    suffixes outside that list (`example.gv.at`) are cut one label too short.
    """
    labels = host.split(".")
    keep = 2
    if len(labels) >= 3 and len(labels[-1]) == 2 and labels[-2] in _GENERIC_SECOND_LEVEL:
        keep = 3
    return ".".join(labels[-keep:])


def _split_hostport(hostport: str) -> tuple[str, int | None]:
    """Split `host[:port]` (IPv6 in brackets, or bare) into a normalized host and a port."""
    text = hostport.strip().lower()
    port: int | None = None
    if text.startswith("["):
        end = text.find("]")
        host = text[1:end] if end > 0 else text[1:]
        rest = text[end + 1 :] if end > 0 else ""
        if rest.startswith(":") and rest[1:].isdigit():
            port = int(rest[1:])
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        if port_text.isdigit():
            port = int(port_text)
    else:
        host = text
    return host.rstrip("."), port


def _ip_of(host: str) -> _IP | None:
    """The IP address a host string denotes, including legacy IPv4 forms (`0xa9fea9fe`, `127.1`).

    Those legacy forms are resolved by the system's `inet_aton`, so a realm written that way
    would reach the address; treating them as addresses keeps them under the IP rules.
    """
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if host and all(c in "0123456789abcdefx." for c in host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def _forbidden_ip(ip: _IP) -> bool:
    """Link-local (169.254.0.0/16, fe80::/10), unspecified or 0.0.0.0/8: never a token realm."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_link_local or ip.is_unspecified:
        return True
    return isinstance(ip, ipaddress.IPv4Address) and ip in _ZERO_NETWORK


def _is_loopback(host: str, ip: _IP | None) -> bool:
    return host == "localhost" or (ip is not None and ip.is_loopback)


def _valid_host_name(host: str) -> bool:
    return bool(host) and all(c in _HOST_CHARS for c in host) and ".." not in host


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


def _trusted_match(realm: SplitResult, host: str, trusted: Sequence[str]) -> str | None:
    """The trusted entry that covers this realm, if any.

    An entry is a host (`auth.example.com`, optionally `:port`), which trusts https realms on
    that host, or a URL prefix (`https://auth.example.com/token`), which trusts realms starting
    with it at a path boundary. Only an explicit `http://` prefix trusts a plain-http realm.
    """
    realm_port = realm.port or _default_port(realm.scheme)
    for entry in trusted:
        text = entry.strip()
        if "://" in text:
            try:
                prefix = urlsplit(text)
                prefix_port = prefix.port or _default_port(prefix.scheme)
            except ValueError:
                continue
            if (prefix.hostname or "").rstrip(".") != host or prefix.scheme != realm.scheme:
                continue
            if prefix_port != realm_port:
                continue
            base = prefix.path
            path = realm.path or "/"
            if (
                not base
                or base == "/"
                or path == base
                or path.startswith(base if base.endswith("/") else base + "/")
            ):
                return entry
        else:
            entry_host, entry_port = _split_hostport(text)
            if entry_host != host or realm.scheme != "https":
                continue
            if entry_port is None or entry_port == realm_port:
                return entry
    return None


def realm_refusal(
    realm_url: str,
    registry_host: str,
    *,
    trusted: Sequence[str] = (),
    registry: str | None = None,
) -> str | None:
    """Why credentials (or even an anonymous request) must not go to this token realm, or None.

    `registry_host` is the host actually contacted (`host[:port]`); `registry` the logical name
    used in the advice (defaults to `registry_host`). A realm is allowed when all hold:

    - it is `https`, or `http` on the registry's own host when that host is loopback
      (`localhost`, 127.0.0.0/8, ::1), or `http` under an explicit `http://` trusted prefix;
    - it is never link-local (169.254.0.0/16, fe80::/10), unspecified or 0.0.0.0/8, even if
      trusted; and an IP literal only when the registry is on that very address;
    - it is on the registry's host, on the same registrable domain (`registrable_domain`), on
      `auth.docker.io` for Docker Hub's hosts, or covered by a `trusted` entry.
    """
    name = registry or registry_host
    try:
        realm = urlsplit(realm_url.strip())
        realm.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        return "refusing token realm: the realm is not a valid URL"
    host = (realm.hostname or "").rstrip(".")
    if realm.scheme not in ("http", "https") or not host:
        return "refusing token realm: the realm must be an absolute http(s) URL"
    shown = host
    if realm.username is not None or realm.password is not None:
        return f"refusing token realm {shown}: the realm URL carries user information"
    realm_ip = _ip_of(host)
    if realm_ip is None and not _valid_host_name(host):
        return f"refusing token realm {shown!r}: not a valid host name"
    if realm_ip is not None and _forbidden_ip(realm_ip):
        return f"refusing token realm {shown}: link-local or unspecified addresses are never used"
    reg_host, _ = _split_hostport(registry_host)
    reg_ip = _ip_of(reg_host)
    same_host = host == reg_host or (realm_ip is not None and realm_ip == reg_ip)
    if realm_ip is not None and not same_host:
        return f"refusing token realm {shown}: an IP address the registry {name} is not on"
    trusted_entry = _trusted_match(realm, host, trusted)
    if realm.scheme == "http" and not (
        (same_host and _is_loopback(reg_host, reg_ip))
        or (trusted_entry is not None and trusted_entry.strip().startswith("http://"))
    ):
        return (
            f"refusing token realm {shown}: plain http is only used for a loopback registry "
            "on the same host (or an explicitly trusted http:// prefix)"
        )
    if same_host or trusted_entry is not None:
        return None
    if reg_host in reference.DOCKER_HUB_HOSTS and host == DOCKER_HUB_REALM_HOST:
        return None
    if (
        realm_ip is None
        and reg_ip is None
        and "." in host
        and "." in reg_host
        and registrable_domain(host) == registrable_domain(reg_host)
    ):
        return None
    return (
        f"refusing token realm {shown}: not on the registry's domain "
        f"(configure registries.{name}.tokenRealms to trust it)"
    )


def realm_allowed(realm_url: str, registry_host: str, *, trusted: Sequence[str] = ()) -> bool:
    """True when `realm_refusal` has no objection to this realm for this registry host."""
    return realm_refusal(realm_url, registry_host, trusted=trusted) is None


# --------------------------------------------------------------------------------------------
# Token request and response
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenRequest:
    """What to send to a token realm. `basic` (username, password) is hidden from repr."""

    method: Literal["GET", "POST"]
    url: str
    params: tuple[tuple[str, str], ...] = ()
    form: tuple[tuple[str, str], ...] = ()
    basic: tuple[str, str] | None = field(default=None, repr=False)


def build_token_request(
    realm: str, service: str, scopes: Sequence[str], credential: Credential | None
) -> TokenRequest:
    """The token request for these scopes.

    With an identity (refresh) token: the OAuth2 form `POST` (`grant_type=refresh_token`,
    `refresh_token`, `service`, `scope` space-joined, `client_id`). Otherwise the token spec's
    `GET realm?service=..&scope=..&scope=..`, with Basic auth (and `account`) when a username
    and password are known, anonymous when not.
    """
    if credential is not None and credential.identity_token:
        form: list[tuple[str, str]] = [
            ("grant_type", "refresh_token"),
            ("refresh_token", credential.identity_token),
            ("client_id", CLIENT_ID),
        ]
        if service:
            form.append(("service", service))
        if scopes:
            form.append(("scope", " ".join(scopes)))
        return TokenRequest("POST", realm, form=tuple(form))
    params: list[tuple[str, str]] = []
    if service:
        params.append(("service", service))
    params.extend(("scope", s) for s in scopes)
    basic: tuple[str, str] | None = None
    if credential is not None and (credential.username or credential.password):
        basic = (credential.username, credential.password)
        if credential.username:
            params.append(("account", credential.username))
    return TokenRequest("GET", realm, params=tuple(params), basic=basic)


@dataclass(frozen=True)
class TokenResponse:
    """A token server's answer: the token, its lifetime in seconds, and `issued_at` if given."""

    token: str = field(repr=False)
    expires_in: int = DEFAULT_EXPIRES_IN
    issued_at: datetime | None = None


def _header_safe(value: str) -> bool:
    return bool(value) and all(0x21 <= ord(c) <= 0x7E for c in value)


def parse_token_response(body: bytes) -> TokenResponse:
    """Read a token response: `token` (or `access_token`), `expires_in`, `issued_at`.

    `token` wins when both are present (as Docker does). `expires_in` defaults to 60 and is
    raised to 60 when smaller, as the token spec asks. An `issued_at` that is not RFC 3339 is
    ignored: expiry is counted from our own clock at the time of the request, which is immune
    to clock skew. A missing token or one with characters not allowed in a header raises
    RegistryAuthError (without quoting the body, which may hold secrets).
    """
    try:
        data = jsonbound.loads(body, max_bytes=MAX_TOKEN_BODY)
    except jsonbound.JSONRefused as exc:
        raise RegistryAuthError(f"token response refused: {exc}") from None
    if not isinstance(data, dict):
        raise RegistryAuthError("token response is not a JSON object")
    token = data.get("token") or data.get("access_token")
    if not isinstance(token, str) or not token:
        raise RegistryAuthError("token response has no token or access_token")
    if not _header_safe(token):
        raise RegistryAuthError("token response holds a token with characters not allowed")
    expires_in = DEFAULT_EXPIRES_IN
    raw_expiry = data.get("expires_in")
    if raw_expiry is not None:
        if isinstance(raw_expiry, bool) or not isinstance(raw_expiry, int | float):
            raise RegistryAuthError("token response expires_in is not a number")
        expires_in = max(DEFAULT_EXPIRES_IN, int(raw_expiry))
    issued_at: datetime | None = None
    raw_issued = data.get("issued_at")
    if isinstance(raw_issued, str):
        try:
            issued_at = datetime.fromisoformat(raw_issued.replace("Z", "+00:00"))
        except ValueError:
            issued_at = None
    return TokenResponse(token, expires_in, issued_at)


def basic_header(username: str, password: str) -> str:
    """`Basic base64(username:password)` (UTF-8, RFC 7617)."""
    raw = f"{username}:{password}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


def _redact(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def _secrets_of(credential: Credential | None) -> list[str]:
    if credential is None:
        return []
    return [
        s
        for s in (
            credential.password,
            credential.identity_token,
            credential.registry_token,
            base64.b64encode(f"{credential.username}:{credential.password}".encode()).decode(),
        )
        if s
    ]


def _server_detail(body: bytes, secrets: Sequence[str]) -> str:
    """A short, redacted explanation from an error body (`details`, `error_description`...)."""
    try:
        data = jsonbound.loads(body, max_bytes=MAX_TOKEN_BODY)
    except jsonbound.JSONRefused:
        return ""
    text = ""
    if isinstance(data, dict):
        for key in ("details", "detail", "error_description", "message", "error"):
            value = data.get(key)
            if isinstance(value, str) and value:
                text = value
                break
        errors = data.get("errors")
        if not text and isinstance(errors, list) and errors and isinstance(errors[0], dict):
            message = errors[0].get("message")
            text = message if isinstance(message, str) else ""
    text = "".join(c for c in text if not _is_ctl(c))[:200]
    text = _redact(text, secrets)
    return f": {text}" if text else ""


# --------------------------------------------------------------------------------------------
# The authenticator
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Issued:
    """An Authorization value handed out, with when it stops being handed out."""

    header: str = field(repr=False)
    expires_at: float
    kind: Literal["bearer", "basic", "static"]
    replaces_rejected: bool = False


@dataclass(frozen=True)
class _BearerMode:
    realm: str
    service: str


_TokenKey = tuple[str, str, str, str]  # registry, realm, service, scope
_HostKey = tuple[str, str]  # registry, host
_SentKey = tuple[str, str, str]  # registry, host, scope


class Authenticator:
    """Answers registry 401s and caches what it learned, per registry and scope.

    Thread-safe. Bearer tokens are cached per (registry, realm, service, scope) until their
    expiry minus `EXPIRY_MARGIN`, measured with the injected `clock`; concurrent fetches of
    one key share a single request. The Bearer challenge's realm and service are remembered
    per (registry, host) once seen, so `header(..., timeout=)` fetches the token for a new
    scope before the request rather than after its 401. Basic credentials are remembered per
    (registry, host) once the host has asked for them. A value that the
    registry rejects is invalidated and fetched once more; a rejected replacement raises
    RegistryAuthError instead of looping. Token realms are checked by `realm_refusal` with
    `trusted_realms` before any request is sent. `trusted_realms` is either one list for every
    registry or a mapping from the logical registry name to its list (the settings'
    `registries.<r>.tokenRealms`), so that trusting a realm for one registry does not trust it
    for another.
    """

    def __init__(
        self,
        session: requests.Session,
        credentials: CredentialStore,
        *,
        clock: Callable[[], float] = time.monotonic,
        trusted_realms: Sequence[str] | Mapping[str, Sequence[str]] = (),
    ) -> None:
        self._session = session
        self._credentials = credentials
        self._clock = clock
        self._trusted_all: tuple[str, ...] = ()
        self._trusted_by_registry: dict[str, tuple[str, ...]] = {}
        if isinstance(trusted_realms, Mapping):
            self._trusted_by_registry = {k: tuple(v) for k, v in trusted_realms.items()}
        else:
            self._trusted_all = tuple(trusted_realms)
        self._lock = threading.Lock()
        self._fetches: Coalescer[_TokenKey, _Issued] = Coalescer()
        self._modes: dict[_HostKey, _BearerMode | _Issued] = {}
        self._tokens: OrderedDict[_TokenKey, _Issued] = OrderedDict()
        self._local = threading.local()

    # -- the interface the client uses ------------------------------------------------------

    def header(
        self, registry: str, host: str, scope: str, *, timeout: float | None = None
    ) -> str | None:
        """The Authorization value to send to registry+host for `scope`, or None.

        Without `timeout` only what is cached (and still valid) is handed out. With `timeout`,
        once the host is known to answer with a Bearer challenge (its realm, already checked,
        and service are remembered per registry and host), a token for a scope not yet cached
        (or expired) is fetched proactively, before the request, instead of after its 401:
        through the same token cache, concurrent fetches of one (realm, service, scope) shared,
        waiting and fetching bounded by `timeout`. Basic credentials and a configured registry
        token are handed out for every scope once the host asked for them. Raises what
        `challenge` raises when a proactive fetch fails.
        """
        issued: _Issued | None = None
        with self._lock:
            mode = self._modes.get((registry, host))
            if isinstance(mode, _Issued):
                issued = mode
            elif isinstance(mode, _BearerMode):
                key = (registry, mode.realm, mode.service, scope)
                entry = self._tokens.get(key)
                if entry is not None and entry.expires_at > self._clock():
                    issued = entry
        if issued is None and timeout is not None and isinstance(mode, _BearerMode) and scope:
            credential = self._credentials.lookup(registry, host)
            if credential is None or not credential.registry_token:
                issued = self._bearer_token(
                    registry, mode, scope, (), credential, None, "", timeout=timeout
                )
        self._remember_sent((registry, host, scope), issued)
        return issued.header if issued is not None else None

    def challenge(
        self, registry: str, host: str, www_authenticate: str, scope: str, *, timeout: float
    ) -> str:
        """Answer a 401: return the Authorization header value to retry with.

        Raises RegistryAuthError when the challenge cannot or must not be answered (malformed,
        unsupported scheme, refused realm, no or rejected credentials), RegistryUnavailable
        when the token realm cannot be reached or answers 5xx, RateLimited on its 429.
        """
        challenges = parse_challenges(www_authenticate)
        chosen = _choose(challenges, registry)
        sent = self._take_sent((registry, host, scope))
        credential = self._credentials.lookup(registry, host)
        if chosen.scheme == "basic":
            issued = self._answer_basic(registry, host, credential, sent)
        else:
            issued = self._answer_bearer(
                registry, host, chosen, scope, credential, sent, timeout=timeout
            )
        self._remember_sent((registry, host, scope), issued)
        return issued.header

    # -- internals ---------------------------------------------------------------------------

    def _remember_sent(self, key: _SentKey, issued: _Issued | None) -> None:
        sent: dict[_SentKey, _Issued] = self._local.__dict__.setdefault("sent", {})
        if issued is None:
            sent.pop(key, None)
        else:
            sent[key] = issued

    def _take_sent(self, key: _SentKey) -> _Issued | None:
        sent: dict[_SentKey, _Issued] = self._local.__dict__.setdefault("sent", {})
        return sent.pop(key, None)

    def _answer_basic(
        self,
        registry: str,
        host: str,
        credential: Credential | None,
        sent: _Issued | None,
    ) -> _Issued:
        if credential is None or not (credential.username or credential.password):
            raise RegistryAuthError(
                f"registry {registry} requires authentication; no credentials for {registry}",
                registry=registry,
            )
        if sent is not None and sent.kind == "basic":
            with self._lock:
                if self._modes.get((registry, host)) == sent:
                    del self._modes[(registry, host)]
            raise RegistryAuthError(
                f"registry {registry} rejected the credentials for user {credential.username!r}",
                registry=registry,
            )
        issued = _Issued(
            basic_header(credential.username, credential.password), float("inf"), "basic"
        )
        with self._lock:
            self._modes[(registry, host)] = issued
        return issued

    def _answer_bearer(
        self,
        registry: str,
        host: str,
        chosen: Challenge,
        scope: str,
        credential: Credential | None,
        sent: _Issued | None,
        *,
        timeout: float,
    ) -> _Issued:
        realm = chosen.params.get("realm", "")
        if not realm:
            raise RegistryAuthError(
                f"registry {registry} sent a Bearer challenge without a realm", registry=registry
            )
        trusted = self._trusted_all + self._trusted_by_registry.get(registry, ())
        refusal = realm_refusal(realm, host, trusted=trusted, registry=registry)
        if refusal is not None:
            raise RegistryAuthError(refusal, registry=registry)
        service = chosen.params.get("service", "")
        error = chosen.params.get("error", "")
        if credential is not None and credential.registry_token:
            return self._answer_static(registry, host, scope, credential, sent, error)
        mode = _BearerMode(realm, service)
        with self._lock:
            self._modes[(registry, host)] = mode
        fallback = tuple(chosen.params.get("scope", "").split())
        return self._bearer_token(
            registry, mode, scope, fallback, credential, sent, error, timeout=timeout
        )

    def _bearer_token(
        self,
        registry: str,
        mode: _BearerMode,
        scope: str,
        fallback_scopes: Sequence[str],
        credential: Credential | None,
        sent: _Issued | None,
        error: str,
        *,
        timeout: float,
    ) -> _Issued:
        """A valid token for the scope from the cache, or fetched (concurrent fetches shared).

        `sent` is the value last sent for this scope (None when nothing was sent, as for a
        proactive fetch): if it is the cached token, the registry rejected it, so it is dropped
        and fetched once more; a rejected replacement raises RegistryAuthError.
        """
        key: _TokenKey = (registry, mode.realm, mode.service, scope)
        with self._lock:
            current = self._tokens.get(key)
            if current is not None and current is sent:
                del self._tokens[key]
                current = None
        if current is not None and current.expires_at > self._clock():
            return current  # fetched meanwhile by another thread, or not yet tried
        if sent is not None and sent.replaces_rejected:
            who = f"user {credential.username!r}" if credential else "anonymous access"
            reason = f" ({error})" if error else ""
            raise RegistryAuthError(
                f"registry {registry} rejected a freshly issued token for {scope or 'access'}"
                f"{reason}; {who} may lack access",
                registry=registry,
            )
        replaces_rejected = sent is not None and sent.kind == "bearer"

        def fetch() -> _Issued:
            with self._lock:
                latest = self._tokens.get(key)
            if latest is not None and latest is not sent and latest.expires_at > self._clock():
                return latest  # stored by a fetch that finished just before this one started
            request = build_token_request(
                mode.realm, mode.service, scope.split() or fallback_scopes, credential
            )
            started = self._clock()
            answer = self._fetch(request, registry, credential, timeout=timeout)
            lifetime = max(answer.expires_in - EXPIRY_MARGIN, 0.0)
            issued = _Issued(
                f"Bearer {answer.token}", started + lifetime, "bearer", replaces_rejected
            )
            with self._lock:
                self._store(key, issued)
            return issued

        try:
            return self._fetches.do(key, fetch, timeout=timeout)
        except TimeoutError:
            realm_host = urlsplit(mode.realm).hostname or "?"
            raise RegistryUnavailable(
                f"token realm {realm_host} for {registry} timed out "
                "(waiting for a token another request is fetching)",
                registry=registry,
            ) from None

    def _answer_static(
        self,
        registry: str,
        host: str,
        scope: str,
        credential: Credential,
        sent: _Issued | None,
        error: str,
    ) -> _Issued:
        """A configured registry token is sent as the Bearer value, without a token server."""
        if sent is not None and sent.kind == "static":
            with self._lock:
                if self._modes.get((registry, host)) == sent:
                    del self._modes[(registry, host)]
            reason = f" ({error})" if error else ""
            raise RegistryAuthError(
                f"registry {registry} rejected the configured registry token for "
                f"{scope or 'access'}{reason}",
                registry=registry,
            )
        issued = _Issued(f"Bearer {credential.registry_token}", float("inf"), "static")
        with self._lock:
            self._modes[(registry, host)] = issued
        return issued

    def _store(self, key: _TokenKey, issued: _Issued) -> None:
        """Insert under the lock, evicting expired and then oldest entries past the cap."""
        self._tokens[key] = issued
        self._tokens.move_to_end(key)
        if len(self._tokens) > MAX_CACHED_TOKENS:
            now = self._clock()
            for stale in [k for k, v in self._tokens.items() if v.expires_at <= now]:
                del self._tokens[stale]
            while len(self._tokens) > MAX_CACHED_TOKENS:
                self._tokens.popitem(last=False)

    def _fetch(
        self,
        request: TokenRequest,
        registry: str,
        credential: Credential | None,
        *,
        timeout: float,
    ) -> TokenResponse:
        """Send the token request (no redirect followed, the answer capped at MAX_TOKEN_BODY)
        and read its token; the registry error the realm's failure or refusal means."""
        realm_host = urlsplit(request.url).hostname or "?"
        try:
            reply = exchange.exchange(
                self._session,
                request.method,
                request.url,
                timeout=timeout,
                read=lambda status: TOKEN_CAP,
                headers={"Accept": "application/json"},
                params=list(request.params) or None,
                data=list(request.form) or None,
                auth=request.basic,
            )
        except exchange.ExchangeFailed as failure:
            raise _realm_failure(failure, registry, realm_host) from None
        if reply.status == 200:
            try:
                return parse_token_response(reply.body)
            except RegistryAuthError as exc:
                raise RegistryAuthError(
                    f"token realm {realm_host} for {registry}: {exc}", registry=registry
                ) from None
        anonymous = request.basic is None and request.method == "GET"
        raise _realm_refusal(reply, registry, realm_host, credential, anonymous=anonymous)


TOKEN_CAP = exchange.Cap(MAX_TOKEN_BODY, "decoded")
"""A token realm's answer, whatever its status: decoded, at most MAX_TOKEN_BODY bytes."""


def _realm_failure(
    failure: exchange.ExchangeFailed, registry: str, realm_host: str
) -> RegistryError:
    """A token realm's transport failure, worded as the registry error it means."""
    where = f"token realm {realm_host} for {registry}"
    if isinstance(failure, exchange.Refused):
        return EgressRefused(
            f"{where} refused by egress policy: {failure.reason}", registry=registry
        )
    if isinstance(failure, exchange.TooLarge):
        return RegistryAuthError(
            f"{where} sent a response over {MAX_TOKEN_BODY} bytes", registry=registry
        )
    if isinstance(failure, exchange.Unreachable) and not failure.timed_out:
        return RegistryUnavailable(
            f"{where} unreachable ({type(failure.cause).__name__})", registry=registry
        )
    if isinstance(failure, exchange.ReadFailed) and not failure.cut and failure.cause:
        return RegistryUnavailable(
            f"{where}: reading the response failed ({type(failure.cause).__name__})",
            registry=registry,
        )
    return RegistryUnavailable(f"{where} timed out", registry=registry)


def _realm_refusal(
    reply: exchange.Reply,
    registry: str,
    realm_host: str,
    credential: Credential | None,
    *,
    anonymous: bool,
) -> RegistryError:
    """What a token realm's answer other than 200 means (`anonymous`: the request carried no
    credential)."""
    status = reply.status
    detail = _server_detail(reply.body, _secrets_of(credential))
    if status in (401, 403):
        if credential is None or anonymous:
            return RegistryAuthError(
                f"registry {registry} requires authentication; no credentials for "
                f"{registry} (token realm {realm_host} answered HTTP {status}{detail})",
                registry=registry,
            )
        who = f"user {credential.username!r}" if credential.username else "identity token"
        return RegistryAuthError(
            f"token realm {realm_host} rejected the credentials for {who} on {registry} "
            f"(HTTP {status}{detail})",
            registry=registry,
        )
    if status == 429:
        return RateLimited(
            f"token realm {realm_host} for {registry} is rate limiting (HTTP 429)",
            registry=registry,
        )
    if status >= 500:
        return RegistryUnavailable(
            f"token realm {realm_host} for {registry} failed (HTTP {status})",
            registry=registry,
            status=status,
        )
    if 300 <= status < 400:
        return RegistryAuthError(
            f"token realm {realm_host} for {registry} answered a redirect (HTTP {status}); "
            "redirects from a token realm are not followed",
            registry=registry,
        )
    return RegistryAuthError(
        f"token realm {realm_host} for {registry} answered HTTP {status}{detail}",
        registry=registry,
    )


def _choose(challenges: Sequence[Challenge], registry: str) -> Challenge:
    """Bearer first, then Basic; anything else cannot be answered."""
    for scheme in ("bearer", "basic"):
        for challenge in challenges:
            if challenge.scheme == scheme:
                return challenge
    schemes = ", ".join(sorted({c.scheme for c in challenges}))
    raise RegistryAuthError(
        f"registry {registry} asks for unsupported authentication ({schemes})",
        registry=registry,
    )
