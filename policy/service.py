"""The one pipeline both the webhook and the CLI call: references → needs → resolve → evaluate.

Keeping it in one place means the webhook and the CLI can never disagree about an image.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from policy.deadline import Deadline
from policy.evaluate import Context, ImageDecision, evaluate_image, needs, registry_refused
from policy.facts import NO_NEEDS, ImageFacts, Needs
from policy.reference import Reference
from policy.rules import RuleSet


class Resolver(Protocol):
    """Fetches the facts each image needs; never raises for a registry problem: the reason goes
    into `ImageFacts.errors` and `onResolveError` decides."""

    def resolve(
        self, items: Sequence[tuple[Reference, Needs]], *, deadline: Deadline
    ) -> list[ImageFacts]: ...


@dataclass(frozen=True)
class Item:
    """One image to judge, in the namespace it will run in (None: unknown)."""

    reference: Reference
    namespace: str | None = None


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Service:
    """Judges images with a rule set and a resolver."""

    def __init__(
        self,
        ruleset: RuleSet,
        resolver: Resolver,
        *,
        now: Callable[[], datetime] = _utcnow,
        extra_needs: Needs = NO_NEEDS,
    ) -> None:
        self.ruleset = ruleset
        self.resolver = resolver
        self._now = now
        self._extra = extra_needs

    def decide(self, items: Sequence[Item], *, deadline: Deadline) -> list[ImageDecision]:
        """One decision per item, in order; each distinct reference is resolved once."""
        now = self._now()
        wanted: dict[Reference, Needs] = {}
        for item in items:
            context = Context(now=now, namespace=item.namespace)
            need = needs(self.ruleset, item.reference, context)
            if self._extra != NO_NEEDS and not registry_refused(
                self.ruleset, item.reference, context
            ):
                need = need | self._extra
            wanted[item.reference] = wanted.get(item.reference, NO_NEEDS) | need
        refs = list(wanted)
        facts = self.resolver.resolve([(r, wanted[r]) for r in refs], deadline=deadline)
        by_ref = dict(zip(refs, facts, strict=True))
        return [
            evaluate_image(
                self.ruleset,
                item.reference,
                by_ref[item.reference],
                Context(now=now, namespace=item.namespace),
            )
            for item in items
        ]
