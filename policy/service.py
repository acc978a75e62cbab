"""The one pipeline both the webhook and the CLI call: references → needs → resolve → evaluate.

Keeping it in one place means the webhook and the CLI can never disagree about an image.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import NamedTuple, Protocol

from policy.cache import ByteMemo
from policy.deadline import Deadline
from policy.evaluate import (
    Applicable,
    Context,
    ImageDecision,
    applicable,
    end_of_day,
    evaluate_image,
    needs,
    stable_until,
)
from policy.facts import NO_NEEDS, ImageFacts, Needs
from policy.reference import Reference
from policy.rules import Rule, RuleSet
from policy.signing import RootFile


class Resolver(Protocol):
    """Fetches the facts each image needs; never raises for a registry problem: the reason goes
    into `ImageFacts.errors` and `onResolveError` decides."""

    def resolve(
        self, items: Sequence[tuple[Reference, Needs]], *, deadline: Deadline
    ) -> list[ImageFacts]: ...


class Item(NamedTuple):
    """One image to judge, in the namespace it will run in (None: unknown).

    A named tuple, as is every value made per review (built, hashed and compared in C): this one
    saves ~1% of a warm review, the per-review named tuples together ~9% (1b, BENCHMARKS.md).
    """

    reference: Reference
    namespace: str | None = None


MEMO_BYTES = 16 * 1024 * 1024
"""Default bytes a Service's memos may hold together: image lists (batches) 1/2, decisions
1/4, rule plans 1/4, each entry charged `cache.entry_size` (the rules themselves, owned by the
rule set, not counted); a memo about to pass its share is emptied."""

PlanKey = tuple[Reference, str | None, date]
_DIGEST = Needs(digest=True)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Service:
    """Judges images with a rule set and a resolver.

    Its memos (`memo_bytes`: batches 1/2, decisions and plans 1/4 each), by what they save:
    `_batches`, each list of items with its plans, facts and decisions: ~14% of a warm review
    (1b); `_decisions`, a decision per item for the very same facts object: when a batch
    misses, 1b without it costs 4.5× (3.68 M instructions instead of 0.83 M); `_plans`, the
    rules and needs per reference, namespace and day: when a batch misses, 3.4× (2.78 M), and
    the pinning service plans every tag-only image of every review with it.
    """

    def __init__(
        self,
        ruleset: RuleSet,
        resolver: Resolver,
        *,
        now: Callable[[], datetime] = _utcnow,
        pin: bool = False,
        memo_bytes: int = MEMO_BYTES,
    ) -> None:
        self.ruleset = ruleset
        self.resolver = resolver
        self._now = now
        self._pin = pin
        share = max(16, memo_bytes)
        self._plans: ByteMemo[PlanKey, tuple[Applicable, Needs]] = ByteMemo(
            share // 4, opaque=(Rule, RootFile)
        )
        self._decisions: ByteMemo[
            tuple[Reference, str | None], tuple[ImageFacts, datetime, ImageDecision]
        ] = ByteMemo(share // 4)
        self._batches: ByteMemo[tuple[Item, ...], _Batch] = ByteMemo(
            share // 2, opaque=(Rule, RootFile)
        )

    def _plan(self, ref: Reference, context: Context) -> tuple[Applicable, Needs]:
        """The rules applying to `ref` in `context` and the facts they need, memoized: both
        depend only on the (immutable) rule set, the reference, the namespace and the day."""
        key = (ref, context.namespace, context.now.date())
        plan = self._plans.get(key)
        if plan is None:
            rules = applicable(self.ruleset, ref, context)
            need = needs(self.ruleset, ref, context, rules=rules)
            plan = (rules, need)
            self._plans.put(key, plan)
        return plan

    def decide(self, items: Sequence[Item], *, deadline: Deadline) -> list[ImageDecision]:
        """One decision per item, in order; each distinct reference is resolved once.

        A pinning service (`pin=True`, the mutating webhook's) judges what it will write: each
        tag-only reference pinned to the digest its tag names now (`name:tag@sha256:…`, `latest`
        for no tag), so a rule requiring a digest is met by the pin itself.

        The facts are asked of the resolver every time (it decides whether its answers are
        still fresh). When it hands back the very same facts objects as for the last call with
        these items, and no decision could have changed since (`stable_until`), the earlier
        decisions are returned as they are: a review of an unchanged workload costs one
        resolver lookup per image and no evaluation.
        """
        now = self._now()
        if now.tzinfo is None:
            now = now.replace(tzinfo=UTC)  # a naive clock reads UTC
        if self._pin:
            items = self._pinned(items, now, deadline)
        key = tuple(items)  # (reference, namespace) tuples: hashed and compared in C
        batch = self._batches.get(key)
        planned = batch is None or now >= batch.until
        if batch is None or planned:
            batch = self._batch(items, now)
        facts = self.resolver.resolve(batch.wanted, deadline=deadline)
        if (
            batch.facts is not None
            and len(facts) == len(batch.facts)
            and all(map(operator.is_, facts, batch.facts))
        ):
            return list(batch.decisions)
        by_ref = {ref: f for (ref, _), f in zip(batch.wanted, facts, strict=True)}
        judged = [
            self._judge(item, by_ref[item.reference], rules, now)
            for item, rules in zip(items, batch.rules, strict=True)
        ]
        if any(f.errors for f in facts):
            # Facts with a failure are never handed out again (the resolver keeps no failed
            # answer), so these decisions could never be reused: keep only the plans. (An
            # attack naming hosts that never answer would otherwise pay for measuring them.)
            if planned:
                self._batches.put(key, batch)
            return [d for d, _ in judged]
        self._batches.put(
            key,
            _Batch(
                wanted=batch.wanted,
                rules=batch.rules,
                until=min([batch.until, *(u for _, u in judged)]),
                facts=tuple(facts),
                decisions=tuple(d for d, _ in judged),
            ),
        )
        return [d for d, _ in judged]

    def _pinned(self, items: Sequence[Item], now: datetime, deadline: Deadline) -> list[Item]:
        """`items` with each tag-only reference pinned to the digest its tag names, as the
        mutating webhook will write it. The tag is resolved with the facts its own rules need
        (one GET by tag for a new tag, so judging the pinned reference next reads only caches);
        a reference whose registry is refused is never contacted, and one whose digest cannot
        be had is judged as written (its rules say what that means)."""
        wanted: dict[Reference, Needs] = {}
        for item in items:
            ref = item.reference
            if ref.digest is not None:
                continue
            rules, need = self._plan(ref, Context(now, item.namespace))
            if rules.registry_denied:
                continue
            wanted[ref] = wanted.get(ref, NO_NEEDS) | need | _DIGEST
        if not wanted:
            return list(items)
        facts = self.resolver.resolve(tuple(wanted.items()), deadline=deadline)
        digests = {ref: f.digest for ref, f in zip(wanted, facts, strict=True)}
        out = []
        for item in items:
            digest = digests.get(item.reference)
            if digest is None:
                out.append(item)
                continue
            ref = item.reference
            out.append(Item(ref._replace(tag=ref.tag or "latest", digest=digest), item.namespace))
        return out

    def _batch(self, items: Sequence[Item], now: datetime) -> _Batch:
        """The plans of `items` (no facts yet): valid to the end of the day."""
        plans = [self._plan(item.reference, Context(now, item.namespace)) for item in items]
        wanted: dict[Reference, Needs] = {}
        for item, (_, need) in zip(items, plans, strict=True):
            known = wanted.get(item.reference)
            wanted[item.reference] = need if known is None else known | need
        return _Batch(
            wanted=tuple(wanted.items()),
            rules=tuple(rules for rules, _ in plans),
            until=end_of_day(now),
        )

    def _judge(
        self, item: Item, facts: ImageFacts, rules: Applicable, now: datetime
    ) -> tuple[ImageDecision, datetime]:
        """`evaluate_image` and until when its decision holds, reusing an earlier decision for
        the very same facts object (the resolver hands out one object per cached answer)."""
        key = (item.reference, item.namespace)
        memo = self._decisions.get(key)
        if memo is not None and memo[0] is facts and now < memo[1]:
            return memo[2], memo[1]
        context = Context(now=now, namespace=item.namespace)
        decision = evaluate_image(self.ruleset, item.reference, facts, context, rules=rules)
        until = stable_until(self.ruleset, item.reference, facts, context, rules=rules)
        if not facts.errors:  # failed facts are never handed out twice (`decide`)
            self._decisions.put(key, (facts, until, decision))
        return decision, until


@dataclass(frozen=True)
class _Batch:
    """What `Service.decide` remembers of one list of items: the distinct references with the
    facts each needs, the rules applying to each item, and — once decided — the facts the
    decisions were made with, the decisions, and until when they hold."""

    wanted: tuple[tuple[Reference, Needs], ...]
    rules: tuple[Applicable, ...]
    until: datetime
    facts: tuple[ImageFacts, ...] | None = None
    decisions: tuple[ImageDecision, ...] = ()
