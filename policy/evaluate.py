"""The decision engine: rule set + facts about images + context → Decision (pure, deterministic).

Two steps, so the resolver fetches only what is needed:
- `needs(ruleset, ref, context)` says which facts an image needs (nothing, tier, platforms,
  manifests, configs, for which platforms), and nothing at all for an image a `registries` check
  already denies — such a registry is never contacted;
- `evaluate(ruleset, images, context)` judges each image with what was resolved.

It stays one file (about 500 lines): both steps read the rules through the same few helpers
(`applicable`, the platform selection, the registry refusal, `judged_as`), and the guarantee
that an image is judged on exactly the facts it was said to need holds only while they sit
side by side. The checks themselves live in `policy.checks`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta

from policy import attestations, checks, patterns, signing
from policy.facts import NO_NEEDS, ImageFacts, Needs, PlatformFacts
from policy.reference import Reference
from policy.rules import Action, Rule, RuleSet

UNMATCHED_RULE = "(unmatched)"
TAG_RULE = "(tag)"
"""The rule named by the finding that a `name:tag@digest` reference was judged by digest."""
TAG_ACTION: Action = "warn"
"""That finding's action: the decision is already made on what runs (the digest); a rule
author who wants untrue tags refused requires `tagMatchesDigest: true` in a deny rule."""
_SEVERITY: dict[Action, int] = {"audit": 0, "warn": 1, "deny": 2}


@dataclass(frozen=True)
class Context:
    """Where and when a decision is made. `namespace` None means not known (CLI)."""

    now: datetime
    namespace: str | None = None


@dataclass(frozen=True)
class Violation:
    """One finding. `message` is what the pod author reads (a fact that could not be fetched
    is named by its class, `ImageFacts.errors`); `detail` is the operator's: the full reason
    (`ImageFacts.details`), for the decision log and the CLI's reports, "" when none."""

    rule: str
    check: str
    action: Action
    message: str
    detail: str = ""


@dataclass(frozen=True)
class ImageDecision:
    """The verdict on one image: denied when any violation's action is deny.

    A decision is made once and read for every review that meets the image again (the
    service reuses it while its facts hold), so the violations by action are sorted out once,
    when it is made.
    """

    reference: Reference
    facts: ImageFacts
    violations: tuple[Violation, ...]
    warnings: tuple[str, ...] = ()
    _by_action: dict[str, tuple[Violation, ...]] = field(
        init=False, repr=False, compare=False, hash=False
    )

    def __post_init__(self) -> None:
        by_action: dict[str, tuple[Violation, ...]] = {"audit": (), "warn": (), "deny": ()}
        for v in self.violations:
            by_action[v.action] += (v,)
        object.__setattr__(self, "_by_action", by_action)

    @property
    def allowed(self) -> bool:
        return not self._by_action["deny"]

    def by_action(self, action: Action) -> tuple[Violation, ...]:
        return self._by_action[action]


@dataclass(frozen=True)
class Decision:
    images: tuple[ImageDecision, ...]

    @property
    def allowed(self) -> bool:
        return all(i.allowed for i in self.images)


@dataclass(frozen=True)
class Applicable:
    """The rules that apply to one image after exceptions, and the expired exceptions met."""

    rules: tuple[Rule, ...]
    expired: tuple[str, ...]
    matched_any: bool
    registry_denied: bool
    """A deny-action `registries` check among `rules` rejects the image."""
    by_digest: Applicable | None = None
    """For `name:tag@digest` whose tag could change the decision (a pattern, exception or
    check reads it): what applies to `name@digest`, judged when the registry does not confirm
    that the tag points at the digest. None when the tag cannot change anything."""


def applicable(ruleset: RuleSet, ref: Reference, context: Context) -> Applicable:
    """The rules that apply to this image in this context (after exceptions); what `needs`
    and `evaluate_image` start from, so a caller judging many images may compute it once.

    The runtime pulls the digest of `name:tag@digest` and ignores the tag, so the tag may only
    count when it is true: `by_digest` says what applies without it."""
    today = context.now.date()
    matched = [r for r in ruleset.rules if r.match.covers(ref, context.namespace)]
    kept = []
    expired: list[str] = []
    for rule in matched:
        lifted = False
        for exc in ruleset.exceptions:
            if not exc.covers(rule.id, ref, context.namespace):
                continue
            if exc.expired(today):
                expired.append(
                    f"exception for rule {rule.id} on {ref.name} expired on {exc.expires} "
                    f"({exc.reason}); the rule applies again"
                )
                continue
            lifted = True
        if not lifted:
            kept.append(rule)
    rules = tuple(kept)
    found = Applicable(
        rules, tuple(dict.fromkeys(expired)), bool(matched), _registry_denied(rules, ruleset, ref)
    )
    if ref.tag is None or ref.digest is None:
        return found
    bare = applicable(ruleset, ref._replace(tag=None), context)
    if _same_rules(found, bare) and not any(
        checks.CHECKS[check.name].reads_tag for rule in rules for check in rule.checks
    ):
        return found
    return Applicable(
        found.rules, found.expired, found.matched_any, found.registry_denied, by_digest=bare
    )


