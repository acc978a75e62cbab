"""The rule-set model: what `loader` builds from YAML and `evaluate` reads (pure, frozen)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Literal

from policy import patterns
from policy.errors import Location
from policy.reference import Reference

Action = Literal["deny", "warn", "audit"]
ResolveErrorAction = Literal["deny", "warn", "allow"]
Unmatched = Literal["deny", "allow"]

ACTIONS: tuple[Action, ...] = ("deny", "warn", "audit")
RESOLVE_ERROR_ACTIONS: tuple[ResolveErrorAction, ...] = ("deny", "warn", "allow")
UNMATCHED: tuple[Unmatched, ...] = ("deny", "allow")
DEFAULT_PLATFORMS = ("linux/amd64", "linux/arm64")


@dataclass(frozen=True)
class Defaults:
    action: Action = "deny"
    platforms: tuple[patterns.Glob, ...] = tuple(
        patterns.platform_glob(p) for p in DEFAULT_PLATFORMS
    )
    on_resolve_error: ResolveErrorAction = "deny"
    unmatched: Unmatched = "deny"


def _namespace_matches(globs: tuple[patterns.Glob, ...], namespace: str | None) -> bool:
    """A known namespace must match a glob. An unknown one (a CLI run without --namespace or
    metadata.namespace) is matched by every selector: rules scoped to namespaces still apply
    (fail closed), and exceptions scoped to namespaces are not granted."""
    if namespace is None:
        return True
    return any(g.matches(namespace) for g in globs)


@dataclass(frozen=True)
class Match:
    """Which images (and Kubernetes namespaces) a rule covers."""

    images: tuple[patterns.ImagePattern, ...]
    exclude_images: tuple[patterns.ImagePattern, ...] = ()
    namespaces: tuple[patterns.Glob, ...] = (patterns.namespace_glob("*"),)

    def covers(self, ref: Reference, namespace: str | None) -> bool:
        if not any(p.matches(ref) for p in self.images):
            return False
        if any(p.matches(ref) for p in self.exclude_images):
            return False
        return _namespace_matches(self.namespaces, namespace)


@dataclass(frozen=True)
class Check:
    """One entry under `require`: the check's name and its parsed setting."""

    name: str
    setting: object
    location: Location | None = None


@dataclass(frozen=True)
class Rule:
    id: str
    match: Match
    checks: tuple[Check, ...]
    action: Action | None = None
    description: str = ""
    message: str = ""
    platforms: tuple[patterns.Glob, ...] | None = None
    location: Location | None = None


@dataclass(frozen=True)
class PolicyException:
    """Lifts the named rules for some images (and namespaces) until `expires` (inclusive)."""

    rules: tuple[str, ...]
    images: tuple[patterns.ImagePattern, ...]
    namespaces: tuple[patterns.Glob, ...] | None
    reason: str
    expires: date | None = None
    location: Location | None = None

    def covers(self, rule_id: str, ref: Reference, namespace: str | None) -> bool:
        if rule_id not in self.rules and "*" not in self.rules:
            return False
        if not any(p.matches(ref) for p in self.images):
            return False
        if self.namespaces is None:
            return True
        if namespace is None:
            return False
        return any(g.matches(namespace) for g in self.namespaces)

    def expired(self, today: date) -> bool:
        return self.expires is not None and today > self.expires


@dataclass(frozen=True)
class RuleSet:
    name: str
    defaults: Defaults
    rules: tuple[Rule, ...]
    exceptions: tuple[PolicyException, ...] = ()
    sources: tuple[str, ...] = ()

    def rule(self, rule_id: str) -> Rule | None:
        return next((r for r in self.rules if r.id == rule_id), None)
