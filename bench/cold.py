"""Benchmark 2 — cold resolution: decisions for 1, 3 and 10 distinct uncached images.

The real registry (token auth, tests/support/tokenserver.py) sits behind a counting proxy that
adds 50 ms to every request; the token realm sits behind another. Each decision goes through
`Service.decide` with a fresh resolver from `policy.resolver.build` (the real Authenticator, so
no token is cached either). The rule set reads layers (manifest) and the user (config) of
single-platform images referenced by tag.

The minimum the protocol allows, per decision of N images in R repositories:
- per image: HEAD manifest by tag (the digest) + GET manifest by digest (layers) + GET config
  blob (user) = 3 requests. (A GET by tag could replace HEAD + GET, but Docker Hub counts a
  manifest GET against the pull limit and a HEAD not, so tags are always resolved by HEAD.)
- per repository: one token (its pull scope) = R.
- per registry: one 401 answer telling the realm = 1. Once the realm is known, a token for a
  new scope can be fetched before the first request, so no other 401 is needed.
Total 3N + R + 1. The critical path is five round trips (401, token, HEAD, GET, GET config)
whatever N is, since every image can be resolved in parallel.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from bench import common
from bench.env import RemoteEnv, push_small_image
from policy.deadline import Deadline
from policy.loader import load_rules_text
from policy.reference import parse
from policy.service import Item, Service

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
    return 3 * images + repositories + 1


def _decide(env: RemoteEnv, refs: list[str]) -> tuple[float, Counter[str]]:
    """One cold decision over `refs`: its wall time and the requests it made."""
    ruleset = load_rules_text(RULES)
    env.reset()
    resolver = env.resolver()
    try:
        service = Service(ruleset, resolver)
        items = [Item(parse(r)) for r in refs]
        decisions: list[object] = []
        seconds = common.timed(
            lambda: decisions.extend(service.decide(items, deadline=Deadline(30.0)))
        )
    finally:
        env.close(resolver)
    for decision in decisions:
        assert getattr(decision, "allowed", False), f"unexpected denial: {decision}"
    return seconds, env.counts()


def run() -> common.Result:
    common.pin_load_generator()
    rows = []
    targets = []
    notes = []
    data: dict[str, object] = {}
    with RemoteEnv(_seed, token_auth=True, latency=LATENCY) as env:
        for label, layout in LAYOUTS.items():
            refs_all = [f"{env.host}/{r}:{t}" for r, t in (layout(i) for i in range(max(SIZES)))]
            _decide(env, refs_all[:1])  # warm-up: imports, thread pools, registry file cache
            times: dict[int, list[float]] = {n: [] for n in SIZES}
            counts: dict[int, Counter[str]] = {}
            for _ in range(ROUNDS):
                for n in SIZES:  # interleaved, so drift affects every size alike
                    seconds, seen = _decide(env, refs_all[:n])
                    times[n].append(seconds)
                    counts[n] = seen
            base = common.median(times[1])
            for n in SIZES:
                seen = counts[n]
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
                        seen["HEAD manifest"],
                        seen["GET manifest"],
                        seen["GET blob"],
                        seen["token"],
                        seen["401"],
                        total,
                        floor,
                    )
                )
                data[f"{label}/{n}"] = {"seconds": times[n], "requests": dict(seen)}
            ratio = common.median(times[10]) / base
            targets.append(
                common.Target(f"{label}: time(10) / time(1)", round(ratio, 3), TARGET_RATIO)
            )
            seen = counts[10]
            floor = minimum(10, len({layout(i)[0] for i in range(10)}))
            made = sum(v for k, v in seen.items() if k != "401")
            targets.append(common.Target(f"{label}: requests for 10 images", made, floor))
    notes.append(
        f"proxy latency {LATENCY * 1000:.0f} ms per request (registry and token realm); "
        f"ideal critical path 5 round trips = {5 * LATENCY * 1000:.0f} ms for any N; "
        f"median of {ROUNDS} rounds, sizes interleaved"
    )
    notes.append(
        "requests = HEAD/GET manifest + GET blob + token + 401 answers (the 401s are requests "
        "the registry answered 'unauthorized'; they are counted within HEAD manifest too)"
    )
    table = common.Table(
        "cold decisions through Service.decide (token auth, +50 ms per request)",
        (
            "layout",
            "images",
            "median ms",
            "min ms",
            "max ms",
            "× time(1)",
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
    return common.Result("cold", "2. cold resolution", (table,), tuple(targets), tuple(notes), data)
