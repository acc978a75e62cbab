"""The webhook's HTTP edge (the only module importing flask): `create_app()` builds a Flask app.

Endpoints: `POST /validate`, `POST /mutate` (AdmissionReview v1/v1beta1), `POST /imagereview`
(ImagePolicyWebhook), `GET /healthz`, `GET /readyz`, `GET /metrics` (Prometheus, one
`CollectorRegistry` per app).

Every review goes through `policy.service.Service`, the pipeline the CLI uses too. A malformed
request is answered 400 with a message saying what is wrong (413 for a body over 3 MiB, whether
sent with a Content-Length or chunked); only a bug gives a 500, logged with its traceback. One
JSON log line per decision.

Rule and settings files are re-read when they change (checked at most once per second, on
request): a broken new file is refused, the old policy keeps serving, and the error is logged,
counted in metrics and shown by `/readyz` (which stays ready as long as valid rules are loaded,
so one bad ConfigMap update cannot take every replica out of the Service at once).

`gunicorn 'policy.web:create_app()'` works: settings come from `$IMAGE_POLICY_CONFIG` and the
rule files from `$IMAGE_POLICY_RULES` (paths separated by `os.pathsep`).
"""

from __future__ import annotations

import atexit
import bisect
import collections
import json
import logging
import math
import operator
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, runtime_checkable

from flask import Flask, Response, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from policy import loader, reference
from policy import resolver as resolver_mod
from policy import settings as settings_mod
from policy.cache import ByteMemo
from policy.deadline import Deadline
from policy.errors import ConfigErrors, InvalidReference, PolicyError, ReviewError
from policy.evaluate import ImageDecision, Violation
from policy.k8s import admission
from policy.k8s.admission import Finding
from policy.k8s.workloads import ImageSite
from policy.registry.client import RateLimit, RequestEvent
from policy.rules import RuleSet
from policy.service import Item, Resolver, Service
from policy.settings import Settings
from policy.sharedcache import LATENCY_BUCKETS as LATENCY_BOUNDS
from policy.sharedcache import SharedCache

RULES_ENV = "IMAGE_POLICY_RULES"
MAX_BODY = 3 * 1024 * 1024
RELOAD_INTERVAL = 1.0
LOGGER = "policy.web"
LOG_INTERVAL = 0.1
"""Seconds between writes of the decision log (lines wait at most this long)."""
LOG_BATCH = 1000
"""Lines waiting that wake the decision log writer before its interval is up."""
FRAGMENT_ENTRIES = 4096
"""Encoded findings the decision log remembers (cleared when full) ..."""
FRAGMENT_BYTES = 4 * 1024 * 1024
"""... or when their text passes this many bytes."""
_LOG_JSON = json.JSONEncoder(default=str)
"""Encodes log lines (one encoder, not one built per `json.dumps(..., default=str)` call)."""

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 10.0)


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


# --- metrics -------------------------------------------------------------------------------


OWN_LABELS = frozenset({resolver_mod.HUB_LANE, resolver_mod.HUB_API})
"""Bulkheads that are not registry hosts (Docker Hub's tier lookups and its API): always
labelled by their own name."""


def pressure_by_label(
    pressure: resolver_mod.Pressure, label: Callable[[str], str]
) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
    """In-flight lookups, queued lookups and short-circuited registries by metric label (the
    registries not named in the settings or rules added up under `other`)."""
    in_flight: dict[str, int] = {}
    queued: dict[str, int] = {}
    short: dict[str, int] = {}
    for source, into in ((pressure.in_flight, in_flight), (pressure.queued, queued)):
        for key, n in source.items():
            name = key if key in OWN_LABELS else label(key)
            into[name] = into.get(name, 0) + n
    for key in pressure.short_circuited:
        name = key if key in OWN_LABELS else label(key)
        short[name] = short.get(name, 0) + 1
    return in_flight, queued, short