def _same_rules(a: Applicable, b: Applicable) -> bool:
    return (
        a.matched_any == b.matched_any
        and len(a.rules) == len(b.rules)
        and all(x is y for x, y in zip(a.rules, b.rules, strict=True))
        and a.expired == b.expired
    )


def _action(rule: Rule, ruleset: RuleSet) -> Action:
    return rule.action or ruleset.defaults.action


def _platform_selection(rule: Rule, ruleset: RuleSet) -> tuple[patterns.Glob, ...]:
    return rule.platforms or ruleset.defaults.platforms


def _registry_denied(rules: Iterable[Rule], ruleset: RuleSet, ref: Reference) -> bool:
    for rule in rules:
        if _action(rule, ruleset) != "deny":
            continue
        for check in rule.checks:
            if check.name == "registries" and checks.CHECKS[check.name].judge(
                check.setting, _reference_subject(ref, rule)
            ):
                return True
    return False


def _reference_subject(ref: Reference, rule: Rule) -> checks.Subject:
    return checks.Subject(ref, ImageFacts(), (), rule.id, datetime.min)


def registry_refused(
    ruleset: RuleSet, ref: Reference, context: Context, *, rules: Applicable | None = None
) -> bool:
    """Whether a deny-action `registries` check rejects this image (its registry is never
    contacted). `rules`: `applicable(ruleset, ref, context)` when already computed."""
    rules = rules if rules is not None else applicable(ruleset, ref, context)
    return rules.registry_denied


def needs(
    ruleset: RuleSet, ref: Reference, context: Context, *, rules: Applicable | None = None
) -> Needs:
    """The facts `evaluate` will read for this image; NO_NEEDS if a registries check denies it.
    `rules`: `applicable(ruleset, ref, context)` when already computed."""
    rules = rules if rules is not None else applicable(ruleset, ref, context)
    if rules.registry_denied:
        return NO_NEEDS
    out = _needs(ruleset, rules)
    if rules.by_digest is not None:
        # Either set of rules may be judged: which one, the registry's answer on the tag says.
        out = out | _needs(ruleset, rules.by_digest) | Needs(tag=True)
    return out


def _needs(ruleset: RuleSet, rules: Applicable) -> Needs:
    out = NO_NEEDS
    for rule in rules.rules:
        select = tuple(str(g) for g in _platform_selection(rule, ruleset))
        for check in rule.checks:
            fact = checks.CHECKS[check.name].fact
            if fact == "tier":
                out = out | Needs(tier=True)
            elif fact == "platforms":
                out = out | Needs(digest=True, platforms=True)
            elif fact == "manifest":
                out = out | Needs(digest=True, manifest=True, select=select)
            elif fact == "config":
                out = out | Needs(digest=True, manifest=True, config=True, select=select)
            elif fact == "tag":
                out = out | Needs(tag=True)
            elif fact == "signatures":
                assert isinstance(check.setting, signing.SignaturePolicy)
                keys = tuple(sorted({k.der for k in check.setting.keys}))
                roots = check.setting.roots
                out = out | Needs(digest=True, signatures=True, keys=keys, roots=roots)
            elif fact == "attestations":
                assert isinstance(check.setting, attestations.AttestationPolicy)
                keys = tuple(sorted({k.der for k in check.setting.keys}))
                out = out | Needs(
                    digest=True,
                    manifest=True,
                    attestations=True,
                    select=select,
                    keys=keys,
                    roots=check.setting.roots,
                )
    return out


def _select(facts: ImageFacts, globs: Sequence[patterns.Glob]) -> tuple[PlatformFacts, ...]:
    entries = facts.image_platforms()
    if not facts.index:
        return entries
    return tuple(
        p for p in entries if any(g.matches(patterns.normalize_platform(p.platform)) for g in globs)
    )


