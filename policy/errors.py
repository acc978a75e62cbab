"""The one error tree of image-policy, caught once at each edge (CLI, web).

```
PolicyError
├── InvalidReference (also ValueError)
├── RuleError            file, line, column, path → "x.yaml:14:7: rules[2].require.maxLayers: …"
│   └── RuleErrors       several RuleErrors at once (what `lint` reports)
├── SettingsError        same location quality
├── ReviewError          malformed AdmissionReview/ImageReview → HTTP 400
├── InputError           an input file (manifest, facts file) that cannot be read
└── RegistryError        registry, reference
    ├── RegistryUnavailable   (timeouts, connection, 5xx)
    ├── RegistryAuthError
    ├── RateLimited
    ├── ManifestNotFound
    ├── UnsupportedManifest   (schema1, unknown media types)
    ├── IntegrityError        (digest or media-type mismatch, size cap)
    ├── EgressRefused         (the egress policy refuses the address or host)
    └── NoSource              (nothing configured can tell the fact: no Docker Hub lookup)
```
A RegistryError's message is for the operator (hosts, addresses, the upstream's words); what a
pod author is told is its class, `policy.failures.classify`.
A denial is a value (`Decision(allowed=False, ...)`), never an exception.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


class PolicyError(Exception):
    """Base of every error image-policy raises on purpose."""


class InvalidReference(PolicyError, ValueError):
    """An image reference that does not follow the distribution reference grammar."""

    def __init__(self, text: str, problem: str) -> None:
        self.text = text
        self.problem = problem
        super().__init__(f"invalid image reference {text!r}: {problem}")


@dataclass(frozen=True)
class Location:
    """Where something stands in a source file: 1-based line and column."""

    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


class ConfigError(PolicyError):
    """A problem in a YAML file, located: `file:line:col: path: message`."""

    def __init__(self, message: str, *, location: Location | None = None, path: str = "") -> None:
        self.message = message
        self.location = location
        self.path = path
        super().__init__(self._render())

    def _render(self) -> str:
        parts = []
        if self.location is not None:
            parts.append(str(self.location))
        if self.path:
            parts.append(self.path)
        parts.append(self.message)
        return ": ".join(parts)


class RuleError(ConfigError):
    """A rule file that is not valid."""


class SettingsError(ConfigError):
    """A settings file that is not valid."""


class ConfigErrors(PolicyError):
    """Several located errors found in one pass, reported together."""

    def __init__(self, errors: Iterable[ConfigError]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(str(e) for e in self.errors))


class RuleErrors(ConfigErrors):
    """Several rule errors at once."""


class SettingsErrors(ConfigErrors):
    """Several settings errors at once."""


class ReviewError(PolicyError):
    """A malformed review request (HTTP 400), as opposed to an object that is denied."""


class InputError(PolicyError):
    """An input file that cannot be read or understood (exit code 2)."""


class RegistryError(PolicyError):
    """A registry could not tell us a fact we needed.

    `status`: the HTTP status of the answer that made it, when an answer did (None for a
    failure to connect, a timeout, or a problem found in a 200 answer).
    """

    def __init__(
        self, message: str, *, registry: str = "", reference: str = "", status: int | None = None
    ) -> None:
        self.registry = registry
        self.reference = reference
        self.status = status
        super().__init__(message)


class RegistryUnavailable(RegistryError):
    """Timeouts, refused connections, 5xx answers."""


class RegistryAuthError(RegistryError):
    """Authentication failed or was refused for safety."""


class RateLimited(RegistryError):
    """The registry answered 429."""


class ManifestNotFound(RegistryError):
    """No manifest for that tag or digest."""


class UnsupportedManifest(RegistryError):
    """A manifest format we do not read (schema1, unknown media types)."""


class IntegrityError(RegistryError):
    """Digest mismatch, media-type mismatch, a body over its size cap, a malformed document."""


class EgressRefused(RegistryError):
    """The egress policy refuses to contact that host or address (nothing was sent)."""


class NoSource(RegistryError):
    """Nothing configured can tell this fact (no Docker Hub tier lookup); nothing was sent."""
