"""Three webhook processes (real gunicorn over TLS) sharing one real redis-server, in front of
the real registry behind token auth and counting relays (+50 ms per request).

- 100 concurrent reviews of a never-seen image spread over the three: the registry serves
  exactly one token, one manifest and one config (plus the one 401 challenge that tells the
  one replica that fetched where the token realm is);
- Redis killed mid-load: every review is still answered, allowed, within its deadline, and
  each replica reports the shared cache down on /readyz while staying ready;
- Redis restarted: sharing resumes (one token, one manifest, one config again).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import CA, Webhook, start_webhook
from tests.support.redisserver import RunningRedis
from tests.support.registry import require_registry
from tests.support.reviews import pod_review
from tests.support.tokenregistry import TokenRegistry, push, token_registry

pytestmark = pytest.mark.registry

DECISION = 5.0  # timeouts.decision: no review may take longer (plus the HTTP round trip)
SLACK = 2.0  # a loaded CI machine's TLS handshake and scheduling, generously
TAGS = [f"t{i}" for i in range(12)]

RULES = """\
apiVersion: image-policy/v1
kind: RuleSet
metadata: {name: shared}
defaults: {action: deny, onResolveError: deny, unmatched: deny, platforms: ["linux/amd64"]}
rules:
  - id: small-non-root
    match: {images: ["**"]}
    require: {maxLayers: 5, nonRootUser: true}
"""


def settings(redis_url: str) -> str:
    # Generous Redis timeouts: on a loaded 2-core CI machine a 25 ms timeout would trip now
    # and then, and each trip is a replica fetching on its own (a count off by one).
    return f"""\
cache:
  shared:
    url: {redis_url}
    timeouts: {{connect: 1s, command: 1s}}
    breakAfter: 2
    breakFor: 1s
