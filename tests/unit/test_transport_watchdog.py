"""The transport's watchdog: it cuts an exchange whose time ran out, never one given back to
its pool (or begun again) since, and its thread ends when there is nothing to watch."""

from __future__ import annotations

import time
from typing import Any

from policy.registry.transport import Watchdog


class FakeConnection:
    """Stands for a guarded connection: `use` counts exchanges, `cut` records the cuts."""

    def __init__(self) -> None:
        self.use = 1
        self.cuts = 0

    def cut(self) -> None:
        self.cuts += 1


def wait_for(predicate: Any, seconds: float = 2.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.01)
    return bool(predicate())


def test_an_exchange_past_its_time_is_cut_once() -> None:
    dog = Watchdog(idle=0.05)
    conn = FakeConnection()
    dog.watch(conn, time.monotonic() + 0.05)  # type: ignore[arg-type]
    assert wait_for(lambda: conn.cuts == 1)
    time.sleep(0.1)
    assert conn.cuts == 1 and dog.fired == 1


def test_an_exchange_given_back_in_time_is_never_cut() -> None:
    dog = Watchdog(idle=0.05)
    conn = FakeConnection()
    dog.watch(conn, time.monotonic() + 0.1)  # type: ignore[arg-type]
    conn.use += 1  # given back to the pool (or a new exchange began)
    time.sleep(0.3)
    assert conn.cuts == 0 and dog.fired == 0 and dog.watched == 0


def test_the_thread_ends_when_idle_and_comes_back_when_needed() -> None:
    dog = Watchdog(idle=0.05)
    first = FakeConnection()
    dog.watch(first, time.monotonic())  # type: ignore[arg-type]
    assert wait_for(lambda: first.cuts == 1)
    assert wait_for(lambda: not dog.running)
    second = FakeConnection()
    dog.watch(second, time.monotonic())  # type: ignore[arg-type]
    assert dog.running
    assert wait_for(lambda: second.cuts == 1)