class _ResolverCollector:
    """Cache hits/misses, Docker Hub's rate limit and the bulkheads' pressure, read from the
    current resolver at scrape."""

    def __init__(self, current: Callable[[], Resolver], label: Callable[[str], str]) -> None:
        self._current = current
        self._label = label

    def collect(self) -> Iterator[Metric]:
        resolver = self._current()
        if isinstance(resolver, PressuredResolver):
            yield from self._pressure(resolver.pressure())
        if not isinstance(resolver, ObservableResolver):
            return
        stats = resolver.stats()
        lookups = CounterMetricFamily(
            "image_policy_cache_lookups",
            "Resolver cache lookups by cache and result",
            labels=["cache", "result"],
        )
        for cache in ("facts", "tag", "manifest", "config"):
            lookups.add_metric([cache, "hit"], getattr(stats, f"{cache}_hits"))
            lookups.add_metric([cache, "miss"], getattr(stats, f"{cache}_misses"))
        yield lookups
        yield CounterMetricFamily(
            "image_policy_coalesced_lookups",
            "Registry lookups that joined an identical one already in flight",
            value=stats.coalesced,
        )
        limit = resolver.rate_limit("docker.io")
        remaining = GaugeMetricFamily(
            "image_policy_dockerhub_ratelimit_remaining",
            "Docker Hub pulls left in the current window, as last reported (NaN: not known)",
        )
        value = limit.remaining if limit is not None and limit.remaining is not None else None
        remaining.add_metric([], float("nan") if value is None else float(value))
        yield remaining

    def _pressure(self, pressure: resolver_mod.Pressure) -> Iterator[Metric]:
        in_flight, queued, short = pressure_by_label(pressure, self._label)
        for name, documentation, values in (
            (
                "image_policy_registry_in_flight",
                "Registry lookups running now, by registry (its share is bulkheads.perRegistry)",
                in_flight,
            ),
            (
                "image_policy_registry_queued",
                "Registry lookups waiting for a slot of their registry's share, by registry",
                queued,
            ),
            (
                "image_policy_registry_short_circuited",
                "Registries short-circuited now after consecutive timeouts, by registry",
                short,
            ),
        ):
            family = GaugeMetricFamily(name, documentation, labels=["registry"])
            for label, n in sorted(values.items()):
                family.add_metric([label], float(n))
            yield family
        threads = GaugeMetricFamily(
            "image_policy_resolver_threads",
            "The resolver's pool threads, by state (busy: running a lookup)",
            labels=["state"],
        )
        threads.add_metric(["busy"], float(pressure.busy))
        threads.add_metric(["idle"], float(pressure.threads - pressure.busy))
        yield threads


class _SharedCacheCollector:
    """The shared tier's (Redis) lookups, errors, leases, call latency and state, read from the
    current resolver's `shared` at scrape; nothing when `cache.shared` is not configured."""

    STATES = ("ok", "down", "breaker-open")

    def __init__(self, current: Callable[[], Resolver]) -> None:
        self._current = current

    def collect(self) -> Iterator[Metric]:
        shared = _shared_tier(self._current())
        if shared is None:
            return
        stats = shared.stats()
        lookups = CounterMetricFamily(
            "image_policy_shared_cache_lookups",
            "Shared cache (Redis) lookups by result (Redis failing or skipped counts as a miss)",
            labels=["result"],
        )
        lookups.add_metric(["hit"], stats.hits)
        lookups.add_metric(["miss"], stats.misses)
        yield lookups
        for name, documentation, value in (
            ("errors", "Redis calls that failed (unreachable, slow, refusing)", stats.errors),
            ("skipped", "Redis calls not made while the breaker was open", stats.skipped),
            (
                "invalid",
                "Entries dropped: unreadable, or content not matching its digest",
                stats.invalid,
            ),
            ("leases", "Leases taken: this replica fetched for the cluster", stats.leases),
            ("waits", "Lookups that waited for another replica's lease", stats.waits),
            ("shared", "Answers got by waiting for another replica's fetch", stats.shared),
        ):
            yield CounterMetricFamily(
                f"image_policy_shared_cache_{name}", documentation, value=value
            )
        yield HistogramMetricFamily(
            "image_policy_shared_cache_call_seconds",
            "Redis call latency (each lookup, write or lease is one call)",
            buckets=[
                *(
                    (str(bound), float(n))
                    for bound, n in zip(LATENCY_BOUNDS, stats.buckets, strict=True)
                ),
                ("+Inf", float(stats.calls)),
            ],
            sum_value=stats.seconds,
        )
        state = GaugeMetricFamily(
            "image_policy_shared_cache_state",
            "The shared cache's state (1 for the current one; not a readiness condition)",
            labels=["state"],
        )
        now = shared.state()
        for name in self.STATES:
            state.add_metric([name], 1.0 if name == now else 0.0)
        yield state


def _shared_tier(resolver: Resolver) -> SharedCache | None:
    shared = getattr(resolver, "shared", None)
    return shared if isinstance(shared, SharedCache) else None


