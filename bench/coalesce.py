"""Benchmark 3 — coalescing: 50 concurrent decisions of one uncached image.

Fifty threads call `Service.decide` at once (released by a barrier) for the same tag on a
fresh resolver; the registry behind the counting relay (+50 ms, token auth) must see exactly
one manifest request (a GET by tag: the tag was never seen) and one GET of the config blob
(besides the one request answered 401 that tells the token realm), and the token realm one
token request.
"""

from __future__ import annotations

import threading
from collections import Counter

from bench import common
from bench.env import RemoteEnv, push_small_image
from policy.deadline import Deadline
from policy.evaluate import ImageDecision
from policy.loader import load_rules_text
from policy.reference import parse
from policy.service import Item, Service

CONCURRENCY = 50
ROUNDS = 5
RULES = """
apiVersion: image-policy/v1
kind: RuleSet
rules:
  - id: few-layers
    match: {images: ["**"]}
    require: {maxLayers: 30}
  - id: non-root
    match: {images: ["**"]}
    require: {nonRootUser: true}
"""


def _seed(url: str) -> None:
    for n in range(ROUNDS):
        push_small_image(url, f"coalesce/app{n}", "1.0", seed=f"coalesce/{n}")


def _storm(env: RemoteEnv, image: str) -> tuple[float, Counter[str], int]:
    """50 simultaneous decisions of `image` on one fresh resolver: wall time, requests made,
    decisions allowed."""
    env.reset()
    resolver = env.resolver()
    service = Service(load_rules_text(RULES), resolver)
    barrier = threading.Barrier(CONCURRENCY + 1)
    results: list[ImageDecision] = []
    lock = threading.Lock()

    def review() -> None:
        barrier.wait()
        [decision] = service.decide([Item(parse(image))], deadline=Deadline(30.0))
        with lock:
            results.append(decision)

    threads = [threading.Thread(target=review) for _ in range(CONCURRENCY)]
    for thread in threads:
        thread.start()

    def release() -> None:
        barrier.wait()
        for thread in threads:
            thread.join()

    seconds = common.timed(release)
    env.close(resolver)
    return seconds, env.counts(), sum(1 for d in results if d.allowed)


def run() -> common.Result:
    common.pin_load_generator()
    rows = []
    worst: Counter[str] = Counter()
    data: dict[str, object] = {}
    with RemoteEnv(_seed, token_auth=True, latency=0.05) as env:
        for n in range(ROUNDS):
            seconds, seen, allowed = _storm(env, f"{env.host}/coalesce/app{n}:1.0")
            rows.append(
                (
                    n + 1,
                    CONCURRENCY,
                    allowed,
                    seconds * 1000,
                    seen["HEAD manifest"],
                    seen["GET manifest"] + seen["HEAD manifest"] - seen["401"],
                    seen["GET blob"],
                    seen["token"],
                    seen["401"],
                )
            )
            data[f"round {n + 1}"] = {"seconds": seconds, "requests": dict(seen)}
            for key in ("GET blob", "token"):
                worst[key] = max(worst[key], seen[key])
            manifests = seen["GET manifest"] + seen["HEAD manifest"] - seen["401"]
            worst["manifest"] = max(worst["manifest"], manifests)
            worst["denied"] = max(worst["denied"], CONCURRENCY - allowed)
    table = common.Table(
        f"{CONCURRENCY} concurrent decisions of one uncached image (fresh resolver per round)",
        (
            "round",
            "decisions",
            "allowed",
            "wall ms",
            "HEAD manifest",
            "manifest requests (authorized)",
            "GET blob",
            "token",
            "401",
        ),
        tuple(rows),
    )
    targets = (
        common.Target("upstream manifest requests per round (worst)", worst["manifest"], 1),
        common.Target("upstream config GETs per round (worst)", worst["GET blob"], 1),
        common.Target("token requests per round (worst)", worst["token"], 1),
        common.Target("decisions not allowed (worst)", worst["denied"], 0),
    )
    notes = (
        "manifest requests (authorized) = HEADs + GETs of manifests, less the one request "
        "answered 401 that tells the token realm",
    )
    return common.Result("coalesce", "3. coalescing", (table,), targets, notes, data)
