"""Prometheus collectors: the resolver's caches, bulkheads and rate limits, the shared
cache tier, and the tally of reviews (one `CollectorRegistry` per app)."""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence

from prometheus_client import (
    CollectorRegistry,
    Counter,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from policy import resolver as resolver_mod
from policy.registry.client import RequestEvent
from policy.service import Resolver
from policy.sharedcache import LATENCY_BUCKETS as LATENCY_BOUNDS
from policy.sharedcache import SharedCache
from policy.web.reload import OTHER_REGISTRY, ObservableResolver, PressuredResolver

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 10.0)


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
    call per step: counting through them instead costs ~5% more per warm review (1b). The
    exposition is the same: `image_policy_reviews_total`, `image_policy_images_total`
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
