"""Fault injection for the bulkheads, the circuit breaker and the review cap, against the real
server (gunicorn over TLS), the real distribution registry for the healthy side, and loopback
servers that never answer for the rest.

- 40 images in flight on a hung registry hold only that registry's share of the resolver's
  threads: an image on the healthy registry is answered correctly, well within its deadline
  (with a share as large as the pool, it waits for the hung registry's threads instead);
- the hung registry is then short-circuited: its images are denied at once, saying why;
- an index whose 40 children answer slowly holds only its registry's share of the children's
  threads: other images are unaffected;
- 8 distinct 40,000-container reviews are denied at once by the review cap, and the worker's
  memory stays under a measured bound.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import CA, HangingRegistry, Seeded, Webhook, rules_text, start_webhook
from tests.e2e.test_faults import ask, wait_for
from tests.support.hostile import index_body
from tests.support.httpserver import LoopbackServer, ServedInThread
from tests.support.images import OCI_INDEX, sha256
from tests.support.procs import child_pids, rss_bytes
from tests.support.reviews import pod_review

pytestmark = pytest.mark.registry

DEADLINE = 2.0
SLACK = 1.5
HEALTHY_WITHIN = 1.0
"""A healthy image's answer while the hung registry holds its share: a few registry round
trips, far below the deadline (without bulkheads it is denied at the deadline)."""


def _settings(per_registry: int, *, break_after: int = 5) -> str:
    return (
        f"timeouts: {{decision: {DEADLINE}s, request: 3s}}\n"
        f"bulkheads: {{perRegistry: {per_registry}, breakAfter: {break_after}, breakFor: 60s}}\n"
    )


def _trusting(registry: Seeded, *hosts: str) -> str:
    listed = ", ".join(f'"{h}"' for h in (registry.host, *hosts))
    return rules_text(registry.host).replace(
        f'registries: ["{registry.host}"]', f"registries: [{listed}]"
    )


def _details(hook: Webhook, uid: str) -> list[str]:
    """Per image of review `uid`, the operator's detail of its violations (from the decision
    log line: the pod author reads only the class, e.g. "registry unreachable")."""
    line = hook.decision_line(uid)
    return [
        " | ".join(v.get("detail", v["message"]) for v in image["violations"])
        for image in line["images"]
    ]


def _metric(hook: Webhook, name: str) -> float | None:
    with hook.session() as s, s.get(f"{hook.url}/metrics", timeout=5) as reply:
        for line in reply.text.splitlines():
            if line.startswith(name + " "):
                return float(line.rsplit(" ", 1)[1])
    return None


# --- a hung registry ------------------------------------------------------------------------


@pytest.mark.parametrize("known", [False, True])
def test_forty_images_on_a_hung_registry_do_not_starve_an_image_on_a_healthy_one(
    tmp_path: Path, ca: CA, registry: Seeded, hanging_registry: HangingRegistry, known: bool
) -> None:
    """The hung registry has never answered: it is asked one lookup at a time (until it
    answers, which it never does), its other 39 images wait in its queue holding no thread,
    and an image on the healthy registry — new to the webhook too, or (`known`) on a registry
    that answered an earlier review — is answered correctly, well within its deadline."""
    hung = hanging_registry.host
    hook = start_webhook(
        tmp_path / "hook", ca, _trusting(registry, hung), settings=_settings(8), workers=1
    )
    attack = pod_review(*(f"{hung}/team/app{i}:1.0" for i in range(40)), uid="attack")
    try:
        with ThreadPoolExecutor(1) as pool, hook.session() as s:
            if known:
                warm = ask(hook, s, pod_review(registry.ref("team/app"), uid="warm"))
                assert warm.allowed is True, warm.message
            attacked = pool.submit(ask, hook, hook.session(), attack)
            wait_for(
                lambda: _metric(hook, f'image_policy_registry_in_flight{{registry="{hung}"}}') == 1,
                DEADLINE,
                "the hung registry's lookup in flight",
            )
            queued = _metric(hook, f'image_policy_registry_queued{{registry="{hung}"}}')
            assert queued == 39
            with s.get(f"{hook.url}/readyz", timeout=5) as ready:
                assert ready.status_code == 200
                assert ready.json()["degraded"] == {"busy": [hung]}
            # an image the webhook never saw, on the healthy registry: it needs the registry
            healthy = ask(hook, s, pod_review(registry.ref("team/tools"), uid="healthy"))
            attack_answer = attacked.result(timeout=DEADLINE + SLACK + 5)
        assert healthy.status == 200
        assert healthy.allowed is True, healthy.message
        assert healthy.seconds < HEALTHY_WITHIN, healthy.seconds
        assert attack_answer.status == 200
        assert attack_answer.allowed is False
        assert attack_answer.seconds < DEADLINE + SLACK
        assert "registry unreachable" in attack_answer.message
        assert "answered" not in attack_answer.message  # the why is the operator's
        lines = _details(hook, "attack")
        assert len(lines) == 40
        waited = (
            f"registry {hung} has not answered yet (until it does it is asked one lookup at a "
            "time, and registries not known to answer 4 at most together)"
        )
        assert sum(waited in line for line in lines) == 39, "\n".join(lines)
        # the lookup that ran, ran until the deadline (the request's own timeout, a retry
        # finding no time left, or the wait for it, whichever noticed first)
        (late,) = [line for line in lines if waited not in line]
        assert "deadline" in late or "timed out" in late, late
    finally:
        hook.stop()


def test_a_registry_that_keeps_timing_out_is_short_circuited_and_its_images_denied_at_once(
    tmp_path: Path, ca: CA, registry: Seeded, hanging_registry: HangingRegistry
) -> None:
    """Its first lookup times out; from then on no review waits for it: one lookup at a time
    probes it in the background while reviews are denied at once, saying why; after 3
    consecutive timeouts it is not even probed for `breakFor`."""
    hung = hanging_registry.host
    hook = start_webhook(
        tmp_path / "hook",
        ca,
        _trusting(registry, hung),
        settings=_settings(8, break_after=3).replace("request: 3s", "request: 1s"),
        workers=1,
    )
    try:
        with hook.session() as s:
            first = ask(hook, s, pod_review(*(f"{hung}/team/app{i}:1.0" for i in range(3))))
            assert first.allowed is False
            assert first.seconds >= DEADLINE - 0.1  # the review waited for its first lookup
            first_details = _details(hook, "uid-fault")
            assert sum("timed out" in d or "deadline" in d for d in first_details) == 1
            asked = []
            for n in range(40):  # each review starts a probe: 2 more timeouts of ~2 s each
                asked.append(ask(hook, s, pod_review(f"{hung}/team/other:1.0", uid=f"probe{n}")))
                if "short-circuited after 3" in _details(hook, f"probe{n}")[0]:
                    break
                time.sleep(0.25)
            assert all(a.allowed is False and a.seconds < 0.5 for a in asked), [
                (a.allowed, a.seconds) for a in asked
            ]
            probing = _details(hook, "probe0")[0]
            assert re.search(
                rf"registry {re.escape(hung)} did not answer in time \(1 consecutive timeout\); "
                "one request is asking it again",
                probing,
            ), probing
            again = ask(hook, s, pod_review(f"{hung}/team/other:1.0", uid="again"))
            healthy = ask(hook, s, pod_review(registry.ref("team/app"), uid="healthy"))
            with s.get(f"{hook.url}/readyz", timeout=5) as ready:
                readyz = (ready.status_code, ready.json()["degraded"])
        assert again.allowed is False
        assert again.seconds < 0.5, again.seconds
        assert "registry unreachable" in again.message
        (detail,) = _details(hook, "again")
        assert re.search(
            rf"registry {re.escape(hung)} is short-circuited after 3 consecutive timeouts "
            r"\(asked again in \d+\.\ds\)",
            detail,
        ), detail
        assert healthy.allowed is True
        assert readyz == (200, {"shortCircuited": [hung]})
    finally:
        hook.stop()


# --- an index whose 40 children answer slowly ---------------------------------------------------


class SlowChildren(ServedInThread):
    """A registry serving, for any tag, an index of 40 linux/amd64 children, and answering
    no child manifest until it is closed."""

    def __init__(self) -> None:
        self.stopping = threading.Event()
        self.children_asked = 0
        self._lock = threading.Lock()
        body = index_body(40)
        digest = sha256(body)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return

            def _answer(self) -> None:
                ref = self.path.rsplit("/", 1)[-1]
                if self.path in ("/v2/", "/v2"):
                    self._send(b"{}", "application/json")
                elif "/manifests/" in self.path and ref.startswith("sha256:") and ref != digest:
                    with outer._lock:
                        outer.children_asked += 1
                    outer.stopping.wait(30)
                    self.close_connection = True
                elif "/manifests/" in self.path:
                    self._send(body, OCI_INDEX, digest)
                else:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()

            def _send(self, data: bytes, media_type: str, digest: str | None = None) -> None:
                self.send_response(200)
                self.send_header("Content-Type", media_type)
                self.send_header("Content-Length", str(len(data)))
                if digest:
                    self.send_header("Docker-Content-Digest", digest)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = _answer
            do_HEAD = _answer

        class Quiet(LoopbackServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                return

        port = self._serve(Handler, server_class=Quiet)
        self.host = f"127.0.0.1:{port}"

    def close(self) -> None:
        self.stopping.set()
        super().close()


@pytest.fixture
def slow_children() -> Iterator[SlowChildren]:
    with SlowChildren() as server:
        yield server


def test_an_index_with_forty_slow_children_does_not_affect_other_images(
    tmp_path: Path, ca: CA, registry: Seeded, slow_children: SlowChildren
) -> None:
    slow = slow_children.host
    hook = start_webhook(
        tmp_path / "hook", ca, _trusting(registry, slow), settings=_settings(8), workers=1
    )
    try:
        with ThreadPoolExecutor(1) as pool, hook.session() as s:
            index = pool.submit(ask, hook, hook.session(), pod_review(f"{slow}/team/multi:1.0"))
            wait_for(lambda: slow_children.children_asked == 8, DEADLINE, "8 children asked")
            # an index on the healthy registry (its children use the same pool) and an image
            others = [
                ask(hook, s, pod_review(registry.ref(repo), uid=repo.replace("/", "-")))
                for repo in ("team/multi", "team/tools")
            ]
            slow_answer = index.result(timeout=DEADLINE + SLACK + 5)
        for answer, repo in zip(others, ("team/multi", "team/tools"), strict=True):
            uid = repo.replace("/", "-")
            assert answer.allowed is True, (answer.message, _details(hook, uid))
            assert answer.seconds < HEALTHY_WITHIN, answer.seconds
        # of the 40 children, only the registry's share was ever asked for
        assert slow_children.children_asked == 8
        assert slow_answer.allowed is False
        assert slow_answer.seconds < DEADLINE + SLACK
        (line,) = slow_answer.message.splitlines()[1:]
        assert f"{slow}/team/multi:1.0" in line
        (detail,) = _details(hook, "uid-fault")
        assert "deadline" in detail or "timed out" in detail, detail
    finally:
        hook.stop()


# --- 40,000-container reviews -------------------------------------------------------------------


CONTAINERS = 40_000
RSS_GROWTH_BOUND = 32 * 1024 * 1024
"""What 8 distinct 40,000-container reviews may add to the worker's RSS. Measured: 14.5 MiB
(41.9 → 56.4 MiB, each answered in 0.12–0.25 s); before the review cap and the byte-bounded
memos each added ~75 MiB (8 → 755 MiB)."""
RSS_BOUND = 96 * 1024 * 1024
"""The worker's whole RSS after them (measured 56.4 MiB), far below the Deployment's 512Mi."""


def _huge_review(n: int) -> dict[str, Any]:
    doc = pod_review(uid=f"huge-{n}")
    doc["request"]["object"]["spec"]["containers"] = [
        {"name": f"c{i}", "image": f"127.0.0.1:1/huge{n}/app{i}:1.0"} for i in range(CONTAINERS)
    ]
    return doc


def test_forty_thousand_container_reviews_are_denied_at_once_in_bounded_memory(
    tmp_path: Path, ca: CA, registry: Seeded
) -> None:
    hook = start_webhook(
        tmp_path / "hook",
        ca,
        _trusting(registry, "127.0.0.1:1"),
        settings=_settings(8),
        workers=1,
    )
    try:
        (worker,) = child_pids(hook.process.pid)
        with hook.session() as s:
            assert ask(hook, s, pod_review(registry.ref("team/app"))).allowed is True
            before = rss_bytes(worker)
            answers = []
            for n in range(8):
                doc = _huge_review(n)
                started = time.monotonic()
                with s.post(f"{hook.url}/validate", json=doc, timeout=30) as reply:
                    answers.append((reply.status_code, reply.json(), time.monotonic() - started))
            after = rss_bytes(worker)
            assert ask(hook, s, pod_review(registry.ref("team/app"))).allowed is True
        for status, body, seconds in answers:
            assert status == 200
            assert body["response"]["allowed"] is False
            assert body["response"]["status"]["message"] == (
                f"image-policy: Pod in namespace dev has {CONTAINERS} image references, more "
                "than the 1000 one review may have (review.maxImages); none was checked"
            )
            assert seconds < DEADLINE, seconds
        assert after - before < RSS_GROWTH_BOUND, (before, after)
        assert after < RSS_BOUND, after
    finally:
        hook.stop()
