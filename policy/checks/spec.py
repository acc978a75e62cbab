"""What a check is (`CheckSpec`: its name, the fact it reads, parse and judge functions, its
JSON-Schema entry and docs row) and what it judges (`Subject`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from policy.facts import ImageFacts, PlatformFacts
from policy.reference import Reference
from policy.yamlsrc import Node, Reader

# What a check reads. `reference`: the reference as written (no lookup); `tier`: the Docker Hub
# trusted-content tier; `platforms`: the list of platforms the image offers; `manifest`: each
# selected platform's manifest (layers, sizes); `config`: each selected platform's config blob;
# `tag`: where the tag of a `name:tag@digest` reference points; `signatures`: the signatures
# of the judged digest, verified against the rules' keys; `attestations`: the in-toto
# statements attached to each selected platform's image.
Fact = Literal[
    "reference", "tier", "platforms", "manifest", "config", "tag", "signatures", "attestations"
]


@dataclass(frozen=True)
class Subject:
    """What a check judges: the reference, what is known about it, and the platforms it reads."""

    ref: Reference
    facts: ImageFacts
    platforms: tuple[PlatformFacts, ...]
    rule_id: str
    now: datetime
    written_tag: str | None = None
    """The tag written beside the digest when `ref` is judged by digest alone (the registry
    did not confirm that the tag points at the digest)."""

    def label(self, platform: PlatformFacts | None = None) -> str:
        """`docker.io/library/nginx:1.25`, with ` (linux/arm64)` for an index entry."""
        if platform is not None and self.facts.index:
            return f"{self.ref} ({platform.platform})"
        return str(self.ref)


@dataclass(frozen=True)
class CheckSpec:
    """One check a rule can `require`: `parse` reads its setting (errors to the `Reader`),
    `judge` gives its findings for a `Subject` (none: met)."""

    name: str
    fact: Fact
    parse: Callable[[Reader, Node, str], object | None]
    judge: Callable[[object, Subject], list[str]]
    schema: Mapping[str, Any]
    doc: str
    # For a check whose answer depends on the clock: the next moment, after `subject.now`, at
    # which `judge` could answer differently for the same facts (None: not before tomorrow).
    changes_at: Callable[[object, Subject], datetime | None] | None = None
    # Whether the judge reads the reference's tag: then, for `name:tag@digest`, the tag counts
    # only once the registry confirms it points at the digest (evaluate.py).
    reads_tag: bool = False


STRINGS = {"type": "array", "items": {"type": "string"}, "minItems": 1}
