"""How registry failures are worded: the reference shown, a registry's error body quoted
(clipped, control characters removed, the credential just sent redacted), an error located,
a rate limit reported, and a transport failure said as the registry error it means."""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping, Sequence

from policy import jsonbound
from policy.errors import (
    EgressRefused,
    IntegrityError,
    RateLimited,
    RegistryError,
    RegistryUnavailable,
)
from policy.registry import exchange, media
from policy.registry.exchange import describe_failure
from policy.registry.ratelimits import parse_rate_limit

ERROR_BODY_BYTES = 64 * 1024
"""How much of an error answer's body is read, to quote from."""


def authorization_secrets(authorization: str | None) -> list[str]:
    """The strings of an Authorization value that must never appear in a message."""
    if not authorization:
        return []
    out = [authorization]
    scheme, _, credential = authorization.partition(" ")
    if credential:
        out.append(credential.strip())
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(credential.strip(), validate=True).decode()
        except (ValueError, UnicodeDecodeError):
            decoded = ""
        if decoded:
            out.append(decoded)
            password = decoded.partition(":")[2]
            if password:
                out.append(password)
    return sorted((s for s in out if s), key=len, reverse=True)


def registry_message(body: bytes, secrets: Sequence[str] = ()) -> str:
    """`: CODE: message` from a `{"errors": [...]}` body.

    Control characters are removed, the text is clipped, and any part of the credential
    just sent (a registry may echo it) is redacted.
    """
    try:
        document = jsonbound.loads(body, max_bytes=ERROR_BODY_BYTES)
    except jsonbound.JSONRefused:
        return ""
    if not isinstance(document, dict) or not isinstance(document.get("errors"), list):
        return ""
    parts = []
    for error in document["errors"][:5]:
        if not isinstance(error, dict):
            continue
        code = error.get("code")
        message = error.get("message")
        text = ": ".join(x for x in (code, message) if isinstance(x, str) and x)
        if text:
            parts.append(text)
    if not parts:
        return ""
    text = "; ".join(parts)
    for secret in secrets:
        text = text.replace(secret, "[redacted]")
    text = re.sub(r"[\x00-\x1f\x7f]", " ", text)
    return ": " + (text if len(text) <= 200 else text[:200] + "…")


def display(registry: str, repository: str, reference: str) -> str:
    """`registry/repository:tag` or `registry/repository@digest`, for messages."""
    sep = "@" if media.is_digest(reference) else ":"
    return f"{registry}/{repository}{sep}{reference}"


def located(error: RegistryError, registry: str, reference: str) -> RegistryError:
    """The same error, its message prefixed with the reference, and located."""
    return type(error)(
        f"{reference}: {error}", registry=registry, reference=reference, status=error.status
    )


def rate_limited(registry: str, ref: str, headers: Mapping[str, str]) -> RateLimited:
    """The error for a 429: the limit the registry reported, and what helps."""
    limit = parse_rate_limit(headers)
    detail = limit.describe() if limit else ""
    message = f"{registry} pull rate limit reached"
    if detail:
        message += f": {detail}"
    message += "; configure credentials or a mirror"
    return RateLimited(message, registry=registry, reference=ref)


def transport_error(
    failure: exchange.ExchangeFailed, host: str, registry: str, ref: str
) -> RegistryError:
    """A transport failure of a request to `host`, worded as the registry error it means."""
    kind: type[RegistryError]
    if isinstance(failure, exchange.Refused):
        text, kind = f"refused by egress policy: {failure.reason}", EgressRefused
    elif isinstance(failure, exchange.Encoded):
        text = f"{host} sent a {failure.encoding!r}-encoded body that was not asked for"
        kind = IntegrityError
    elif isinstance(failure, exchange.TooLarge):
        kind = IntegrityError
        if failure.declared is not None:
            text = f"body of {failure.declared} bytes is over the limit of {failure.limit}"
        else:
            text = f"body is over the limit of {failure.limit} bytes"
    else:
        kind = RegistryUnavailable
        if isinstance(failure, exchange.NoTimeLeft):
            text = f"deadline passed before asking {host}"
        elif isinstance(failure, exchange.Unreachable):
            text = f"cannot reach {host}: {describe_failure(failure.cause)}"
        elif isinstance(failure, exchange.OutOfTime):
            text = f"deadline passed while reading from {host}"
        else:
            cause = failure.cause if isinstance(failure, exchange.ReadFailed) else None
            why = "timed out" if failure.cut or cause is None else describe_failure(cause)
            text = f"reading from {host} failed: {why}"
    return kind(f"{ref}: {text}", registry=registry, reference=ref)
