"""Why a fact could not be fetched, in words a pod author may read (pure).

A `RegistryError`'s message is written for the operator: it names the host and address it
tried, the errno, and quotes what the upstream answered (`cannot reach 10.0.0.7:5432:
connection refused`, `answered HTTP 500: internal-admin v3.2; db=postgres://…`). Handed back
through `kubectl apply`, that makes the webhook a port scanner and a leak. So a failure is told
to the pod author only by its class, one of the fixed set below, derived from the exception's
type and (for an answer with an unexpected status) its HTTP status code; the message itself
goes to the decision log (webhook) or the report (CLI, run by the operator).

- `registry unreachable`: a `RegistryUnavailable` without a status (refused, reset, DNS, TLS,
  timeouts, the decision deadline);
- `registry answered an error (HTTP 500)`: any other error with an HTTP status (5xx, an
  unexpected 4xx or 3xx);
- `image not found`: `ManifestNotFound` (404, manifest unknown);
- `registry authentication failed`: `RegistryAuthError` (401/403, no or rejected credentials,
  a token realm refused or failing);
- `rate limited by the registry`: `RateLimited` (429);
- `registry answered something invalid`: `IntegrityError` (digest, media type, size cap,
  malformed documents), or a plain `RegistryError` without a status (a redirect without a
  Location, too many redirects, an index entry that is no image);
- `unsupported manifest format`: `UnsupportedManifest` (schema1, unknown media types);
- `refused by egress policy`: `EgressRefused`;
- `no source configured for it`: `NoSource` (no Docker Hub tier lookup);
- `not recorded in the facts file`: the offline facts file has no such entry (`factsfile`).

Timeouts and refused connections are one class on purpose: telling them apart tells a port
that drops packets from one that is closed. "registry" reads "Docker Hub" for the tier, which
Docker Hub's API answers.
"""

from __future__ import annotations

import enum

from policy.errors import (
    EgressRefused,
    IntegrityError,
    ManifestNotFound,
    NoSource,
    RateLimited,
    RegistryAuthError,
    RegistryError,
    RegistryUnavailable,
    UnsupportedManifest,
)

REGISTRY = "registry"
DOCKER_HUB = "Docker Hub"


class Cause(enum.Enum):
    """The classes of failure a pod author is told; each value is its text's template."""

    UNREACHABLE = "{party} unreachable"
    HTTP_ERROR = "{party} answered an error (HTTP {status})"
    NOT_FOUND = "image not found"
    AUTHENTICATION = "{party} authentication failed"
    RATE_LIMITED = "rate limited by the {party}"
    INVALID = "{party} answered something invalid"
    UNSUPPORTED = "unsupported manifest format"
    EGRESS = "refused by egress policy"
    NO_SOURCE = "no source configured for it"
    NOT_RECORDED = "not recorded in the facts file"

    def text(self, *, party: str = REGISTRY, status: int | None = None) -> str:
        """The words for this cause; `party` names who was asked ("registry", "Docker Hub")."""
        if self is Cause.RATE_LIMITED and party != REGISTRY:
            return f"rate limited by {party}"
        return self.value.format(party=party, status=status)


# Checked in this order, so a subclass is placed before the class it may derive from.
_BY_TYPE: tuple[tuple[type[RegistryError], Cause], ...] = (
    (EgressRefused, Cause.EGRESS),
    (NoSource, Cause.NO_SOURCE),
    (ManifestNotFound, Cause.NOT_FOUND),
    (RateLimited, Cause.RATE_LIMITED),
    (RegistryAuthError, Cause.AUTHENTICATION),
    (UnsupportedManifest, Cause.UNSUPPORTED),
    (IntegrityError, Cause.INVALID),
)


def http_status(error: RegistryError) -> int | None:
    """The error's HTTP status when it is one (an int from 100 to 599), else None."""
    status = error.status
    if type(status) is int and 100 <= status <= 599:
        return status
    return None


def cause(error: RegistryError) -> Cause:
    """The class of `error`, from its type and, for the others, its HTTP status."""
    for kind, found in _BY_TYPE:
        if isinstance(error, kind):
            return found
    if http_status(error) is not None:
        return Cause.HTTP_ERROR
    if isinstance(error, RegistryUnavailable):
        return Cause.UNREACHABLE
    return Cause.INVALID


def classify(error: RegistryError, *, party: str = REGISTRY) -> str:
    """What a pod author is told about `error`: its class in fixed words, the HTTP status at
    most — never the message, the host, the address or anything the upstream wrote."""
    return cause(error).text(party=party, status=http_status(error))