class _ReviewTally:
    """The per-review metrics — reviews by endpoint and outcome, images by endpoint and verdict,
    and the latency histogram — kept as plain numbers under one lock and turned into Prometheus
    metrics when scraped.

    `prometheus_client`'s own counters and histograms take a lock per increment and a Python
    call per step; counting a review through them cost about a tenth of a warm review's own
    work. The exposition is the same: `image_policy_reviews_total`, `image_policy_images_total`
    and `image_policy_decision_seconds_bucket/_count/_sum`.
    """

    def __init__(self, buckets: Sequence[float]) -> None:
        self._bounds = tuple(buckets)
        self._lock = threading.Lock()
        self._reviews: dict[tuple[str, str], int] = {}
        self._images: dict[tuple[str, str], int] = {}
        # endpoint -> a count per bucket (the last one +Inf), then the sum of the seconds
        self._latency: dict[str, list[float]] = {}

    def count(self, endpoint: str, outcome: str) -> None:
        """A review answered without a decision of ours (bad request, unavailable, a bug)."""
        with self._lock:
            key = (endpoint, outcome)
            self._reviews[key] = self._reviews.get(key, 0) + 1

    def review(
        self,
        endpoint: str,
        outcome: str,
        seconds: float,
        verdicts: Iterable[tuple[str, int]] = (),
    ) -> None:
        """A review answered in `seconds`, with its images' verdict counts."""
        bucket = bisect.bisect_left(self._bounds, seconds)  # the first bound >= seconds
        with self._lock:
            key = (endpoint, outcome)
            self._reviews[key] = self._reviews.get(key, 0) + 1
            latency = self._latency.get(endpoint)
            if latency is None:
                latency = self._latency[endpoint] = [0.0] * (len(self._bounds) + 2)
            latency[bucket] += 1
            latency[-1] += seconds
            for verdict, n in verdicts:
                key = (endpoint, verdict)
                self._images[key] = self._images.get(key, 0) + n

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            reviews = dict(self._reviews)
            images = dict(self._images)
            latency = {endpoint: list(counts) for endpoint, counts in self._latency.items()}
        yield _counters(
            "image_policy_reviews", "Reviews answered, by endpoint and outcome", "outcome", reviews
        )
        yield _counters(
            "image_policy_images", "Images judged, by endpoint and verdict", "verdict", images
        )
        histogram = HistogramMetricFamily(
            "image_policy_decision_seconds",
            "Time to answer a review, by endpoint",
            labels=["endpoint"],
        )
        for endpoint, counts in sorted(latency.items()):
            cumulative, buckets = 0.0, []
            for bound, in_bucket in zip((*self._bounds, math.inf), counts[:-1], strict=True):
                cumulative += in_bucket
                buckets.append(("+Inf" if bound == math.inf else repr(float(bound)), cumulative))
            histogram.add_metric([endpoint], buckets, counts[-1])
        yield histogram


def _counters(
    name: str, documentation: str, label: str, values: dict[tuple[str, str], int]
) -> CounterMetricFamily:
    """A counter family by (endpoint, `label`)."""
    family = CounterMetricFamily(name, documentation, labels=["endpoint", label])
    for labels, n in sorted(values.items()):
        family.add_metric(list(labels), n)
    return family