def _missing(
    fact: checks.Fact, facts: ImageFacts, selected: Sequence[PlatformFacts]
) -> tuple[str, str] | None:
    """Why `fact` is not known for this image — the reason (classified) and its detail ("" when
    none) — or None when it is."""
    if fact == "reference":
        return None
    if fact == "tag":
        # Known, or nothing to confirm (no tag beside a digest): the check has its answer.
        return _error(facts, "tag") if facts.tag_match is None else None
    if fact == "tier":
        return None if facts.tier is not None else _error(facts, "tier", "tier not resolved")
    if fact == "signatures":
        if facts.signatures is not None:
            return None
        for key in ("signatures", "digest"):
            if facts.errors.get(key):
                return _error(facts, key)
        return "signatures not looked up", ""
    if fact == "attestations":
        for key in ("attestations", "manifest", "platforms", "digest"):
            if facts.errors.get(key):
                return _error(facts, key)
        if facts.index is None:
            return "manifest not resolved", ""
        for p in selected:
            if p.attestations is None:
                return f"attestations for {p.platform} not resolved", ""
        return None
    found: tuple[str, str] | None = None
    if facts.errors:  # the first of these facts that failed says why
        for key in (fact, "manifest" if fact == "config" else fact, "platforms", "digest"):
            if facts.errors.get(key):
                found = _error(facts, key)
                break
    if facts.index is None:
        return found or ("manifest not resolved", "")
    if fact == "platforms":
        return None
    for p in selected:
        if fact == "manifest" and p.layers is None:
            return found or (f"manifest for {p.platform} not resolved", "")
        if fact == "config" and not p.config_known:
            return found or (f"config for {p.platform} not resolved", "")
    return None


def _error(facts: ImageFacts, key: str, default: str | None = None) -> tuple[str, str] | None:
    """`facts.errors[key]` with its detail, or `default` (no detail), or None."""
    reason = facts.errors.get(key, default)
    if reason is None:
        return None
    return reason, facts.details.get(key, "")


def _resolve_violation(
    ruleset: RuleSet, rule: Rule, check: str, ref: Reference, fact: str, why: tuple[str, str]
) -> Violation | None:
    """A fact the check needs could not be fetched: `onResolveError` decides, but never more
    strictly than the rule itself would (a warn rule that cannot be checked only warns)."""
    mode = ruleset.defaults.on_resolve_error
    if mode == "allow":
        return None
    action = min(mode, _action(rule, ruleset), key=_SEVERITY.__getitem__)
    what = {
        "config": "image config",
        "manifest": "image manifest",
        "platforms": "platform list",
        "tag": "where the tag points",
        "signatures": "signatures",
        "attestations": "attestations",
    }
    reason, detail = why
    return Violation(
        rule.id,
        check,
        action,
        f"cannot check {ref}: {what.get(fact, fact)} could not be fetched ({reason}); "
        f"onResolveError is {mode}",
        detail,
    )


def _judge_rule(
    ruleset: RuleSet,
    rule: Rule,
    ref: Reference,
    facts: ImageFacts,
    context: Context,
    written_tag: str | None = None,
) -> list[Violation]:
    action = _action(rule, ruleset)
    globs = _platform_selection(rule, ruleset)
    selected = _select(facts, globs)
    out: list[Violation] = []
    no_platform_reported = False
    for check in rule.checks:
        spec = checks.CHECKS[check.name]
        why = _missing(spec.fact, facts, selected)
        if why is not None:
            violation = _resolve_violation(ruleset, rule, check.name, ref, spec.fact, why)
            if violation is not None:
                out.append(violation)
            continue
        if spec.fact in ("manifest", "config", "attestations") and facts.index and not selected:
            if not no_platform_reported:
                offered = ", ".join(p.platform for p in facts.image_platforms()) or "no images"
                wanted = ", ".join(str(g) for g in globs)
                out.append(
                    Violation(
                        rule.id,
                        check.name,
                        action,
                        f"{ref} offers {offered}; none of the platforms rule {rule.id} "
                        f"reads ({wanted}), so {check.name} cannot be checked",
                    )
                )
                no_platform_reported = True
            continue
        subject = checks.Subject(ref, facts, selected, rule.id, context.now, written_tag)
        for message in spec.judge(check.setting, subject):
            text = f"{rule.message} ({message})" if rule.message else message
            out.append(Violation(rule.id, check.name, action, text))
    return out


def judged_as(ref: Reference, facts: ImageFacts, rules: Applicable) -> tuple[Reference, Applicable]:
    """What is judged: `ref` with its rules, or — when its tag could change the decision and
    the registry did not confirm it points at the digest — `name@digest` with its own rules."""
    if rules.by_digest is None or facts.tag_match is True:
        return ref, rules
    return ref._replace(tag=None), rules.by_digest


