"""Bulkheads (a cap per registry over one pool) and circuit breakers, with a stepped clock."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from policy.bulkhead import Breakers, Lanes, LaneStats, ShortCircuited

WAIT = 5.0


class SteppedClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    executor = ThreadPoolExecutor(8)
    yield executor
    executor.shutdown(wait=True, cancel_futures=True)


class Hung:
    """Jobs that block until `release()`: `job` returns "late" then; `running(n)` waits until
    n of them have started."""

    def __init__(self) -> None:
        self._release = threading.Event()
        self._started = threading.Semaphore(0)

    def job(self) -> str:
        self._started.release()
        assert self._release.wait(WAIT)
        return "late"

    def running(self, n: int) -> None:
        for _ in range(n):
            assert self._started.acquire(timeout=WAIT)

    def release(self) -> None:
        self._release.set()


def test_a_registry_holds_at_most_its_cap_and_others_keep_their_threads(
    pool: ThreadPoolExecutor,
) -> None:
    lanes = Lanes(pool, cap=3, breakers=Breakers())
    hung = Hung()
    slow = [lanes.submit("hung.example", hung.job) for _ in range(40)]
    hung.running(3)
    assert lanes.stats() == {"hung.example": LaneStats(in_flight=3, queued=37)}
    assert lanes.running == 3
    # 5 pool threads are free: another registry's jobs run at once
    healthy = [lanes.submit("good.example", lambda i=i: f"ok{i}") for i in range(10)]
    assert [f.result(timeout=WAIT) for f in healthy] == [f"ok{i}" for i in range(10)]
    # a waiter that gives up takes its job out of the queue; the message says why
    assert slow[-1].cancel()
    assert lanes.busy("hung.example") == "registry hung.example is busy: 3 requests in flight"
    # a queued job whose waiter's time is up is not started
    late: Future[str] = lanes.submit("hung.example", lambda: "never", expired=lambda: True)
    hung.release()
    assert [f.result(timeout=WAIT) for f in slow[:-1]] == ["late"] * 39
    assert slow[-1].cancelled()
    assert late.cancelled()
    # a job's slot is given back just after its waiter is answered
    _settle(lambda: lanes.stats() == {} and lanes.running == 0)


def test_a_job_that_raises_hands_its_exception_to_the_waiter_and_frees_its_slot(
    pool: ThreadPoolExecutor,
) -> None:
    lanes = Lanes(pool, cap=1, breakers=Breakers())

    def boom() -> str:
        raise ValueError("no")

    first = lanes.submit("r", boom)
    second = lanes.submit("r", lambda: "next")
    with pytest.raises(ValueError, match="no"):
        first.result(timeout=WAIT)
    assert second.result(timeout=WAIT) == "next"


def _settle(condition: Callable[[], bool]) -> None:
    pause = threading.Event()
    for _ in range(500):
        if condition():
            return
        pause.wait(0.01)
    raise AssertionError("not settled within 5 s")


def _refused(breakers: Breakers, key: str = "r") -> str | None:
    try:
        breakers.admit(key, object())
    except ShortCircuited as exc:
        return str(exc)
    return None


def test_breaker_opens_after_consecutive_timeouts_probes_once_then_closes() -> None:
    clock = SteppedClock()
    breakers = Breakers(break_after=3, break_for=5.0, clock=clock)
    breakers.timeout("r")
    breakers.timeout("r")
    breakers.success("r")  # not consecutive: counting starts again
    breakers.timeout("r")
    breakers.timeout("r")
    assert _refused(breakers) is None
    breakers.timeout("r")
    assert breakers.short_circuited() == ["r"]
    assert _refused(breakers) == (
        "registry r is short-circuited after 3 consecutive timeouts (asked again in 5.0s)"
    )
    assert _refused(breakers, "other") is None  # other registries are not affected
    clock.now += 5.0
    probe = object()
    breakers.admit("r", probe)  # half-open: this one goes through ...
    assert _refused(breakers) == (
        "registry r is short-circuited after 3 consecutive timeouts (one request is probing it)"
    )
    breakers.success("r")  # ... and its answer closes the breaker
    assert _refused(breakers) is None
    assert breakers.short_circuited() == []


def test_a_probe_that_times_out_opens_the_breaker_again() -> None:
    clock = SteppedClock()
    breakers = Breakers(break_after=2, break_for=4.0, clock=clock)
    breakers.timeout("r")
    breakers.timeout("r")
    clock.now += 4.0
    breakers.admit("r", object())
    breakers.timeout("r")
    assert _refused(breakers) == (
        "registry r is short-circuited after 3 consecutive timeouts (asked again in 4.0s)"
    )


def test_a_probe_that_needed_no_request_lets_the_next_job_probe() -> None:
    clock = SteppedClock()
    breakers = Breakers(break_after=1, break_for=1.0, clock=clock)
    breakers.timeout("r")
    clock.now += 1.0
    probe = object()
    breakers.admit("r", probe)
    assert _refused(breakers) is not None
    breakers.finished("r", object())  # another job's end changes nothing
    assert _refused(breakers) is not None
    breakers.finished("r", probe)
    assert _refused(breakers) is None


def test_lanes_refuse_a_short_circuited_registry_without_using_a_thread(
    pool: ThreadPoolExecutor,
) -> None:
    breakers = Breakers(break_after=1, break_for=60.0, clock=SteppedClock())
    lanes = Lanes(pool, cap=2, breakers=breakers)
    breakers.timeout("dead.example")
    ran: list[str] = []
    with pytest.raises(ShortCircuited, match=r"registry dead\.example is short-circuited"):
        lanes.submit("dead.example", lambda: ran.append("x"))
    done: Future[str] = lanes.submit("alive.example", lambda: "yes")
    assert done.result(timeout=WAIT) == "yes"
    assert ran == []
    _settle(lambda: lanes.stats() == {})


def test_breakers_of_made_up_hosts_are_bounded() -> None:
    breakers = Breakers(break_after=2, clock=SteppedClock())
    for i in range(3000):
        breakers.timeout(f"h{i}.example")  # one timeout each: none open
    assert len(breakers._breakers) <= 1024


def test_a_probe_dropped_from_the_queue_lets_the_next_job_probe(pool: ThreadPoolExecutor) -> None:
    clock = SteppedClock()
    breakers = Breakers(break_after=1, break_for=1.0, clock=clock)
    lanes = Lanes(pool, cap=1, breakers=breakers)
    release = threading.Event()
    running = lanes.submit("r", lambda: release.wait(WAIT))  # holds the one slot
    breakers.timeout("r")
    clock.now += 1.0
    probe: Future[str] = lanes.submit("r", lambda: "probe")  # queued: the one probe
    assert _refused(breakers) is not None
    assert probe.cancel()  # its waiter gave up before it ran
    release.set()
    assert running.result(timeout=WAIT) is True
    # the slot's release drops the cancelled probe from the queue: the next job may probe
    pause = threading.Event()
    admitted = False
    for _ in range(500):
        if _refused(breakers) is None:
            admitted = True
            break
        pause.wait(0.01)
    assert admitted


def test_a_slow_registry_keeps_no_queue(pool: ThreadPoolExecutor) -> None:
    """Jobs queue behind a full share only while the registry answers: once its oldest job
    has run `patience`, the queued jobs are cancelled ("slow") and new ones refused at once —
    their reviews are not held until their deadline."""
    lanes = Lanes(pool, cap=2, breakers=Breakers(), patience=0.3)
    hung = Hung()
    running = [lanes.submit("slow.example", hung.job) for _ in range(2)]
    hung.running(2)
    queued = [lanes.submit("slow.example", lambda: "never") for _ in range(5)]
    assert lanes.stats() == {"slow.example": LaneStats(in_flight=2, queued=5)}
    _settle(lambda: all(f.cancelled() for f in queued))  # swept once the oldest ran 0.3 s
    assert lanes.busy("slow.example") == (
        "registry slow.example is slow: 2 requests in flight, the oldest for over 0.3s"
    )
    with pytest.raises(ShortCircuited, match="is slow: 2 requests in flight"):
        lanes.submit("slow.example", lambda: "refused")
    hung.release()
    assert [f.result(timeout=WAIT) for f in running] == ["late", "late"]
    _settle(lambda: lanes.stats() == {})


def test_a_busy_registry_that_answers_keeps_its_queue(pool: ThreadPoolExecutor) -> None:
    """Answers quicker than the patience: the last queued jobs wait longer than the patience
    (12 jobs of 0.1 s, 2 at a time) and still run; nothing is cancelled."""
    lanes = Lanes(pool, cap=2, breakers=Breakers(), patience=0.3)

    def quick(i: int) -> int:
        time.sleep(0.1)
        return i

    jobs = [lanes.submit("busy.example", lambda i=i: quick(i)) for i in range(12)]
    assert [f.result(timeout=WAIT) for f in jobs] == list(range(12))
    assert not any(f.cancelled() for f in jobs)


def test_a_freed_thread_goes_to_the_idlest_lane_not_to_a_pool_queue() -> None:
    """Three slow registries want 9 threads of a pool of 4: 4 run, the rest wait in their
    lanes (not in the pool's queue); a job of a fourth registry then gets the first thread
    that frees, before the slow registries' queued jobs."""
    pool = ThreadPoolExecutor(4)
    try:
        lanes = Lanes(pool, cap=3, breakers=Breakers())
        release = {name: threading.Event() for name in ("a", "b", "c")}
        started: list[str] = []
        lock = threading.Lock()

        def stuck(name: str) -> str:
            with lock:
                started.append(name)
            assert release[name].wait(WAIT)
            return name

        slow = [lanes.submit(f"{n}.example", lambda n=n: stuck(n)) for n in "abc" for _ in range(3)]
        _settle(lambda: len(started) == 4)
        assert lanes.running == 4
        assert sum(s.queued for s in lanes.stats().values()) == 5
        healthy = lanes.submit("good.example", lambda: "ok")
        assert not healthy.done()  # every thread is held
        release["a"].set()  # a's jobs end: their threads go to good.example first
        assert healthy.result(timeout=WAIT) == "ok"
        for event in release.values():
            event.set()
        assert sorted(f.result(timeout=WAIT) for f in slow) == ["a"] * 3 + ["b"] * 3 + ["c"] * 3
        _settle(lambda: lanes.stats() == {} and lanes.running == 0)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
