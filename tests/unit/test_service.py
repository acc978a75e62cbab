"""The one pipeline: needs → resolve (once per distinct reference) → evaluate; its plan memo."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from policy import loader
from policy.deadline import Deadline
from policy.facts import ImageFacts, Needs, PlatformFacts
from policy.reference import Reference, parse
from policy.service import Item, Service

RULES = """
apiVersion: image-policy/v1
kind: RuleSet
defaults: {unmatched: allow}
rules:
  - id: prod-pinned
    match: {images: ["**"], namespaces: ["prod"]}
    require: {digest: true}
  - id: layers
    match: {images: ["ghcr.io/**"]}
    require: {maxLayers: 5}
  - id: corp-only
    match: {images: ["evil.example/**"]}
    require: {registries: ["ghcr.io"]}
exceptions:
  - rules: [prod-pinned]
    images: ["docker.io/library/nginx"]
    namespaces: ["prod"]
    reason: migration
    expires: 2026-06-30
"""


class Recorder:
    """A resolver that records what it is asked and knows nothing."""

    def __init__(self) -> None:
        self.calls: list[list[tuple[Reference, Needs]]] = []

    def resolve(
        self, items: Sequence[tuple[Reference, Needs]], *, deadline: Deadline
    ) -> list[ImageFacts]:
        self.calls.append(list(items))
        return [ImageFacts(digest=ref.digest) for ref, _ in items]


def service(now: list[datetime], **options: object) -> tuple[Service, Recorder]:
    recorder = Recorder()
    return (
        Service(loader.load_rules_text(RULES), recorder, now=lambda: now[0], **options),  # type: ignore[arg-type]
        recorder,
    )


def test_namespaces_are_judged_apart_in_one_call_and_across_calls() -> None:
    svc, _ = service([datetime(2026, 1, 1, tzinfo=UTC)])
    items = [Item(parse("redis:7"), "prod"), Item(parse("redis:7"), "dev")]
    for _ in range(2):  # the second time from the plan memo
        prod, dev = svc.decide(items, deadline=Deadline(1))
        assert [v.rule for v in prod.violations] == ["prod-pinned"]
        assert dev.violations == ()


def test_each_distinct_reference_is_resolved_once_with_merged_needs() -> None:
    svc, recorder = service([datetime(2026, 1, 1, tzinfo=UTC)])
    ghcr = parse("ghcr.io/a/b:1")
    svc.decide(
        [Item(ghcr, "prod"), Item(ghcr, "dev"), Item(parse("redis:7"), "dev")],
        deadline=Deadline(1),
    )
    [call] = recorder.calls
    assert [ref for ref, _ in call] == [ghcr, parse("redis:7")]
    assert call[0][1].manifest and not call[1][1].registry


class Tags:
    """A resolver that knows each tag's digest (and nothing else), recording what it is asked."""

    def __init__(self, digests: dict[str, str]) -> None:
        self.digests = digests
        self.calls: list[list[tuple[Reference, Needs]]] = []

    def resolve(
        self, items: Sequence[tuple[Reference, Needs]], *, deadline: Deadline
    ) -> list[ImageFacts]:
        self.calls.append(list(items))
        return [
            ImageFacts(digest=ref.digest or self.digests.get(f"{ref.name}:{ref.tag or 'latest'}"))
            for ref, _ in items
        ]


PIN_SHA = "sha256:" + "7" * 64


def test_a_pinning_service_judges_the_pinned_reference() -> None:
    """`digest: true` is met by the pin itself; a refused registry is not contacted to pin."""
    tags = Tags({"docker.io/library/redis:7": PIN_SHA, "docker.io/library/nginx:latest": PIN_SHA})
    svc = Service(
        loader.load_rules_text(RULES), tags, now=lambda: datetime(2026, 1, 1, tzinfo=UTC), pin=True
    )
    items = [
        Item(parse("redis:7"), "prod"),
        Item(parse("nginx"), "prod"),
        Item(parse("evil.example/x:1"), "prod"),
        Item(parse("ghcr.io/gone/x:1"), "prod"),
    ]
    redis, nginx, evil, gone = svc.decide(items, deadline=Deadline(1))
    assert redis.reference == parse(f"redis:7@{PIN_SHA}") and redis.violations == ()
    assert nginx.reference == parse(f"nginx:latest@{PIN_SHA}")
    assert [v.rule for v in evil.violations] == ["prod-pinned", "corp-only"]  # not pinned
    assert evil.reference == parse("evil.example/x:1")
    assert [v.rule for v in gone.violations] == ["prod-pinned", "layers"]  # judged as written
    first = tags.calls[0]
    assert [ref for ref, _ in first] == [
        parse("redis:7"),
        parse("nginx"),
        parse("ghcr.io/gone/x:1"),
    ]
    assert all(need.digest for _, need in first)
    plain = Service(
        loader.load_rules_text(RULES), tags, now=lambda: datetime(2026, 1, 1, tzinfo=UTC)
    )
    [unpinned] = plain.decide([Item(parse("redis:7"), "prod")], deadline=Deadline(1))
    assert [v.rule for v in unpinned.violations] == ["prod-pinned"]


def test_the_plan_memo_follows_the_date_for_exception_expiry() -> None:
    now = [datetime(2026, 6, 30, 23, 0, tzinfo=UTC)]
    svc, _ = service(now)
    item = [Item(parse("nginx"), "prod")]
    [before] = svc.decide(item, deadline=Deadline(1))
    assert before.violations == () and before.warnings == ()
    now[0] = datetime(2026, 7, 1, 0, 30, tzinfo=UTC)
    [after] = svc.decide(item, deadline=Deadline(1))
    assert [v.rule for v in after.violations] == ["prod-pinned"]
    assert after.warnings and "expired on 2026-06-30" in after.warnings[0]