timeouts: {{decision: {DECISION:g}s}}
"""


@pytest.fixture(scope="module")
def registry_behind_tokens(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenRegistry]:
    require_registry()

    def seed(url: str) -> None:
        for tag in TAGS:
            push(url, "cluster/app", tag)

    with token_registry(tmp_path_factory.mktemp("shared-e2e"), seed) as running:
        yield running


@pytest.fixture
def cluster(
    tmp_path: Path, ca: CA, redis_server: RunningRedis, registry_behind_tokens: TokenRegistry
) -> Iterator[list[Webhook]]:
    hooks: list[Webhook] = []
    try:
        for i in range(3):
            hooks.append(
                start_webhook(
                    tmp_path / f"replica{i}",
                    ca,
                    RULES,
                    settings=settings(redis_server.url),
                    workers=1,
                    threads=16,
                )
            )
        yield hooks
    finally:
        for hook in hooks:
            hook.stop()


def challenges(hooks: list[Webhook]) -> int:
    """401 answers the replicas got from registries (their /metrics)."""
    total = 0
    for hook in hooks:
        with hook.session() as s, s.get(f"{hook.url}/metrics", timeout=10) as reply:
            for line in reply.text.splitlines():
                if line.startswith("image_policy_registry_requests_total{") and (
                    'status="401"' in line
                ):
                    total += int(float(line.rsplit(" ", 1)[1]))
    return total


def readyz(hook: Webhook) -> tuple[int, dict[str, Any]]:
    with hook.session() as s, s.get(f"{hook.url}/readyz", timeout=10) as reply:
        return reply.status_code, reply.json()


def review_all(hooks: list[Webhook], image: str, n: int) -> list[tuple[bool, float, str]]:
    """`n` concurrent reviews of `image`, round robin over `hooks`: (allowed, seconds, hook)."""
    barrier = threading.Barrier(n)
    sessions = [hook.session() for hook in hooks]

    def one(i: int) -> tuple[bool, float, str]:
        hook = hooks[i % len(hooks)]
        document = pod_review(image, uid=f"uid-{i}")
        barrier.wait()
        started = time.monotonic()
        answer = hook.post("/validate", document, session=sessions[i % len(hooks)])
        return bool(answer["response"]["allowed"]), time.monotonic() - started, hook.url

    try:
        with ThreadPoolExecutor(n) as pool:
            return list(pool.map(one, range(n)))
    finally:
        for s in sessions:
            s.close()


def assert_fetched_once(
    registry: TokenRegistry, hooks: list[Webhook], before: int, *, tokens_cached: bool = False
) -> None:
    """The registry served one manifest and one config since its counts were reset, and one
    token (with its 401 challenge) unless the replica that fetched still had one cached."""
    counts = registry.counts()
    unauthorized = challenges(hooks) - before
    assert counts["GET manifest"] - unauthorized == 1, counts
    assert counts["GET blob"] == 1, counts
    assert counts["HEAD manifest"] == 0, counts
    assert counts["token"] == unauthorized, counts
    if tokens_cached:
        assert unauthorized <= 1, counts
    else:
        assert unauthorized == 1, counts  # one replica talked to the registry


def test_a_cluster_asks_the_registry_once_and_outlives_redis(
    cluster: list[Webhook], registry_behind_tokens: TokenRegistry, redis_server: RunningRedis
) -> None:
    registry = registry_behind_tokens
    for hook in cluster:
        assert readyz(hook)[1]["sharedCache"] == "ok"

    # 1. A never-seen image, 100 concurrent reviews over three replicas.
    registry.reset()
    results = review_all(cluster, f"{registry.host}/cluster/app:t0", 100)
    assert all(allowed for allowed, _, _ in results)
    assert max(seconds for _, seconds, _ in results) < DECISION + SLACK
    assert_fetched_once(registry, cluster, before=0)

    # 2. Redis killed mid-load: reviews of never-seen images keep coming, to every replica.
    before = challenges(cluster)
    answered: list[tuple[bool, float, str]] = []
    killer = threading.Timer(0.5, redis_server.kill)
    killer.start()
    for n, tag in enumerate(TAGS[1:6]):
        if n == 2:
            killer.join()  # killed during the first two batches, at the latest before the third
        answered += review_all(cluster, f"{registry.host}/cluster/app:{tag}", 30)
    assert redis_server.process is not None and redis_server.process.poll() is not None
    assert len(answered) == 150
    assert all(allowed for allowed, _, _ in answered)
    slowest = max(seconds for _, seconds, _ in answered)
    assert slowest < DECISION + SLACK, slowest
    assert challenges(cluster) > before  # replicas fell back to the registry on their own
    for hook in cluster:
        status, body = readyz(hook)
        assert status == 200 and body["ready"] is True
        assert body["sharedCache"] in {"down", "breaker-open"}, body
        assert _metric(hook, "image_policy_shared_cache_errors_total") >= 1

    # 3. Redis back (same address, empty): once each replica's breaker has let a probe
    # through, sharing resumes.
    redis_server.start()
    time.sleep(1.2)  # breakFor: 1s
    for hook, tag in zip(cluster, TAGS[6:9], strict=True):
        document = pod_review(f"{registry.host}/cluster/app:{tag}", uid=f"probe-{tag}")
        assert hook.post("/validate", document)["response"]["allowed"] is True
        assert readyz(hook)[1]["sharedCache"] == "ok"
    registry.reset()
    before = challenges(cluster)
    results = review_all(cluster, f"{registry.host}/cluster/app:t9", 60)
    assert all(allowed for allowed, _, _ in results)
    # Tokens live 300 s: the replica that fetches may still hold one from step 2.
    assert_fetched_once(registry, cluster, before=before, tokens_cached=True)
    waited = sum(_metric(hook, "image_policy_shared_cache_shared_total") for hook in cluster)
    assert waited >= 1


def _metric(hook: Webhook, name: str) -> float:
    with hook.session() as s, s.get(f"{hook.url}/metrics", timeout=10) as reply:
        for line in reply.text.splitlines():
            if line.startswith(name + " "):
                return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name} in /metrics of {hook.url}")


def test_readyz_and_metrics_without_a_shared_cache_say_nothing_of_it(
    tmp_path: Path, ca: CA
) -> None:
    hook = start_webhook(tmp_path / "plain", ca, RULES, workers=1, threads=4)
    try:
        assert "sharedCache" not in readyz(hook)[1]
        with hook.session() as s, s.get(f"{hook.url}/metrics", timeout=10) as reply:
            assert "image_policy_shared_cache" not in reply.text
    finally:
        hook.stop()


def test_no_review_fails_when_requests_reach_a_dead_redis_from_the_start(
    tmp_path: Path, ca: CA, registry_behind_tokens: TokenRegistry
) -> None:
    """Configured but never reachable (nothing listens there): the webhook starts, is ready,
    and answers from the registry."""
    from tests.support.registry import free_port

    hook = start_webhook(
        tmp_path / "dead",
        ca,
        RULES,
        settings=settings(f"redis://127.0.0.1:{free_port()}/0"),
        workers=1,
        threads=4,
    )
    try:
        document = pod_review(f"{registry_behind_tokens.host}/cluster/app:t10")
        started = time.monotonic()
        assert hook.post("/validate", document)["response"]["allowed"] is True
        assert time.monotonic() - started < DECISION
        status, body = readyz(hook)
        assert status == 200 and body["sharedCache"] in {"down", "breaker-open"}
    finally:
        hook.stop()
