"""Benchmark 2 — cold resolution: decisions for 1, 3 and 10 distinct uncached images.

The real registry (token auth, tests/support/tokenserver.py) sits behind a counting relay
(tests/support/relay.py) that adds 50 ms to every request; the token realm sits behind another.
Each decision goes through `Service.decide` with a fresh resolver from `policy.resolver.build`
(the real Authenticator, so no token is cached either). The rule set reads layers (manifest)
and the user (config) of single-platform images referenced by tag.

The minimum the protocol allows, per decision of N images in R repositories:
- per image: GET manifest by tag (the digest comes with the body: a tag the resolver never saw
  is not HEADed first; Docker Hub counts one pull either way) + GET config blob (user) = 2
  requests. (A tag asked about before is revalidated by HEAD, which is not a pull, and its
  manifest is usually still cached; that is not the cold case measured here.)
- per repository: one token (its pull scope) = R.
- per registry: one 401 answer telling the realm = 1. Once the realm is known, a token for a
  new scope can be fetched before the first request, so no other 401 is needed.
Total 2N + R + 1. The critical path is four round trips (401, token, GET manifest, GET config)
whatever N is, since every image can be resolved in parallel.
"""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench import common
from bench.env import RemoteEnv, push_small_image
from policy.deadline import Deadline
from policy.egress import EgressPolicy
from policy.loader import load_rules_text
from policy.reference import parse
from policy.registry.media import ACCEPT
from policy.registry.session import new_session
from policy.registry.transport import Transport
from policy.service import Item, Service
from tests.support.registry import start_registry

LATENCY = 0.05
SIZES = (1, 3, 10)
ROUNDS = 7
TARGET_RATIO = 1.5

RULES = """
apiVersion: image-policy/v1
kind: RuleSet
defaults: {platforms: ["linux/amd64"], unmatched: deny}
rules:
  - id: few-layers
    match: {images: ["**"]}
    require: {maxLayers: 30}
  - id: non-root
    match: {images: ["**"]}
    require: {nonRootUser: true}
"""

# (label, repository of image i, tag of image i)
LAYOUTS: dict[str, Callable[[int], tuple[str, str]]] = {
    "10 repositories": lambda i: (f"cold/app{i}", "1.0"),
    "1 repository": lambda i: ("cold/shared", f"v{i}"),
}


def _seed(url: str) -> None:
    for layout in LAYOUTS.values():
        for i in range(max(SIZES)):
            repository, tag = layout(i)
            push_small_image(url, repository, tag, seed=f"cold/{repository}/{tag}")


def minimum(images: int, repositories: int) -> int:
    """Fewest registry + token requests for `images` tag lookups reading manifest and config."""
    return 2 * images + repositories + 1


@dataclass(frozen=True)
class Measured:
    """One cold decision: wall time, CPU used on each side, and the requests it made."""

    seconds: float
    client_cpu: float  # this process, all threads (the load CPU)
    server_cpu: float  # registry + latency relays + token server (the server CPU)
    counts: Counter[str]


def _decide(env: RemoteEnv, refs: list[str]) -> Measured:
    """One cold decision over `refs`."""
    ruleset = load_rules_text(RULES)
    env.reset()
    resolver = env.resolver()
    try:
        service = Service(ruleset, resolver)
        items = [Item(parse(r)) for r in refs]
        decisions: list[object] = []
        server_before, client_before = env.server_cpu_seconds(), time.process_time()
        seconds = common.timed(
            lambda: decisions.extend(service.decide(items, deadline=Deadline(30.0)))
        )
        client_cpu = time.process_time() - client_before
        server_cpu = env.server_cpu_seconds() - server_before
    finally:
        env.close(resolver)
    for decision in decisions:
        assert getattr(decision, "allowed", False), f"unexpected denial: {decision}"
    return Measured(seconds, client_cpu, server_cpu, env.counts())


def registry_cpu_per_request(requests_made: int = 300) -> float:
    """CPU seconds the registry alone spends per manifest HEAD by tag (no auth, no proxy,
    keep-alive, sequential): what each request of a decision costs the server CPU at least."""
    with tempfile.TemporaryDirectory(prefix="bench-regcpu-") as tmp:
        registry = start_registry(Path(tmp), log_level="warn")
        try:
            push_small_image(registry.url, "cpu/probe", "1.0", seed="cpu/probe")
            url = f"{registry.url}/v2/cpu/probe/manifests/1.0"
            transport = Transport(EgressPolicy(mode="cli"))  # the registry is on loopback
            with new_session(transport) as session:
                for _ in range(10):
                    session.head(url, headers={"Accept": ACCEPT}, timeout=10).close()
                before = common.cpu_seconds(registry.process.pid)
                for _ in range(requests_made):
                    session.head(url, headers={"Accept": ACCEPT}, timeout=10).close()
                return (common.cpu_seconds(registry.process.pid) - before) / requests_made
        finally:
            registry.stop()