AGE_RULES = """
apiVersion: image-policy/v1
kind: RuleSet
rules:
  - id: fresh
    match: {images: ["**"]}
    require: {maxAge: 30d}
"""


class Fixed:
    """A resolver handing out one facts object, as the registry resolver does when cached."""

    def __init__(self, facts: ImageFacts) -> None:
        self.facts = facts

    def resolve(
        self, items: Sequence[tuple[Reference, Needs]], *, deadline: Deadline
    ) -> list[ImageFacts]:
        return [self.facts for _ in items]


def test_a_reused_decision_changes_exactly_when_an_age_check_would() -> None:
    from datetime import timedelta

    from policy.facts import PlatformFacts

    created = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    facts = ImageFacts(
        digest="sha256:" + "a" * 64,
        index=False,
        platforms=(PlatformFacts("linux/amd64", layers=1, created=created, config_known=True),),
    )
    now = [created + timedelta(days=29)]
    svc = Service(loader.load_rules_text(AGE_RULES), Fixed(facts), now=lambda: now[0])
    item = [Item(parse("ghcr.io/a/b:1"), "x")]
    [first] = svc.decide(item, deadline=Deadline(1))
    assert first.allowed
    now[0] += timedelta(hours=1)
    [again] = svc.decide(item, deadline=Deadline(1))
    assert again is first  # the same facts, nothing could have changed: reused
    now[0] = created + timedelta(days=30, seconds=1)
    [old] = svc.decide(item, deadline=Deadline(1))
    assert not old.allowed
    assert "was built 30 days ago" in old.violations[0].message
    now[0] = created + timedelta(days=31, seconds=1)
    [older] = svc.decide(item, deadline=Deadline(1))
    assert "was built 31 days ago" in older.violations[0].message  # the message stays true


def layers(n: int) -> PlatformFacts:
    return PlatformFacts("linux/amd64", layers=n)


class Table:
    """A resolver answering from a table of facts objects (the same object until replaced),
    like the registry resolver's answer cache."""

    def __init__(self, facts: dict[Reference, ImageFacts]) -> None:
        self.facts = facts
        self.calls = 0

    def resolve(
        self, items: Sequence[tuple[Reference, Needs]], *, deadline: Deadline
    ) -> list[ImageFacts]:
        self.calls += 1
        return [self.facts[ref] for ref, _ in items]


def test_an_unchanged_review_reuses_its_decisions_and_a_changed_fact_is_judged_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from policy import service as service_mod

    evaluated: list[Reference] = []
    real = service_mod.evaluate_image

    def counting(*args: object, **kwargs: object) -> object:
        evaluated.append(args[1])  # type: ignore[arg-type]
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(service_mod, "evaluate_image", counting)
    web, tools = parse("ghcr.io/shop/web:1"), parse("ghcr.io/shop/tools:1")
    few = ImageFacts(digest="sha256:" + "a" * 64, index=False, platforms=(layers(2),))
    table = Table({web: few, tools: few})
    now = [datetime(2026, 3, 1, tzinfo=UTC)]
    svc = Service(loader.load_rules_text(RULES), table, now=lambda: now[0])
    items = [Item(web, "shop"), Item(tools, "shop")]
    first = svc.decide(items, deadline=Deadline(1))
    assert [d.allowed for d in first] == [True, True] and len(evaluated) == 2
    again = svc.decide(items, deadline=Deadline(1))
    assert again == first and all(a is b for a, b in zip(again, first, strict=True))
    assert len(evaluated) == 2 and table.calls == 2  # facts asked again, nothing re-judged
    # the resolver hands out a new answer for one image (its tag moved): only it is re-judged
    table.facts[web] = ImageFacts(digest="sha256:" + "b" * 64, index=False, platforms=(layers(9),))
    changed = svc.decide(items, deadline=Deadline(1))
    assert [d.allowed for d in changed] == [False, True]
    assert evaluated[2:] == [web]
    assert changed[1] is first[1]
    # the next day, the plans are made again (exceptions expire by date), decisions still hold
    now[0] = datetime(2026, 3, 2, tzinfo=UTC)
    assert [d.allowed for d in svc.decide(items, deadline=Deadline(1))] == [False, True]


class Unreachable:
    """A resolver whose every answer is a new failure (as the registry resolver's are: it
    keeps no failed answer)."""

    def resolve(
        self, items: Sequence[tuple[Reference, Needs]], *, deadline: Deadline
    ) -> list[ImageFacts]:
        return [
            ImageFacts(
                digest=ref.digest,
                errors={"manifest": "registry unreachable"},
                details={"manifest": "no answer"},
            )
            for ref, _ in items
        ]


def test_decisions_on_failed_facts_are_not_remembered_but_the_plans_are() -> None:
    """Failed facts are never handed out twice, so their decisions could never be reused:
    measuring them into the memos would only cost (an attack naming hosts that never answer
    pays it per image per review). The plans are still kept."""
    svc = Service(
        loader.load_rules_text(RULES),
        Unreachable(),
        now=lambda: datetime(2026, 1, 1, tzinfo=UTC),
    )
    items = [Item(parse(f"ghcr.io/a/b{i}:1"), "dev") for i in range(5)]
    for _ in range(2):
        decisions = svc.decide(items, deadline=Deadline(1))
        assert [d.allowed for d in decisions] == [False] * 5
    assert len(svc._decisions) == 0
    [batch] = svc._batches._data.values()
    assert batch.facts is None and batch.decisions == ()
    assert len(svc._plans) == 5