def _tag_finding(ref: Reference, facts: ImageFacts) -> Violation:
    detail = ""
    if facts.tag_match is False:
        why = f"tag {ref.tag} points to {_short(facts.tag_digest)}, not to {_short(ref.digest)}"
    else:
        reason, detail = _error(facts, "tag", "the registry was not asked") or ("", "")
        why = f"tag {ref.tag} could not be confirmed to point to {_short(ref.digest)} ({reason})"
    # Short digests: the message goes into an AdmissionReview warning (256 characters at most)
    # after the image text, which holds the full digest already.
    return Violation(
        TAG_RULE,
        "tagMatchesDigest",
        TAG_ACTION,
        f"{why}; judged by digest alone (the runtime pulls the digest and ignores the tag)",
        detail,
    )


def _short(digest: str | None) -> str:
    """`sha256:0123456789ab…`: enough of a digest to tell it apart in a message."""
    if digest is None:
        return "?"
    algorithm, _, encoded = digest.partition(":")
    return f"{algorithm}:{encoded[:12]}…" if len(encoded) > 12 else digest


def end_of_day(now: datetime) -> datetime:
    """Midnight after `now`, in its time zone: until then the applicable rules and exceptions,
    which go by date, stay the same."""
    return datetime.combine(now.date() + timedelta(days=1), time.min, tzinfo=now.tzinfo)


def stable_until(
    ruleset: RuleSet,
    ref: Reference,
    facts: ImageFacts,
    context: Context,
    *,
    rules: Applicable | None = None,
) -> datetime:
    """Until when `evaluate_image` gives the same decision for these same facts: the end of the
    day (rules and exceptions apply by date), or earlier when a clock-dependent check (maxAge)
    would change its answer. Callers may reuse a decision until then."""
    rules = rules if rules is not None else applicable(ruleset, ref, context)
    ref, rules = judged_as(ref, facts, rules)
    now = context.now if context.now.tzinfo else context.now.replace(tzinfo=UTC)
    until = end_of_day(now)
    for rule in rules.rules:
        selected: tuple[PlatformFacts, ...] | None = None
        for check in rule.checks:
            spec = checks.CHECKS[check.name]
            if spec.changes_at is None:
                continue
            if selected is None:
                selected = _select(facts, _platform_selection(rule, ruleset))
            moment = spec.changes_at(
                check.setting, checks.Subject(ref, facts, selected, rule.id, now)
            )
            if moment is not None and moment < until:
                until = moment
    return until


def evaluate_image(
    ruleset: RuleSet,
    ref: Reference,
    facts: ImageFacts,
    context: Context,
    *,
    rules: Applicable | None = None,
) -> ImageDecision:
    """Judge one image with what is known about it. `rules`: `applicable(ruleset, ref,
    context)` when already computed.

    A `name:tag@digest` reference whose tag could change the decision is judged as written
    only when the registry confirmed the tag points at the digest; otherwise as `name@digest`,
    with a finding (`TAG_RULE`) that says so."""
    found = rules if rules is not None else applicable(ruleset, ref, context)
    judged, found_for = judged_as(ref, facts, found)
    written_tag = ref.tag if judged is not ref else None
    violations, expired = _violations(ruleset, judged, facts, context, found_for, written_tag)
    if judged is not ref and not any(v.check == "tagMatchesDigest" for v in violations):
        violations.append(_tag_finding(ref, facts))
    return ImageDecision(ref, facts, tuple(violations), expired)


def _violations(
    ruleset: RuleSet,
    ref: Reference,
    facts: ImageFacts,
    context: Context,
    found: Applicable,
    written_tag: str | None,
) -> tuple[list[Violation], tuple[str, ...]]:
    if not found.matched_any:
        if ruleset.defaults.unmatched == "allow":
            return [], ()
        return [
            Violation(
                UNMATCHED_RULE,
                "unmatched",
                "deny",
                f"no rule of {ruleset.name} matches {ref.name}; "
                "images no rule covers are denied (defaults.unmatched: deny)",
            )
        ], ()
    violations: list[Violation] = []
    if found.registry_denied:
        # The registry is refused, so it was never contacted: judge only the reference.
        for rule in found.rules:
            for check in rule.checks:
                if checks.CHECKS[check.name].fact == "reference":
                    subject = checks.Subject(ref, facts, (), rule.id, context.now, written_tag)
                    for message in checks.CHECKS[check.name].judge(check.setting, subject):
                        text = f"{rule.message} ({message})" if rule.message else message
                        violations.append(
                            Violation(rule.id, check.name, _action(rule, ruleset), text)
                        )
    else:
        for rule in found.rules:
            violations.extend(_judge_rule(ruleset, rule, ref, facts, context, written_tag))
    return violations, found.expired


def evaluate(
    ruleset: RuleSet, images: Iterable[tuple[Reference, ImageFacts]], context: Context
) -> Decision:
    """Judge every image; the decision allows only when no image is denied."""
    return Decision(tuple(evaluate_image(ruleset, ref, facts, context) for ref, facts in images))
