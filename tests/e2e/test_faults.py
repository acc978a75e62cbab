"""Faults against the real server (gunicorn over TLS) and the real registry: the registry
killed in the middle of a load and started again, registries that never answer, and a gunicorn
worker killed. Every review must still get an answer (never a 5xx), inside the deadline."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.e2e.conftest import CA, HangingRegistry, Seeded, Webhook, rules_text, start_webhook
from tests.support import images
from tests.support.procs import child_pids
from tests.support.registry import RunningRegistry, registry_binary, start_registry
from tests.support.reviews import pod_review

pytestmark = pytest.mark.registry

DEADLINE = 1.5
SLACK = 1.5
"""Time allowed on top of the decision deadline: TLS, JSON, a busy CI machine."""
FAST_SETTINGS = f"timeouts: {{decision: {DEADLINE}s, request: 1s}}\n"


@dataclass(frozen=True)
class Answer:
    """One review's outcome: HTTP status, `allowed`, message, and how long it took."""

    status: int
    allowed: bool | None
    message: str
    seconds: float
    at: float


def ask(hook: Webhook, session: requests.Session, doc: dict[str, Any]) -> Answer:
    """POST a review to /validate; connection errors propagate."""
    started = time.monotonic()
    with session.post(f"{hook.url}/validate", json=doc, timeout=15) as reply:
        seconds = time.monotonic() - started
        if reply.status_code != 200:
            return Answer(reply.status_code, None, reply.text, seconds, started)
        response = reply.json()["response"]
        message = response.get("status", {}).get("message", "")
        return Answer(200, response["allowed"], message, seconds, started)


class Load:
    """Threads posting `doc` to the webhook until stopped, recording every answer."""

    def __init__(self, hook: Webhook, doc: dict[str, Any], threads: int = 4) -> None:
        self.hook = hook
        self.doc = doc
        self.answers: list[Answer] = []
        self.failures: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        session = self.hook.session()
        try:
            while not self._stop.is_set():
                try:
                    answer = ask(self.hook, session, self.doc)
                except requests.RequestException as exc:
                    with self._lock:
                        self.failures.append((time.monotonic(), type(exc).__name__))
                    session.close()
                    session = self.hook.session()
                    time.sleep(0.02)
                    continue
                with self._lock:
                    self.answers.append(answer)
        finally:
            session.close()

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=20)
        assert not any(t.is_alive() for t in self._threads), "load threads did not stop"

    def since(self, moment: float) -> list[Answer]:
        with self._lock:
            return [a for a in self.answers if a.at >= moment]


def wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {seconds} s")


# --- (a) the registry killed in the middle of a load ------------------------------------------


def _push(url: str, repository: str) -> None:
    images.push_image(
        url,
        repository,
        "1.0",
        layers=[images.blob_bytes(f"faults/{repository}", 300)],
        config=images.image_config("linux/amd64", user="1000"),
    )


