"""Under attack — a healthy review's latency and throughput with and without a concurrent
slowloris attack on the resolver.

The webhook runs as shipped (`gunicorn -c deploy/gunicorn.conf.py`, one gthread worker of 16
threads, TLS) with the benchmark 1 registry (healthy). HOSTS loopback peers each answer every
request with a status line and headers trickled one byte every 0.3 s (`tests/support/trickle`).
The attack is ATTACKERS client threads, each posting, again and again, a review whose Pod has
one image on each hostile host. The healthy load is `hey -c HEALTHY_CONNECTIONS` posting the
benchmark 1 Deployment (3 images on the healthy registry) for DURATION seconds, first alone,
then while the attack runs; a checker posts the same review once a second and counts the
answers that are right (allowed) and in time (within the decision deadline).

After the attack stops (its clients hang up; the hostile peers go on trickling), the worker's
threads waiting on the network are counted (`/proc/PID/task/*/syscall`: a socket read, poll or
select, not an idle pool thread's futex) until they are back to their number before the attack,
for the decision deadline plus GRACE at most.

    python -m bench attack
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import subprocess
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import requests

from bench import common
from bench.soak import HEY, parse_hey
from bench.stack import Gunicorn, session, webhook_stack
from bench.webhook import RULES, SETTINGS
from tests.support.procs import network_waiters
from tests.support.reviews import deployment_review, pod_review
from tests.support.trickle import Trickle

# The benchmark 1 rules without their registry allow-list: a registry that list refuses is
# never contacted, and the attack must reach the resolver.
ATTACK_RULES = RULES.replace(
    """  - id: trusted-registries
    match: {{images: ["**"]}}
    require: {{registries: ["{host}"]}}
""",
    "",
)
assert ATTACK_RULES != RULES
HOSTS = 64
ATTACKERS = 100
HEALTHY_CONNECTIONS = 4
DURATION = 10.0
DEADLINE = 8.0
GRACE = 2.0


def threads_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise RuntimeError(f"no thread count for {pid}")


def hey(url: str, body: Path, duration: float) -> Any:
    command = common.pinned(
        [
            HEY,
            "-z",
            f"{duration:g}s",
            "-c",
            str(HEALTHY_CONNECTIONS),
            "-m",
            "POST",
            "-T",
            "application/json",
            "-t",
            "20",
            "-D",
            str(body),
            url,
        ],
        common.LOAD_CPU,
    )
    done = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60)
    result = parse_hey(done.stdout)
    if math.isnan(result.p99):  # hey prints no percentile line it has too few answers for
        slowest = re.search(r"Slowest:\s+([\d.]+) secs", done.stdout)
        if slowest:
            result = dataclasses.replace(result, p99=float(slowest.group(1)) * 1000)
    return result


class Checker:
    """Posts the healthy review once a second; counts answers right (allowed) and in time."""

    def __init__(self, url: str, ca: Path, body: dict[str, Any]) -> None:
        self.url, self.ca, self.body = url, ca, body
        self.latencies: list[float] = []
        self.right = 0
        self.asked = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with session(self.ca) as s:
            while not self._stop.is_set():
                started = time.monotonic()
                self.asked += 1
                try:
                    with s.post(self.url, json=self.body, timeout=30) as reply:
                        ok = reply.status_code == 200 and reply.json()["response"]["allowed"]
                except requests.RequestException:
                    ok = False
                elapsed = time.monotonic() - started
                self.latencies.append(elapsed)
                if ok and elapsed <= DEADLINE:
                    self.right += 1
                self._stop.wait(max(0.0, 1.0 - elapsed))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=40)


class Attack:
    """ATTACKERS threads posting the hostile review until stopped."""

    def __init__(self, url: str, ca: Path, body: dict[str, Any]) -> None:
        self.url, self.ca, self.body = url, ca, body
        self.answered: list[float] = []
        self.failed = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(ATTACKERS)]
        for thread in self._threads:
            thread.start()

    def _run(self) -> None:
        with session(self.ca) as s:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    with s.post(self.url, json=self.body, timeout=30) as reply:
                        ok = reply.status_code == 200
                except requests.RequestException:
                    ok = False
                with self._lock:
                    if ok:
                        self.answered.append(time.monotonic() - started)
                    else:
                        self.failed += 1

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=40)


def run(*, duration: float = DURATION) -> common.Result:
    settings = SETTINGS.replace("decision: 8s", f"decision: {DEADLINE:g}s")
    with (
        ExitStack() as stack,
        webhook_stack(trivial=False, settings=settings, rules=ATTACK_RULES) as hook,
    ):
        peers = [stack.enter_context(Trickle(interval=0.3)) for _ in range(HOSTS)]
        healthy = deployment_review(hook.refs)
        body = hook.directory / "healthy.json"
        body.write_text(json.dumps(healthy))
        url = f"{hook.webhook.url}/validate"
        [worker] = hook.webhook.workers()
        check_healthy(hook.webhook, url, healthy)

        alone, alone_check = healthy_load(url, hook.ca, healthy, body, duration)
        threads_before = threads_of(worker)
        waiting_before = network_waiters(worker)

        hostile = pod_review(
            *(f"{peer.host}/trickle/app:1" for peer in peers), uid="attack", user="mallory"
        )
        attack = Attack(url, hook.ca, hostile)
        time.sleep(2.0)  # the attack's first wave reaches the resolver
        attacked, attacked_check = healthy_load(url, hook.ca, healthy, body, duration)
        threads_during = threads_of(worker)
        waiting_during = network_waiters(worker)
        attack.stop()  # the attackers' connections are closed; the hostile peers go on
        waiting_after, recovery = wait_recovery(worker, waiting_before)
        threads_after = threads_of(worker)

    table = common.Table(
        f"Healthy reviews (3 images, hey -c {HEALTHY_CONNECTIONS}, {duration:g} s) alone and while "
        f"{ATTACKERS} clients post reviews naming {HOSTS} hosts that trickle headers",
        ("load", "req/s", "p50 ms", "p99 ms", "errors", "checker right", "checker max ms"),
        (row("alone", alone, alone_check), row("under attack", attacked, attacked_check)),
    )
    attack_median = common.median(attack.answered) * 1000 if attack.answered else float("nan")
    notes = (
        f"attack reviews answered: {len(attack.answered)} (median {attack_median:.0f} ms), "
        f"failed: {attack.failed}",
        f"worker threads waiting on the network (socket reads, poll): {waiting_before} before "
        f"the attack, {waiting_during} during it, {waiting_after} {recovery:.1f} s after it "
        f"stopped (deadline {DEADLINE:g} s + grace {GRACE:g} s); all threads: "
        f"{threads_before}, {threads_during}, {threads_after} (pool threads stay, idle)",
        "right = allowed, within the decision deadline; the checker posts once a second",
        f"p99 under attack / p99 alone: {attacked.p99 / alone.p99:.0f}×; req/s under attack / "
        f"alone: {attacked.rps / alone.rps:.3f}",
    )
    return common.Result(
        "attack",
        "Under attack: slowloris registries",
        (table,),
        targets(attacked, attacked_check, waiting_after - waiting_before),
        notes,
        data={"recovery_seconds": recovery, "attack_answered": len(attack.answered)},
    )


def check_healthy(webhook: Gunicorn, url: str, healthy: dict[str, Any]) -> None:
    """RuntimeError unless the webhook allows the healthy review (its warm-up)."""
    with webhook.session() as s, s.post(url, json=healthy, timeout=30) as reply:
        if reply.status_code != 200 or reply.json()["response"]["allowed"] is not True:
            raise RuntimeError(f"the healthy review is not allowed: {reply.text}")


def healthy_load(
    url: str, ca: Path, healthy: dict[str, Any], body: Path, duration: float
) -> tuple[Any, Checker]:
    """The healthy load for `duration` s with a checker beside it: hey's result and the
    checker's count."""
    check = Checker(url, ca, healthy)
    load = hey(url, body, duration)
    check.stop()
    return load, check


