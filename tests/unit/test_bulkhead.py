"""Bulkheads (a cap per registry over one pool) and circuit breakers, with a stepped clock."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from policy.bulkhead import NEW, Breakers, Lanes, LaneStats, ShortCircuited

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
    breakers = Breakers()
    proven(breakers, "hung.example", "good.example")
    lanes = Lanes(pool, cap=3, breakers=breakers)
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
    lanes = Lanes(pool, cap=1, breakers=proven(Breakers(), "r"))

    def boom() -> str:
        raise ValueError("no")

    first = lanes.submit("r", boom)
    second = lanes.submit("r", lambda: "next")
    with pytest.raises(ValueError, match="no"):
        first.result(timeout=WAIT)
    assert second.result(timeout=WAIT) == "next"


def proven(breakers: Breakers, *keys: str) -> Breakers:
    """`breakers` once each of `keys` has answered (they are not new: no single-lookup start)."""
    for key in keys:
        breakers.success(key)
    return breakers


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


def test_a_timing_out_registry_is_probed_one_job_at_a_time_then_opens() -> None:
    """After a timeout, one job at a time asks again (the probe); an answer closes the
    breaker; `break_after` consecutive timeouts stop even the probes for `break_for`."""
    clock = SteppedClock()
    breakers = Breakers(break_after=3, break_for=5.0, clock=clock)
    assert breakers.admit("r", object()) is False  # closed: an ordinary job
    breakers.timeout("r")
    probe = object()
    assert breakers.admit("r", probe) is True  # the probe: its waiter does not wait
    assert _refused(breakers) == (
        "registry r did not answer in time (1 consecutive timeout); one request is asking it again"
    )
    assert _refused(breakers, "other") is None  # other registries are not affected
    breakers.success("r")  # the probe's answer closes the breaker
    assert _refused(breakers) is None
    breakers.timeout("r")
    breakers.timeout("r")
    breakers.success("r")  # not consecutive: counting starts again
    for _ in range(3):
        assert _refused(breakers) is None  # probes: each times out in turn
        breakers.timeout("r")
    assert breakers.short_circuited() == ["r"]
    assert _refused(breakers) == (
        "registry r is short-circuited after 3 consecutive timeouts (asked again in 5.0s)"
    )
    clock.now += 5.0
    assert breakers.admit("r", object()) is True  # probed again
    assert _refused(breakers) == (
        "registry r did not answer in time (3 consecutive timeouts); one request is asking it again"
    )
    breakers.success("r")
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
    lanes = Lanes(pool, cap=2, breakers=proven(breakers, "alive.example"))
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


def test_a_probe_runs_in_the_background_and_its_answer_closes_the_breaker(
    pool: ThreadPoolExecutor,
) -> None:
    """The job that probes a timing-out registry is refused to its waiter at once (saying
    why) but runs; its answer (reported by the job, as the resolver's do) closes the breaker,
    and the next job is an ordinary one again."""
    breakers = proven(Breakers(break_after=5), "flaky.example")
    lanes = Lanes(pool, cap=2, breakers=breakers)
    breakers.timeout("flaky.example")
    ran = threading.Event()

    def probe() -> str:
        breakers.success("flaky.example")
        ran.set()
        return "answered"

    with pytest.raises(ShortCircuited, match=r"did not answer in time \(1 consecutive timeout\)"):
        lanes.submit("flaky.example", probe)
    assert ran.wait(WAIT)
    _settle(lambda: lanes.stats() == {})
    assert lanes.submit("flaky.example", lambda: "ok").result(timeout=WAIT) == "ok"


def test_a_probe_dropped_from_the_queue_lets_the_next_job_probe(pool: ThreadPoolExecutor) -> None:
    clock = SteppedClock()
    breakers = Breakers(break_after=1, break_for=1.0, clock=clock)
    breakers.success("r")
    lanes = Lanes(pool, cap=1, breakers=breakers)
    release = threading.Event()
    running = lanes.submit("r", lambda: release.wait(WAIT))  # holds the one slot
    breakers.timeout("r")
    clock.now += 1.0
    given_up = threading.Event()
    with pytest.raises(ShortCircuited, match="one request is asking it again"):
        lanes.submit("r", lambda: "probe", expired=given_up.is_set)  # queued: the one probe
    assert _refused(breakers) is not None
    given_up.set()  # its review's time is up before it ran
    release.set()
    assert running.result(timeout=WAIT) is True
    # the slot's release drops the expired probe from the queue: the next job may probe
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
    lanes = Lanes(pool, cap=2, breakers=proven(Breakers(), "slow.example"), patience=0.3)
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
    lanes = Lanes(pool, cap=2, breakers=proven(Breakers(), "busy.example"), patience=0.3)

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
        breakers = proven(Breakers(), *(f"{n}.example" for n in ("a", "b", "c", "good")))
        lanes = Lanes(pool, cap=3, breakers=breakers)
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


def test_new_registries_run_one_lookup_each_and_an_eighth_of_the_pool_together() -> None:
    """Hosts never heard from: one lookup at a time each, 2 together in a pool of 16; the
    rest wait. A registry that has answered before gets its threads at once."""
    pool = ThreadPoolExecutor(16)
    try:
        breakers = proven(Breakers(), "good.example")
        lanes = Lanes(pool, cap=3, breakers=breakers)
        assert (lanes.cap_of(NEW), lanes.new_share) == (1, 2)
        hung = Hung()
        crowd = [lanes.submit(f"h{i % 5}.example", hung.job) for i in range(10)]
        hung.running(2)
        assert lanes.running == 2
        assert sum(s.queued for s in lanes.stats().values()) == 8
        good = [lanes.submit("good.example", lambda i=i: i) for i in range(3)]
        assert [f.result(timeout=WAIT) for f in good] == [0, 1, 2]
        hung.release()
        assert [f.result(timeout=WAIT) for f in crowd] == ["late"] * 10
        _settle(lambda: lanes.stats() == {} and lanes.running == 0)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def test_a_new_registry_that_answers_gets_its_full_share() -> None:
    """Its first answer proves it: the jobs queued behind its single first lookup then run
    its share at a time."""
    pool = ThreadPoolExecutor(16)
    try:
        breakers = Breakers()
        lanes = Lanes(pool, cap=4, breakers=breakers)
        gate = threading.Event()
        at_once = {"now": 0, "most": 0}
        lock = threading.Lock()

        def lookup(i: int) -> int:
            with lock:
                at_once["now"] += 1
                at_once["most"] = max(at_once["most"], at_once["now"])
            if i == 0:
                breakers.success("fresh.example")  # the first request's answer ...
            assert gate.wait(WAIT)  # ... while its lookup goes on (token, manifest, config)
            with lock:
                at_once["now"] -= 1
            return i

        jobs = [lanes.submit("fresh.example", lambda i=i: lookup(i)) for i in range(9)]
        _settle(lambda: at_once["now"] == 4)  # proven at its first answer: 4 at a time, not 1
        gate.set()
        assert [f.result(timeout=WAIT) for f in jobs] == list(range(9))
        assert at_once["most"] == 4
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def test_a_jammed_new_share_gives_up_its_queue_and_refuses_at_once() -> None:
    """Once the new registries' share has been full for the patience with none of them
    answering, their queued jobs are cancelled and new ones refused at once (their reviews
    are not held for a thread no hostile host gives back); proven registries are untouched,
    and a first answer from a new registry ends the jam."""
    pool = ThreadPoolExecutor(16)
    try:
        breakers = proven(Breakers(), "good.example")
        lanes = Lanes(pool, cap=2, breakers=breakers, patience=0.3)
        hung = Hung()
        running = [lanes.submit(f"h{i}.example", hung.job) for i in range(2)]
        hung.running(2)
        queued = [lanes.submit(f"q{i}.example", lambda: "never") for i in range(3)]
        _settle(lambda: all(f.cancelled() for f in queued))
        assert lanes.busy("q0.example", queued[0]) == (
            "registry q0.example has not answered yet (until it does it is asked one lookup "
            "at a time, and registries not known to answer 2 at most together)"
        )
        with pytest.raises(ShortCircuited, match="has not answered yet"):
            lanes.submit("new.example", lambda: "refused")
        assert lanes.submit("good.example", lambda: "ok").result(timeout=WAIT) == "ok"
        breakers.success("h0.example")  # a new registry answers: no more jam
        waiting = lanes.submit("new.example", lambda: "ran")
        assert not waiting.done()  # queued for the share, not refused
        hung.release()
        assert waiting.result(timeout=WAIT) == "ran"
        assert [f.result(timeout=WAIT) for f in running] == ["late"] * 2
        _settle(lambda: lanes.stats() == {} and lanes.running == 0)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def test_new_registries_failing_fast_keep_their_share_moving() -> None:
    """Refused connections free their threads at once: 40 lookups on 20 hosts that refuse
    (never answering, never timing out) all run, one by one, however long that takes past
    the patience — the share is not jammed while it moves."""
    pool = ThreadPoolExecutor(16)
    try:
        lanes = Lanes(pool, cap=4, breakers=Breakers(), patience=0.2)

        def refused() -> str:
            time.sleep(0.02)
            raise ConnectionRefusedError("refused")

        jobs = [lanes.submit(f"h{i % 20}.example", refused) for i in range(40)]
        for job in jobs:
            with pytest.raises(ConnectionRefusedError):
                job.result(timeout=WAIT)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
