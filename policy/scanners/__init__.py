"""Scanners read CLI inputs (Kubernetes YAML, compose files, Dockerfiles, image lists) for images.

Every scanner returns `FoundImage`s: the image as written and where it was written, so that
reports can point at the line to fix.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FoundImage:
    """One image found in an input file, located at its scalar (1-based line and column).

    `kind`, `name` and `namespace` describe the object holding the image (for a Kubernetes
    manifest: `kind`, `metadata.name` or "" and `metadata.namespace` or None); `container`
    is the container (or volume) name, or ""; `field` says which kind of field held it
    (for Kubernetes: container, initContainer, ephemeralContainer or volume).

    `template` is the text as written, variables and all (`nginx:${TAG}`), when `image` was
    computed by substituting variables (compose interpolation, Dockerfile ARGs); it is None
    when `image` is the literal text written. An image with a template cannot be pinned in
    place. `platform` is a Dockerfile `FROM --platform=` value as written (`$BUILDPLATFORM`
    is kept verbatim), else None.
    """

    image: str
    file: str
    line: int
    column: int
    kind: str
    name: str
    namespace: str | None
    container: str
    field: str
    template: str | None = None
    platform: str | None = None

    @property
    def location(self) -> str:
        """`file:line`, as editors and CI annotations take it."""
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class Skipped:
    """A file met that is not judged (not an input, a Helm template, unreadable), and why."""

    file: str
    reason: str