def _restart(stopped: RunningRegistry) -> subprocess.Popen[bytes]:
    """The registry again, from the same config file: same port, same storage."""
    binary = registry_binary()
    assert binary is not None
    with stopped.log_path.open("ab") as log:
        process = subprocess.Popen(
            [binary, "serve", str(stopped.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    return process


@pytest.fixture
def own_registry(tmp_path: Path) -> Iterator[RunningRegistry]:
    """A registry this test may kill (with `team/app` and `team/other` pushed)."""
    running = start_registry(tmp_path / "registry")
    try:
        _push(running.url, "team/app")
        _push(running.url, "team/other")
        yield running
    finally:
        running.stop()


def test_registry_killed_during_load_then_restarted(
    tmp_path: Path, ca: CA, own_registry: RunningRegistry
) -> None:
    host = own_registry.host
    cached = f"{host}/team/app:1.0"
    uncached = f"{host}/team/other:1.0"
    hook = start_webhook(
        tmp_path / "hook", ca, rules_text(host), settings=FAST_SETTINGS, workers=1, threads=16
    )
    restarted: subprocess.Popen[bytes] | None = None
    try:
        with hook.session() as s:
            assert ask(hook, s, pod_review(cached)).allowed is True  # now cached
        with Load(hook, pod_review(cached)) as load:
            time.sleep(0.5)
            own_registry.process.send_signal(signal.SIGKILL)
            own_registry.process.wait(timeout=5)
            killed = time.monotonic()
            with hook.session() as s:
                while_down = [ask(hook, s, pod_review(uncached, uid=f"u{i}")) for i in range(3)]
            time.sleep(1.0)
            restarted = _restart(own_registry)

            def recovered() -> bool:
                with hook.session() as s:
                    return ask(hook, s, pod_review(uncached)).allowed is True

            wait_for(recovered, 10, "the uncached image allowed once the registry is back")
            back = time.monotonic()
            time.sleep(0.3)
        assert not load.failures
        assert all(a.status == 200 and a.allowed is True for a in load.answers)
        assert len(load.since(killed)) >= 10, "the load did not run while the registry was down"
        for answer in while_down:
            assert answer.status == 200
            assert answer.allowed is False
            assert answer.seconds < DEADLINE + SLACK
            assert "onResolveError is deny" in answer.message, answer.message
            assert uncached in answer.message
        with hook.session() as s:
            again = [ask(hook, s, pod_review(cached, uncached, uid=f"r{i}")) for i in range(5)]
        assert all(a.status == 200 and a.allowed is True for a in again)
        assert back - killed < 15
    finally:
        hook.stop()
        if restarted is not None:
            restarted.terminate()
            restarted.wait(timeout=10)


# --- (b) registries that never answer -----------------------------------------------------------


class SilentRegistry:
    """Accepts every connection, reads what is sent, and never writes a byte."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.sock.settimeout(0.1)
        self.host = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.accepted = 0
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            self._held.append(conn)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for conn in self._held:
            conn.close()
        self.sock.close()


@pytest.fixture(params=["accepts-and-never-answers", "never-accepts"])
def silent(request: pytest.FixtureRequest) -> Iterator[SilentRegistry | HangingRegistry]:
    registry = (
        SilentRegistry() if request.param == "accepts-and-never-answers" else HangingRegistry()
    )
    try:
        yield registry
    finally:
        registry.close()


def test_every_review_is_answered_inside_the_deadline_when_a_registry_hangs(
    tmp_path: Path, ca: CA, registry: Seeded, silent: SilentRegistry | HangingRegistry
) -> None:
    rules = rules_text(registry.host).replace(
        f'registries: ["{registry.host}"]', f'registries: ["{registry.host}", "{silent.host}"]'
    )
    hook = start_webhook(tmp_path / "hook", ca, rules, settings=FAST_SETTINGS, workers=1)
    good = registry.ref("team/app")

    def one(i: int) -> Answer:
        doc = pod_review(good, f"{silent.host}/team/app{i % 6}:1.0", uid=f"h{i}")
        with hook.session() as s:
            return ask(hook, s, doc)

    try:
        with ThreadPoolExecutor(max_workers=12) as pool:
            answers = list(pool.map(one, range(24)))
        for answer in answers:
            assert answer.status == 200
            assert answer.allowed is False
            assert answer.seconds < DEADLINE + SLACK, answer.seconds
            assert "onResolveError is deny" in answer.message
            assert f"{good}" not in answer.message
        if isinstance(silent, SilentRegistry):
            assert silent.accepted >= 1
        with hook.session() as s:
            assert ask(hook, s, pod_review(good)).allowed is True
    finally:
        hook.stop()


# --- (c) a gunicorn worker killed -------------------------------------------------------------


MAX_FAILED_REQUESTS = 8
"""Requests in flight on the killed worker's connections may fail (one per load thread, and
one per connection that was idle on it); the client retries them."""


def test_a_killed_worker_is_replaced_and_the_service_keeps_answering(
    tmp_path: Path, ca: CA, registry: Seeded
) -> None:
    hook = start_webhook(tmp_path / "hook", ca, rules_text(registry.host), workers=2)
    doc = pod_review(registry.ref("team/app"))
    try:
        wait_for(lambda: len(child_pids(hook.process.pid)) == 2, 10, "two workers")
        before = set(child_pids(hook.process.pid))
        with Load(hook, doc) as load:
            time.sleep(0.7)
            victim = min(before)
            killed = time.monotonic()
            os.kill(victim, signal.SIGKILL)
            wait_for(
                lambda: (
                    len(set(child_pids(hook.process.pid)) - before) == 1
                    and victim not in child_pids(hook.process.pid)
                ),
                15,
                "the arbiter to start a new worker",
            )
            replaced = time.monotonic()
            time.sleep(1.0)
        assert hook.process.poll() is None, hook.log()
        assert all(a.status == 200 and a.allowed is True for a in load.answers)
        assert len(load.failures) <= MAX_FAILED_REQUESTS, load.failures
        assert all(killed - 0.1 <= at <= replaced + 1.0 for at, _ in load.failures), load.failures
        assert len(load.since(killed)) >= 10, "the service did not keep answering"
        with ThreadPoolExecutor(max_workers=8) as pool:

            def fresh(i: int) -> Answer:
                with hook.session() as s:
                    return ask(hook, s, pod_review(registry.ref("team/app"), uid=f"k{i}"))

            after = list(pool.map(fresh, range(24)))
        assert all(a.status == 200 and a.allowed is True for a in after)
    finally:
        hook.stop()
