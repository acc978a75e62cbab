"""Token requests and answers: the Docker registry token spec and the OAuth2 refresh-token
flow (pure, table-tested), and what a token realm's answer or failure means as an error.

- `build_token_request` describes the token request (`GET realm?service=..&scope=..` with
  Basic auth, or the OAuth2 refresh-token `POST`).
- `parse_token_response` reads the token server's JSON answer.
- `token_failure` / `token_refusal` word a realm's transport failure or non-200 answer,
  without a password or a token in the message.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from policy import jsonbound
from policy.errors import (
    EgressRefused,
    RateLimited,
    RegistryAuthError,
    RegistryError,
    RegistryUnavailable,
)
from policy.registry import exchange
from policy.registry.challenges import is_ctl
from policy.registry.credentials import Credential

CLIENT_ID = "image-policy"
"""The OAuth2 `client_id` sent with refresh-token requests."""

DEFAULT_EXPIRES_IN = 60
"""Token lifetime when the server does not say, and the minimum honoured (token spec)."""

MAX_TOKEN_BODY = 1 << 20
"""A token response larger than this (1 MiB) is refused."""

TOKEN_CAP = exchange.Cap(MAX_TOKEN_BODY, "decoded")
"""A token realm's answer, whatever its status: decoded, at most MAX_TOKEN_BODY bytes."""


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


def secrets_of(credential: Credential | None) -> list[str]:
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
    text = "".join(c for c in text if not is_ctl(c))[:200]
    text = _redact(text, secrets)
    return f": {text}" if text else ""


def token_failure(
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


def token_refusal(
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
    detail = _server_detail(reply.body, secrets_of(credential))
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
