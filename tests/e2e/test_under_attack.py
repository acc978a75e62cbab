"""Under attack, end to end: `image-policy serve` as shipped (one gunicorn worker of 16 threads,
over TLS) while 100 clients post reviews naming 64 hosts that trickle their headers a byte at a
time. A review of an image on the healthy registry is answered correctly and within its
deadline, and once the attack stops no worker thread is left reading from a hostile host.

What holds it (`policy/bulkhead.py`): hosts never heard from are asked one lookup at a time
and an eighth of the resolver's threads together, so only a few attack reviews wait at all;
once that share has been full for the patience with none answering, the rest are answered
at once; a host that timed out is only probed, in the background; the transport cuts every
exchange by its deadline; and reviews on failed facts skip the memos' measuring.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.e2e.conftest import CA, OPEN_RULES, Seeded, Webhook, start_webhook
from tests.support.procs import child_pids, network_waiters
from tests.support.reviews import pod_review
from tests.support.trickle import Trickle

pytestmark = pytest.mark.registry

HOSTS = 64
ATTACKERS = 100
DECISION = 3.0
GRACE = 2.0


def review(images: list[str], uid: str) -> dict[str, Any]:
    return pod_review(*images, uid=uid, user="mallory")


@pytest.fixture
def peers() -> Iterator[list[Trickle]]:
    started = [Trickle(interval=0.3) for _ in range(HOSTS)]
    try:
        yield started
    finally:
        for peer in started:
            peer.close()


@pytest.fixture
def hook(tmp_path_factory: pytest.TempPathFactory, ca: CA) -> Iterator[Webhook]:
    webhook = start_webhook(
        tmp_path_factory.mktemp("attack"),
        ca,
        OPEN_RULES,
        settings=(
            f"timeouts: {{request: 2s, decision: {DECISION:g}s}}\nbulkheads: {{patience: 1s}}\n"
        ),
        workers=1,  # as shipped: 1 worker of 16 threads
    )
    try:
        yield webhook
    finally:
        webhook.stop()


def waiting(hook: Webhook) -> int:
    """Worker threads waiting on the network (a socket read, poll or select), all workers."""
    return sum(network_waiters(pid) for pid in child_pids(hook.process.pid))


class Attack:
    def __init__(self, hook: Webhook, body: dict[str, Any]) -> None:
        self.answered = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, args=(hook, body), daemon=True)
            for _ in range(ATTACKERS)
        ]
        for thread in self._threads:
            thread.start()

    def _run(self, hook: Webhook, body: dict[str, Any]) -> None:
        with hook.session() as session:
            while not self._stop.is_set():
                try:
                    with session.post(f"{hook.url}/validate", json=body, timeout=30) as reply:
                        ok = reply.status_code == 200
                except requests.RequestException:
                    ok = False
                if ok:
                    with self._lock:
                        self.answered += 1

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=40)


def test_a_healthy_review_is_answered_correctly_while_registries_trickle(
    hook: Webhook, registry: Seeded, peers: list[Trickle]
) -> None:
    """Correct answers throughout the attack — during its first wave (100 reviews at once,
    each naming 64 registries nobody has seen fail yet) and after it (the breakers open) —
    no wrong denial for want of a thread, and no thread left reading afterwards."""
    # The cluster's registry has answered before the attack (it is proven: the hosts never
    # heard from share half the resolver's threads; it keeps the other half). The images
    # checked below are new to the webhook: each needs the registry during the attack.
    warm = hook.post("/validate", review([registry.ref("team/multi", "amd64")], "warm"))
    assert warm["response"]["allowed"] is True, warm
    baseline = waiting(hook)
    hostile = review([f"{peer.host}/trickle/app:{i}" for i, peer in enumerate(peers)], "evil")
    attack = Attack(hook, hostile)
    answers = []
    try:
        time.sleep(1.0)  # the first wave is in the resolver
        repos = ("team/app", "team/tools", "team/multi", "team/big")
        for n, repo in enumerate(repos):
            started = time.monotonic()
            response = hook.post("/validate", review([registry.ref(repo)], f"healthy-{n}"))
            answers.append((repo, time.monotonic() - started, response["response"]))
            if n == 0:
                time.sleep(DECISION)  # past the first wave: the breakers are open
    finally:
        attack.stop()
    for n, (repo, elapsed, response) in enumerate(answers):
        expected = repo != "team/big"  # 8 layers: denied by `small`, the others allowed
        if response["allowed"] is not expected:
            line = hook.decision_line(f"healthy-{n}")
            raise AssertionError((repo, elapsed, line["images"]))
    # ... and within its deadline, as the client measures it (queueing for a request thread
    # behind the attack's reviews included).
    assert all(elapsed < DECISION for _, elapsed, _ in answers), answers
    assert attack.answered > ATTACKERS  # the attack's reviews are answered too, not hung
    # No worker thread keeps reading from a hostile host: each has hung up (the hosts go on
    # trickling, and notice within two bytes) by the deadline plus a grace.
    stopped = time.monotonic()

    def reading() -> int:
        return sum(peer.active for peer in peers)

    while reading() and time.monotonic() - stopped < DECISION + GRACE:
        time.sleep(0.1)
    assert reading() == 0, f"{reading()} connections to hostile hosts still open"
    assert waiting(hook) <= baseline