def wait_recovery(worker: int, waiting_before: int) -> tuple[int, float]:
    """Wait until the worker's threads waiting on the network are back to `waiting_before`,
    for DEADLINE + GRACE at most: how many wait then, and the seconds it took."""
    stopped = time.monotonic()
    waiting_after = network_waiters(worker)
    while waiting_after > waiting_before and time.monotonic() - stopped < DEADLINE + GRACE:
        time.sleep(0.2)
        waiting_after = network_waiters(worker)
    return waiting_after, time.monotonic() - stopped


def row(name: str, load: Any, check: Checker) -> tuple[object, ...]:
    """The table's row for one healthy load and its checker."""
    bad = sum(n for code, n in load.statuses.items() if code != 200) + sum(load.errors.values())
    return (
        name,
        round(load.rps, 1),
        round(load.p50, 1),
        round(load.p99, 1),
        bad,
        f"{check.right}/{check.asked}",
        round(max(check.latencies, default=0.0) * 1000, 1),
    )


def targets(
    attacked: Any, attacked_check: Checker, still_waiting: int
) -> tuple[common.Target, ...]:
    """The healthy review answered right and in time under attack, and no thread left waiting
    on the network after it."""
    wrong = attacked_check.asked - attacked_check.right
    return (
        common.Target("healthy reviews answered wrong or late under attack", wrong, 0),
        # Every client waits in the one queue of the worker's request threads: the healthy
        # load's 4 connections behind the attack's 100, whose reviews now cost a few ms each.
        # The bound that matters is the review's own: answered within its deadline.
        common.Target("healthy p99 under attack, ms", attacked.p99, DEADLINE * 1000),
        common.Target("threads still waiting on the network after the attack", still_waiting, 0),
    )
