"""The policy in force (rules, settings, the services built from them), reloaded when its
files change: a broken new file is refused and the old policy keeps serving."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Protocol, runtime_checkable

from policy import loader, reference
from policy import resolver as resolver_mod
from policy import settings as settings_mod
from policy.errors import ConfigErrors, PolicyError
from policy.registry.client import RateLimit
from policy.rules import RuleSet
from policy.service import Resolver, Service
from policy.settings import Settings


@runtime_checkable
class ObservableResolver(Protocol):
    """A resolver that also reports cache statistics and registry rate limits (for metrics)."""

    def stats(self) -> resolver_mod.ResolverStats: ...

    def rate_limit(self, registry: str) -> RateLimit | None: ...


@runtime_checkable
class PressuredResolver(Protocol):
    """A resolver with bulkheads and breakers to report (for metrics and /readyz)."""

    def pressure(self) -> resolver_mod.Pressure: ...


@runtime_checkable
class KnowingResolver(Protocol):
    """A resolver that can be told which registries the operator named (trusted with threads
    from the start, as registries that have answered are: `bulkhead`)."""

    def know(self, registries: Iterable[str]) -> None: ...


# --- the policy in force, reloaded when its files change -----------------------------------


@dataclass(frozen=True)
class Policy:
    """One consistent snapshot: rules, settings and the services built from them."""

    settings: Settings
    resolver: Resolver
    ruleset: RuleSet | None
    validate: Service | None
    pin: Service | None
    rules_error: str | None = None
    settings_error: str | None = None
    loaded_at: float = 0.0
    named_registries: frozenset[str] = frozenset()


OTHER_REGISTRY = "other"
"""The metric label shared by every registry the settings and rules do not name."""


def named_registries(settings: Settings, ruleset: RuleSet | None) -> frozenset[str]:
    """The registry hosts written out in the settings or the rules (lowercase): those in
    `registries:`, and the literal host of every image pattern (rule matches, exceptions, the
    tier catalog) and `registries` check entry. A host glob (`*.corp.example`) names none.
    Docker Hub is always named: it is where every short image name goes."""
    hosts = {reference.DEFAULT_REGISTRY, *settings.registries}
    images = [pattern for _, pattern in settings.tier_catalog]
    if ruleset is not None:
        for rule in ruleset.rules:
            images += [*rule.match.images, *rule.match.exclude_images]
            hosts.update(
                str(glob)
                for check in rule.checks
                if check.name == "registries" and isinstance(check.setting, tuple)
                for glob in check.setting
            )
        for exception in ruleset.exceptions:
            images += exception.images
    hosts.update(pattern.name.partition("/")[0] for pattern in images)
    return frozenset(h.lower() for h in hosts if h and not any(c in h for c in "*?[]"))


Signature = tuple[tuple[str, int, int, int], ...]


def _signature(paths: Sequence[Path]) -> Signature:
    """What identifies the current content of these files or directories (stat follows
    symlinks, so a ConfigMap's atomic `..data` swap changes it)."""
    out: list[tuple[str, int, int, int]] = []
    for path in paths:
        entries = [path]
        if path.is_dir():
            entries = sorted(
                p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.name[0] != "."
            )
            out.append((str(path), -2, len(entries), 0))
        for entry in entries:
            try:
                st = entry.stat()
            except OSError:
                out.append((str(entry), -1, -1, -1))
                continue
            out.append((str(entry), st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(out)


class PolicyHolder:
    """Holds the current `Policy` and swaps in a new one when rule or settings files change.

    Checks happen at most every `interval` seconds of `clock`, by the request that finds the
    interval passed (others keep using the current snapshot meanwhile).
    """

    def __init__(
        self,
        *,
        settings: Settings,
        settings_path: Path | None,
        rules: RuleSet | None,
        rule_paths: Sequence[Path],
        resolver: Resolver | None,
        build_resolver: Callable[[Settings], Resolver],
        now: Callable[[], datetime],
        clock: Callable[[], float],
        interval: float,
        on_reload: Callable[[str, str, str | None], None],
    ) -> None:
        self._settings_path = settings_path
        self._rule_paths = tuple(rule_paths)
        self._fixed_resolver = resolver
        self._build_resolver = build_resolver
        self._now = now
        self._clock = clock
        self._interval = interval
        self._on_reload = on_reload
        self._lock = threading.Lock()
        self._next_check = clock() + interval
        self._settings_sig = _signature([settings_path]) if settings_path else ()
        self._rules_sig = _signature(self._rule_paths)
        chosen = resolver if resolver is not None else build_resolver(settings)
        ruleset, error = (rules, None) if rules is not None else self._load_rules()
        if error is not None:
            on_reload("rules", "error", error)
        self._policy = self._assemble(settings, chosen, ruleset, error, None)

    @property
    def current(self) -> Policy:
        """The snapshot in force, without checking the files."""
        return self._policy

    def resolver(self) -> Resolver:
        """The resolver of the policy in force (after reloading changed files if due)."""
        return self.policy.resolver

    @property
    def policy(self) -> Policy:
        """The current snapshot, after reloading changed files if a check is due."""
        now = self._clock()
        if now >= self._next_check and self._lock.acquire(blocking=False):
            try:
                self._next_check = now + self._interval
                self._reload()
            finally:
                self._lock.release()
        return self._policy

    def _assemble(
        self,
        settings: Settings,
        resolver: Resolver,
        ruleset: RuleSet | None,
        rules_error: str | None,
        settings_error: str | None,
    ) -> Policy:
        validate = pin = None
        if ruleset is not None:
            # the memo budget: 1/2 the webhook's judged reviews, 1/4 each service's memos
            share = settings.memo_bytes // 4
            validate = Service(ruleset, resolver, now=self._now, memo_bytes=share)
            pin = Service(ruleset, resolver, now=self._now, pin=True, memo_bytes=share)
        named = named_registries(settings, ruleset)
        if isinstance(resolver, KnowingResolver):
            # The registries the cluster is meant to use are not "never heard from" during
            # an attack that starts before they first answer.
            resolver.know(named)
        return Policy(
            settings=settings,
            resolver=resolver,
            ruleset=ruleset,
            validate=validate,
            pin=pin,
            rules_error=rules_error,
            settings_error=settings_error,
            loaded_at=time.time(),
            named_registries=named,
        )

    def _load_rules(self) -> tuple[RuleSet | None, str | None]:
        try:
            return loader.load_rules(self._rule_paths), None
        except ConfigErrors as exc:
            return None, str(exc)

    def _reload(self) -> None:
        current = self._policy
        settings, resolver, settings_error = current.settings, current.resolver, None
        if self._settings_path is not None:
            sig = _signature([self._settings_path])
            if sig != self._settings_sig:
                self._settings_sig = sig
                try:
                    settings = settings_mod.load_settings(self._settings_path)
                except ConfigErrors as exc:
                    settings_error = str(exc)
                    self._on_reload("settings", "error", settings_error)
                else:
                    try:
                        if self._fixed_resolver is None:
                            resolver = self._build_resolver(settings)
                    except PolicyError as exc:
                        # e.g. a `dockerConfig` that is no docker config: the old settings and
                        # resolver keep serving, and /readyz says why (never a 500 later).
                        settings, settings_error = current.settings, str(exc)
                        self._on_reload("settings", "error", settings_error)
                    else:
                        self._on_reload("settings", "ok", None)
            else:
                settings_error = current.settings_error
        ruleset, rules_error = current.ruleset, current.rules_error
        if self._rule_paths:
            sig = _signature(self._rule_paths)
            if sig != self._rules_sig:
                self._rules_sig = sig
                loaded, rules_error = self._load_rules()
                if loaded is not None:
                    ruleset = loaded
                    self._on_reload("rules", "ok", None)
                else:
                    self._on_reload("rules", "error", rules_error)
        if (settings, resolver, ruleset) != (current.settings, current.resolver, current.ruleset):
            self._policy = self._assemble(settings, resolver, ruleset, rules_error, settings_error)
            if resolver is not current.resolver:
                _retire(current.resolver, after=current.settings.decision_timeout + 1)
        elif (rules_error, settings_error) != (current.rules_error, current.settings_error):
            self._policy = replace(current, rules_error=rules_error, settings_error=settings_error)


def _retire(resolver: Resolver, *, after: float) -> None:
    """Close a replaced resolver's thread pools once reviews already using it are done (their
    deadline has passed), instead of leaking them at every settings change."""
    close = getattr(resolver, "close", None)
    if callable(close):
        timer = threading.Timer(after, close)
        timer.daemon = True
        timer.start()