def run() -> common.Result:
    common.pin_load_generator()
    rows: list[tuple[object, ...]] = []
    targets: list[common.Target] = []
    data: dict[str, object] = {}
    with RemoteEnv(_seed, token_auth=True, latency=LATENCY) as env:
        for label, layout in LAYOUTS.items():
            rounds = _rounds(env, layout)
            rows += _rows(label, layout, rounds, data)
            targets += _targets(label, layout, rounds)
    per_request = registry_cpu_per_request()
    data["registry_cpu_per_request"] = per_request
    return common.Result(
        "cold", "2. cold resolution", (_table(rows),), tuple(targets), _notes(per_request), data
    )


@dataclass
class Rounds:
    """ROUNDS cold decisions of each size for one layout: wall times, client and server CPU
    seconds by size, and the requests of the last round by size."""

    times: dict[int, list[float]] = field(default_factory=lambda: {n: [] for n in SIZES})
    client: dict[int, list[float]] = field(default_factory=lambda: {n: [] for n in SIZES})
    server: dict[int, list[float]] = field(default_factory=lambda: {n: [] for n in SIZES})
    counts: dict[int, Counter[str]] = field(default_factory=dict)


def _rounds(env: RemoteEnv, layout: Callable[[int], tuple[str, str]]) -> Rounds:
    """A warm-up decision, then ROUNDS rounds of one cold decision per size."""
    refs_all = [f"{env.host}/{r}:{t}" for r, t in (layout(i) for i in range(max(SIZES)))]
    _decide(env, refs_all[:1])  # warm-up: imports, thread pools, registry file cache
    out = Rounds()
    for _ in range(ROUNDS):
        for n in SIZES:  # interleaved, so drift affects every size alike
            measured = _decide(env, refs_all[:n])
            out.times[n].append(measured.seconds)
            out.client[n].append(measured.client_cpu)
            out.server[n].append(measured.server_cpu)
            out.counts[n] = measured.counts
    return out


def _rows(
    label: str,
    layout: Callable[[int], tuple[str, str]],
    rounds: Rounds,
    data: dict[str, object],
) -> list[tuple[object, ...]]:
    """The table's rows for one layout (a row per size); each size's figures go to `data`."""
    rows: list[tuple[object, ...]] = []
    times = rounds.times
    base = common.median(times[1])
    for n in SIZES:
        seen = rounds.counts[n]
        repositories = len({layout(i)[0] for i in range(n)})
        total = sum(v for k, v in seen.items() if k != "401")
        floor = minimum(n, repositories)
        rows.append(
            (
                label,
                n,
                common.median(times[n]) * 1000,
                min(times[n]) * 1000,
                max(times[n]) * 1000,
                common.median(times[n]) / base,
                common.median(rounds.client[n]) * 1000,
                common.median(rounds.server[n]) * 1000,
                seen["HEAD manifest"],
                seen["GET manifest"],
                seen["GET blob"],
                seen["token"],
                seen["401"],
                total,
                floor,
            )
        )
        data[f"{label}/{n}"] = {
            "seconds": times[n],
            "client_cpu": rounds.client[n],
            "server_cpu": rounds.server[n],
            "requests": dict(seen),
        }
    return rows


def _targets(
    label: str, layout: Callable[[int], tuple[str, str]], rounds: Rounds
) -> list[common.Target]:
    """One layout's targets: time(10) / time(1), and the requests for 10 images against the
    protocol's minimum."""
    ratio = common.median(rounds.times[10]) / common.median(rounds.times[1])
    seen = rounds.counts[10]
    floor = minimum(10, len({layout(i)[0] for i in range(10)}))
    made = sum(v for k, v in seen.items() if k != "401")
    return [
        common.Target(f"{label}: time(10) / time(1)", round(ratio, 3), TARGET_RATIO),
        common.Target(f"{label}: requests for 10 images", made, floor),
    ]


def _notes(per_request: float) -> tuple[str, ...]:
    return (
        "client CPU = this process (all threads, load CPU); server CPU = registry + relays + "
        "token server (server CPU); medians per decision (server CPU read from /proc, in 10 ms "
        "clock ticks). The "
        "registry alone, 300 sequential "
        f"HEADs by tag (no auth, no proxy, keep-alive): {per_request * 1000:.2f} ms of CPU per "
        "request",
        f"relay latency {LATENCY * 1000:.0f} ms per request (registry and token realm); "
        f"ideal critical path 4 round trips = {4 * LATENCY * 1000:.0f} ms for any N; "
        f"median of {ROUNDS} rounds, sizes interleaved",
        "requests = HEAD/GET manifest + GET blob + token + 401 answers (the 401s are requests "
        "the registry answered 'unauthorized'; they are counted within GET manifest too)",
    )


def _table(rows: list[tuple[object, ...]]) -> common.Table:
    return common.Table(
        "cold decisions through Service.decide (token auth, +50 ms per request)",
        (
            "layout",
            "images",
            "median ms",
            "min ms",
            "max ms",
            "× time(1)",
            "client CPU ms",
            "server CPU ms",
            "HEAD",
            "GET manifest",
            "GET blob",
            "token",
            "401",
            "requests",
            "minimum",
        ),
        tuple(rows),
    )