class Metrics:
    """The app's Prometheus metrics, in a registry of its own."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        # Registries with a label of their own (set by `create_app` to the current policy's);
        # the others share OTHER_REGISTRY, so image strings cannot add series without bound.
        self.named_registries: Callable[[], frozenset[str]] = frozenset
        self.tally = _ReviewTally(LATENCY_BUCKETS)
        registry.register(self.tally)
        self.registry_requests = Counter(
            "image_policy_registry_requests",
            "HTTP requests sent to registries, by registry and status",
            ["registry", "status"],
            registry=registry,
        )
        self.reloads = Counter(
            "image_policy_config_reloads",
            "Rule and settings file (re)loads, by file and result",
            ["file", "result"],
            registry=registry,
        )

    def on_request(self, event: RequestEvent) -> None:
        status = str(event.status) if event.status is not None else "error"
        self.registry_requests.labels(self.registry_label(event.registry), status).inc()

    def registry_label(self, registry: str) -> str:
        """`registry` (lowercase) when the settings or rules name it, else OTHER_REGISTRY."""
        name = registry.lower()
        return name if name in self.named_registries() else OTHER_REGISTRY


# --- logging -------------------------------------------------------------------------------


def _log(logger: logging.Logger, level: int, event: str, **fields: object) -> None:
    logger.log(level, json.dumps({"event": event, **fields}, default=str, sort_keys=False))


class DecisionLog:
    """Decision log lines, written in batches by one writer thread.

    A request only appends its event to a buffer: no lock on the log handler, no JSON
    encoding, and no thread wake-up in the request path. The writer wakes every
    `interval` seconds (or as soon as `batch` lines are waiting), encodes what is buffered
    and hands the lines to the logger in order. Profiling the warm webhook showed request
    threads queueing on `Handler.acquire` when they logged themselves, and a writer woken
    for every line cost a context switch (and a GIL hand-off) per review.

    `flush()` waits until every line given so far has been handed to the logger (tests, and
    worker shutdown through `atexit`). The thread starts on first use in each process, so a
    fork (gunicorn's preload) gets its own.
    """

    def __init__(
        self, logger: logging.Logger, *, interval: float = LOG_INTERVAL, batch: int = LOG_BATCH
    ) -> None:
        self.logger = logger
        self.interval = interval
        self.batch = batch
        self._pending: collections.deque[tuple[int, str, dict[str, object]] | threading.Event]
        self._pending = collections.deque()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._pid = 0
        # JSON of findings by (image, where, decision); only the writer thread uses it
        self._fragments: dict[tuple[str, str, int], tuple[object, str]] = {}
        self._fragment_bytes = 0
        atexit.register(self.flush)

    def log(self, level: int, event: str, **fields: object) -> None:
        self.log_fields(level, event, fields)

    def log_fields(self, level: int, event: str, fields: dict[str, object]) -> None:
        """`log` with the fields as a dict (the line keeps it: do not change it after)."""
        if not self.logger.isEnabledFor(level):
            return
        if self._pid != os.getpid():
            self._start()
        self._pending.append((level, event, fields))
        if len(self._pending) >= self.batch:
            self._wake.set()

    def flush(self, timeout: float = 5.0) -> None:
        if self._pid != os.getpid():
            return  # nothing was logged through this process's thread
        done = threading.Event()
        self._pending.append(done)
        self._wake.set()
        done.wait(timeout)

    def _start(self) -> None:
        with self._lock:
            if self._pid != os.getpid():
                self._pending.clear()  # lines of the parent process are its own to write
                threading.Thread(target=self._run, name="decision-log", daemon=True).start()
                self._pid = os.getpid()

    def _run(self) -> None:
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            self._write()

    def _write(self) -> None:
        pending = self._pending
        lines: list[tuple[int, str]] = []
        while pending:
            item = pending.popleft()
            if isinstance(item, threading.Event):
                self._emit(lines)
                lines = []
                item.set()
                continue
            level, event, fields = item
            try:
                lines.append((level, self._line(event, fields)))
            except Exception:  # not encodable (a bug): say so, and keep the writer alive
                logging.getLogger(LOGGER).exception("cannot write a decision log line")
        self._emit(lines)

    def _line(self, event: str, fields: dict[str, object]) -> str:
        """The JSON line; findings under `images` are encoded once per decision object (the
        service hands out the same decision while nothing changed) and spliced in."""
        images = fields.get("images")  # findings, or image texts when nothing was judged
        if not isinstance(images, tuple):
            return _LOG_JSON.encode({"event": event, **fields})
        document: dict[str, object] = {"event": event}
        document.update((k, v) for k, v in fields.items() if k != "images")
        document["images"] = None  # the last key: its `null}` is replaced by the findings
        text = _LOG_JSON.encode(document)
        parts = ",".join(self._finding_json(f) for f in images)
        return f"{text[: -len('null}')]}[{parts}]}}"

    def _finding_json(self, finding: Finding) -> str:
        if finding.decision is None:  # an invalid reference: nothing to reuse
            return _LOG_JSON.encode(_finding_log(finding))
        key = (finding.image, finding.where, id(finding.decision))
        known = self._fragments.get(key)
        if known is not None and known[0] is finding.decision:
            return known[1]
        text = _LOG_JSON.encode(_finding_log(finding))
        size = 2 * (len(text) + len(finding.image) + len(finding.where))  # text and key
        if len(self._fragments) >= FRAGMENT_ENTRIES or self._fragment_bytes + size > FRAGMENT_BYTES:
            self._fragments.clear()
            self._fragment_bytes = 0
        self._fragments[key] = (finding.decision, text)
        self._fragment_bytes += size  # holding the decision keeps its id
        return text

    def _emit(self, lines: Sequence[tuple[int, str]]) -> None:
        if not lines:
            return
        logger = self.logger
        plain = _plain_handler(logger)
        if plain is not None:
            # Only our own "%(message)s" handler would see them: one write for the batch.
            plain.write_lines(line for level, line in lines if logger.isEnabledFor(level))
            return
        for level, line in lines:
            # `handle` with a record made here: what `Logger.log` does, minus its frame walk to
            # find the caller (which would name this thread's loop anyway).
            try:
                logger.handle(
                    logger.makeRecord(logger.name, level, "(decision log)", 0, line, (), None)
                )
            except Exception:  # a broken handler must not kill the writer
                logging.getLogger(LOGGER).exception("cannot write a decision log line")


class _LinesHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler `create_app` installs when nothing configured logging: each message on a
    line of its own, as is. `write_lines` writes a whole batch in one call."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self.setFormatter(logging.Formatter("%(message)s"))

    def write_lines(self, lines: Iterable[str]) -> None:
        text = "".join(line + self.terminator for line in lines)
        if not text:
            return
        with self.lock:  # type: ignore[union-attr]  # created by Handler.__init__
            try:
                self.stream.write(text)
                self.flush()
            except Exception:
                self.handleError(logging.makeLogRecord({"msg": text}))


def _plain_handler(logger: logging.Logger) -> _LinesHandler | None:
    """`logger`'s one handler when it is our own lines handler and no other handler or filter
    (on the logger or an ancestor it propagates to) would see a record; else None."""
    if logger.filters or len(logger.handlers) != 1:
        return None
    handler = logger.handlers[0]
    if not isinstance(handler, _LinesHandler) or handler.filters:
        return None
    parent = logger.parent if logger.propagate else None
    while parent is not None:
        if parent.handlers:
            return None
        parent = parent.parent if parent.propagate else None
    return handler


def _ensure_handler(logger: logging.Logger) -> None:
    """Make decision lines visible when nothing configured logging (bare gunicorn)."""
    if not logger.hasHandlers():
        logger.addHandler(_LinesHandler())
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)


def _violation_log(v: Violation) -> dict[str, object]:
    """A violation in the decision log: with its detail (the upstream's words, the address
    tried), which the answer to the API server never carries."""
    line: dict[str, object] = {
        "rule": v.rule,
        "check": v.check,
        "action": v.action,
        "message": v.message,
    }
    if v.detail:
        line["detail"] = v.detail
    return line


def _finding_log(f: Finding) -> dict[str, object]:
    d = f.decision
    return {
        "image": f.image,
        "where": f.where,
        "reference": str(d.reference) if d is not None else None,
        "digest": (d.facts.digest or d.reference.digest) if d is not None else None,
        "allowed": f.allowed,
        "violations": (
            [_violation_log(v) for v in d.violations]
            if d is not None
            else [{"rule": "(reference)", "action": "deny", "message": f.invalid}]
        ),
    }


# --- the app -------------------------------------------------------------------------------


def _rule_paths_from_env(env: Mapping[str, str]) -> list[Path]:
    text = env.get(RULES_ENV, "")
    return [Path(p) for p in text.split(os.pathsep) if p.strip()]


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _judge(
    service: Service,
    images: Sequence[tuple[str, str, str | None]],
    namespace: str | None,
    deadline: Deadline,
) -> list[Finding]:
    """Judge (image text, where, pointer) triples with one `Service.decide` call."""
    return _judge_items(service, images, namespace, deadline)[2]


def _judge_items(
    service: Service,
    images: Sequence[tuple[str, str, str | None]],
    namespace: str | None,
    deadline: Deadline,
    decided: list[ImageDecision] | None = None,
) -> tuple[tuple[Item, ...], list[ImageDecision], list[Finding]]:
    """`_judge`, also returning the items decided (the valid references) and their decisions.
    `decided`: the service's decisions for these items, when the caller has just asked it."""
    parsed: list[tuple[str, str, str | None, reference.Reference | None, str | None]] = []
    for image, where, pointer in images:
        try:
            parsed.append((image, where, pointer, reference.parse(image), None))
        except InvalidReference as exc:
            parsed.append((image, where, pointer, None, str(exc)))
    items = tuple(Item(ref, namespace) for _, _, _, ref, _ in parsed if ref is not None)
    if decided is None:
        decided = service.decide(items, deadline=deadline) if items else []
    decisions = iter(decided)
    findings = [
        Finding(
            image,
            where,
            decision=next(decisions) if ref is not None else None,
            invalid=problem,
            pointer=pointer,
        )
        for image, where, pointer, ref, problem in parsed
    ]
    return items, decided, findings


@dataclass(frozen=True)
class _Judged:
    """A judged admission review, as much of its answer as does not depend on the request's
    uid, and what it was judged with.

    The next review with the same endpoint, apiVersion, namespace and image sites (the pods of
    one ReplicaSet, a workload applied again) reuses it when the same service hands back the
    very same decision objects for the same items — which it does only while the facts are
    unchanged and no decision could have changed (`Service.decide`). A denial's message names
    the object, so a denial is reused only for the same subject.
    """

    service: Service
    items: tuple[Item, ...]
    decisions: tuple[ImageDecision, ...]
    findings: tuple[Finding, ...]
    subject: str
    allowed: bool
    head: str
    """The AdmissionReview's JSON up to the response's uid ..."""
    tail: str
    """... and after it: `head + json.dumps(uid) + tail` is `json.dumps` of the whole review."""
    verdicts: tuple[tuple[str, int], ...]
    """Images by verdict (allowed, denied, invalid), for the metrics."""
    patched: tuple[str, ...]
    """The JSON Pointers a mutating review's patch replaces."""


def _tenths(value: float) -> float:
    """A non-negative `value` rounded to tenths (half up): `round(value, 1)` without the
    float-to-decimal conversion it makes to round exactly, which a latency does not need."""
    return int(value * 10 + 0.5) / 10


def _verdicts(findings: Iterable[Finding]) -> tuple[tuple[str, int], ...]:
    """How many images are allowed, denied and invalid (the non-zero counts)."""
    counts = dict.fromkeys(("allowed", "denied", "invalid"), 0)
    for f in findings:
        counts["invalid" if f.decision is None else "allowed" if f.allowed else "denied"] += 1
    return tuple((verdict, n) for verdict, n in counts.items() if n)


def too_many_images(subject: str, count: int, limit: int) -> str:
    """The denial of a review with more image sites than `review.maxImages`."""
    return (
        f"image-policy: {subject} has {count} image references, more than the {limit} one "
        "review may have (review.maxImages); none was checked"
    )


def _judged(
    service: Service,
    review: admission.Request,
    sites: Sequence[ImageSite],
    pinning: bool,
    deadline: Deadline,
    decided: list[ImageDecision] | None = None,
) -> _Judged:
    """Judge a review's image sites and encode its answer around the uid (`decided`: the
    service's decisions for their items, if already asked)."""
    items, decisions, findings = _judge_items(
        service,
        # JSON Pointers are only needed to patch.
        [(s.image, admission.site_label(s), s.pointer if pinning else None) for s in sites],
        review.namespace,
        deadline,
        decided,
    )
    patch = admission.pin_patch(findings) if pinning else []
    response = admission.admission_response(review, findings, patch=patch)
    rest = {k: v for k, v in response.items() if k != "uid"}  # uid: spliced in per request
    head = f'{{"apiVersion": {json.dumps(review.api_version)}, "kind": "AdmissionReview", '
    return _Judged(
        service=service,
        items=items,
        decisions=tuple(decisions),
        findings=tuple(findings),
        subject=review.subject,
        allowed=response["allowed"],
        head=head + '"response": {"uid": ',
        tail=", " + json.dumps(rest)[1:] + "}",
        verdicts=_verdicts(findings),
        patched=tuple(op["path"] for op in patch),
    )


class _Unavailable(Exception):
    """No valid rules are loaded: answer 503 (not a bad request, not a bug)."""


def create_app(
    settings: Settings | None = None,
    *,
    rules: RuleSet | Sequence[str | Path] | None = None,
    resolver: Resolver | None = None,
    env: Mapping[str, str] | None = None,
    now: Callable[[], datetime] = _utcnow,
    clock: Callable[[], float] = time.monotonic,
    reload_interval: float = RELOAD_INTERVAL,
    logger: logging.Logger | None = None,
) -> Flask:
    """Build the webhook app.

    `settings` None: loaded from `$IMAGE_POLICY_CONFIG` (defaults without it); a settings
    object with a `source` file is re-read when that file changes. `rules`: a RuleSet (fixed),
    rule file/directory paths (re-read on change), or None for `$IMAGE_POLICY_RULES`.
    `resolver` None builds the registry resolver from the settings (and rebuilds it when they
    change). Raises SettingsErrors for a broken settings file and PolicyError when no rule
    files are named at all; broken rule files leave the app up but not ready (503).
    """
    env = os.environ if env is None else env
    if settings is None:
        settings = settings_mod.load_settings(env=env)
    settings_path = Path(settings.source) if settings.source else None
    if rules is None:
        rule_paths = _rule_paths_from_env(env)
        if not rule_paths:
            raise PolicyError(f"no rule files: set ${RULES_ENV} or pass rules=")
        fixed_rules: RuleSet | None = None
    elif isinstance(rules, RuleSet):
        rule_paths, fixed_rules = [], rules
    else:
        rule_paths, fixed_rules = [Path(p) for p in rules], None
        if not rule_paths:
            raise PolicyError("no rule files given")

    log = logger or logging.getLogger(LOGGER)
    if logger is None:
        _ensure_handler(log)
    decisions = DecisionLog(log)
    metrics = Metrics(CollectorRegistry())

    def on_reload(file: str, result: str, error: str | None) -> None:
        metrics.reloads.labels(file, result).inc()
        if error is None:
            _log(log, logging.INFO, "reload", file=file, result=result)
        else:
            _log(log, logging.ERROR, "reload", file=file, result=result, error=error)

    def build_resolver(chosen: Settings) -> Resolver:
        return resolver_mod.build(chosen, mode="webhook", on_request=metrics.on_request)

    holder = PolicyHolder(
        settings=settings,
        settings_path=settings_path,
        rules=fixed_rules,
        rule_paths=rule_paths,
        resolver=resolver,
        build_resolver=build_resolver,
        now=now,
        clock=clock,
        interval=reload_interval,
        on_reload=on_reload,
    )
    metrics.named_registries = lambda: holder.current.named_registries
    metrics.registry.register(
        _ResolverCollector(lambda: holder.policy.resolver, metrics.registry_label)
    )
    metrics.registry.register(_SharedCacheCollector(lambda: holder.policy.resolver))

    app = Flask(__name__)
    # One byte more than allowed: werkzeug refuses a larger Content-Length before reading, but
    # cuts a body without one (chunked) at this limit instead of refusing it, so `read_json`
    # reads one byte past MAX_BODY to tell such a body was too large.
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY + 1
    app.extensions["image_policy"] = holder
    app.extensions["image_policy_log"] = decisions

    def read_json() -> object:
        # what `request.mimetype` gives, without parsing the header's parameters
        mimetype = request.environ.get("CONTENT_TYPE", "").partition(";")[0].strip().lower()
        if mimetype != "application/json":
            shown = request.content_type or "none"
            raise ReviewError(f"Content-Type is {shown}; expected application/json")
        body = request.get_data(cache=False)
        if len(body) > MAX_BODY:
            raise RequestEntityTooLarge()
        return admission.load_json(body)

    def current_policy() -> tuple[Policy, Service, Service]:
        policy = holder.policy
        if policy.validate is None or policy.pin is None:
            # The API server may hand this body to whoever applied the object: the error
            # (file paths, rule text) is for the operator, in /readyz and the reload log line.
            raise _Unavailable("no valid rules are loaded; see /readyz or the webhook's log")
        return policy, policy.validate, policy.pin

    def answer(
        endpoint: str,
        outcome: str,
        started: float,
        body: object,
        extra: dict[str, object],
        fields: dict[str, object] | None = None,
        verdicts: Iterable[tuple[str, int]] = (),
    ) -> Response:
        """Count, log and send a review's answer: `body` is the document, or its JSON text;
        the log line has `extra` and then `fields` (the request's own); `verdicts` counts the
        images judged."""
        elapsed = clock() - started
        metrics.tally.review(endpoint, outcome, elapsed, verdicts)
        line = {"endpoint": endpoint, "outcome": outcome, "latencyMs": _tenths(elapsed * 1000)}
        line.update(extra)
        if fields is not None:
            line.update(fields)
        decisions.log_fields(logging.INFO, "decision", line)
        text = body if isinstance(body, str) else json.dumps(body)
        return app.response_class(text, status=200, mimetype="application/json")

    # Judged reviews, in half the memo budget (`cache.memoBytes`); the services they refer
    # to are not charged (the policy holds them anyway).
    judged: list[ByteMemo[tuple[object, ...], _Judged]] = [
        ByteMemo(max(16, settings.memo_bytes // 2), opaque=(Service,))
    ]
    judged_by: list[Policy | None] = [None]  # the policy whose services `judged` holds
    app.extensions["image_policy_judged"] = judged

    def forget_judged(policy: Policy) -> None:
        """Drop the judged reviews of an earlier policy (and the services they hold)."""
        if judged_by[0] is not policy:
            budget = max(16, policy.settings.memo_bytes // 2)
            if judged[0].max_bytes != budget:
                judged[0] = ByteMemo(budget, opaque=(Service,))
            judged[0].clear()
            judged_by[0] = policy

    def judge(
        service: Service,
        endpoint: str,
        review: admission.Request,
        sites: tuple[ImageSite, ...],
        pinning: bool,
        deadline: Deadline,
    ) -> _Judged:
        """The judged review: reused while the service's decisions for its items are the
        very same objects (see `_Judged`), else judged afresh and remembered."""
        key = (endpoint, review.api_version, review.namespace, sites)
        memo = judged[0]
        known = memo.get(key)
        decided = None
        if known is not None and known.service is service:
            # The key fixes the items (the sites' images in the namespace): ask the service
            # once, and judge afresh with its answer if the decisions changed.
            decided = service.decide(known.items, deadline=deadline) if known.items else []
            if all(map(operator.is_, decided, known.decisions)) and (
                known.allowed or known.subject == review.subject
            ):
                return known
        fresh = _judged(service, review, sites, pinning, deadline, decided)
        if not any(d.facts.errors for d in fresh.decisions):
            # (Decisions on failed facts are never handed out twice: not worth measuring.)
            memo.put(key, fresh)
        return fresh

    def admission_endpoint(endpoint: str) -> Response:
        started = clock()
        review = admission.parse_review(read_json())
        policy, validate, pin = current_policy()
        settings = policy.settings
        pinning = endpoint == "mutate" and settings.mutate_pin
        fields: dict[str, object] = {
            "uid": review.uid,
            "apiVersion": review.api_version,
            "operation": review.operation,
            "namespace": review.namespace,
            "kind": review.kind,
            "subResource": review.sub_resource or None,
            "name": review.name,
            "user": review.user,
            "dryRun": review.dry_run,
        }
        if review.namespace is not None and review.namespace in settings.exclude_namespaces:
            response = admission.allow(review.uid)
            envelope = admission.review_envelope(review, response)
            return answer(endpoint, "excluded", started, envelope, {"allowed": True}, fields)
        planned = admission.plan(
            review,
            recheck_unchanged=settings.recheck_unchanged,
            table=settings.workload_table,
        )
        if planned.problems:
            message = admission.problems_message(review.subject, planned.problems)
            response = admission.deny(review.uid, message)
            envelope = admission.review_envelope(review, response)
            problems = [str(p) for p in planned.problems]
            extra: dict[str, object] = {"allowed": False, "problems": problems}
            return answer(endpoint, "malformed", started, envelope, extra, fields)
        unchanged = [s.image for s in planned.unchanged]
        if len(planned.check) > settings.max_images:
            message = too_many_images(review.subject, len(planned.check), settings.max_images)
            envelope = admission.review_envelope(review, admission.deny(review.uid, message))
            extra = {"allowed": False, "tooManyImages": len(planned.check)}
            return answer(endpoint, "denied", started, envelope, extra, fields)
        if not planned.check:
            response = admission.allow(review.uid)
            envelope = admission.review_envelope(review, response)
            outcome = "skipped" if planned.skip_reason else "allowed"
            extra = {"allowed": True, "skipped": planned.skip_reason, "unchanged": unchanged}
            return answer(endpoint, outcome, started, envelope, extra, fields)
        deadline = Deadline(settings.decision_timeout, clock=clock)
        forget_judged(policy)
        service = pin if pinning else validate
        done = judge(service, endpoint, review, planned.check, pinning, deadline)
        extra = {
            "allowed": done.allowed,
            "images": done.findings,  # made into dicts by the log's writer thread
            "unchanged": unchanged,
            "patched": list(done.patched),
        }
        return answer(
            endpoint,
            "allowed" if done.allowed else "denied",
            started,
            done.head + json.dumps(review.uid) + done.tail,
            extra,
            fields,
            done.verdicts,
        )

    @app.post("/validate")
    def validate() -> Response:
        return admission_endpoint("validate")

    @app.post("/mutate")
    def mutate() -> Response:
        return admission_endpoint("mutate")

    @app.post("/imagereview")
    def imagereview() -> Response:
        started = clock()
        review = admission.parse_image_review(read_json())
        policy, validate, _ = current_policy()
        settings = policy.settings
        fields: dict[str, object] = {"namespace": review.namespace, "images": list(review.images)}
        glass = admission.break_glass(review.annotations) if settings.break_glass else {}
        if glass:
            status = admission.break_glass_status(review, glass)
            extra: dict[str, object] = {"allowed": True, "breakGlass": sorted(glass)}
            return answer(
                "imagereview", "break-glass", started, admission.image_review(status), extra, fields
            )
        if review.namespace is not None and review.namespace in settings.exclude_namespaces:
            reply = admission.image_review({"allowed": True})
            return answer("imagereview", "excluded", started, reply, {"allowed": True}, fields)
        if len(review.images) > settings.max_images:
            subject = f"a pod in namespace {review.namespace}" if review.namespace else "the pod"
            reason = too_many_images(subject, len(review.images), settings.max_images)
            fields["images"] = len(review.images)
            reply = admission.image_review({"allowed": False, "reason": reason})
            extra = {"allowed": False, "tooManyImages": len(review.images)}
            return answer("imagereview", "denied", started, reply, extra, fields)
        deadline = Deadline(settings.decision_timeout, clock=clock)
        findings = _judge(
            validate,
            [(image, f"container {i}", None) for i, image in enumerate(review.images)],
            review.namespace,
            deadline,
        )
        subject = f"a pod in namespace {review.namespace}" if review.namespace else "the pod"
        status = admission.image_review_status(findings, subject=subject)
        fields["images"] = tuple(findings)
        return answer(
            "imagereview",
            "allowed" if status["allowed"] else "denied",
            started,
            admission.image_review(status),
            {"allowed": status["allowed"]},
            fields,
            _verdicts(findings),
        )

    @app.get("/healthz")
    def healthz() -> Response:
        return app.response_class('{"status": "ok"}', mimetype="application/json")

    @app.get("/readyz")
    def readyz() -> Response:
        policy = holder.policy
        ready = policy.ruleset is not None
        body = {
            "ready": ready,
            "rules": policy.ruleset.name if policy.ruleset is not None else None,
            "ruleCount": len(policy.ruleset.rules) if policy.ruleset is not None else 0,
            "sources": list(policy.ruleset.sources) if policy.ruleset is not None else [],
            "rulesError": policy.rules_error,
            "settingsError": policy.settings_error,
            "degraded": degraded(policy.resolver),
        }
        shared = _shared_tier(policy.resolver)
        if shared is not None:
            # Reported, never a reason to be unready: without Redis each replica still answers.
            body["sharedCache"] = shared.state()
        return app.response_class(
            json.dumps(body), status=200 if ready else 503, mimetype="application/json"
        )

    def degraded(resolver: Resolver) -> dict[str, list[str]]:
        """What is under pressure (by metric label, so never a made-up host's name): registries
        short-circuited, and those whose share is full with lookups waiting. Not a reason to be
        unready: a slow registry must not take the webhook out of the Service."""
        if not isinstance(resolver, PressuredResolver):
            return {}
        _, queued, short = pressure_by_label(resolver.pressure(), metrics.registry_label)
        out: dict[str, list[str]] = {}
        if short:
            out["shortCircuited"] = sorted(short)
        if any(queued.values()):
            out["busy"] = sorted(k for k, n in queued.items() if n)
        return out

    @app.get("/metrics")
    def metrics_endpoint() -> Response:
        return Response(generate_latest(metrics.registry), mimetype=CONTENT_TYPE_LATEST)

    def error(status: int, message: str) -> Response:
        return app.response_class(
            json.dumps({"error": message, "code": status}),
            status=status,
            mimetype="application/json",
        )

    @app.errorhandler(ReviewError)
    def bad_review(exc: ReviewError) -> Response:
        endpoint = (request.path or "/").strip("/") or "unknown"
        metrics.tally.count(endpoint, "bad_request")
        decisions.log(logging.WARNING, "bad_request", endpoint=endpoint, error=str(exc))
        return error(400, f"malformed review: {exc}")

    @app.errorhandler(_Unavailable)
    def unavailable(exc: _Unavailable) -> Response:
        endpoint = (request.path or "/").strip("/") or "unknown"
        metrics.tally.count(endpoint, "unavailable")
        return error(503, str(exc))

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        code = exc.code or 500
        if code == 413:
            return error(413, f"request body is larger than {MAX_BODY // (1024 * 1024)} MiB")
        return error(code, exc.description or exc.name)

    @app.errorhandler(Exception)
    def bug(exc: Exception) -> Response:
        endpoint = (request.path or "/").strip("/") or "unknown"
        metrics.tally.count(endpoint, "error")
        log.exception(json.dumps({"event": "internal_error", "endpoint": endpoint}))
        return error(500, "internal error; see the webhook's log")

    return app
