"""Deadline: a time budget on an injected clock."""

from __future__ import annotations

import math

import pytest

from policy.deadline import Deadline


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("seconds", "elapsed", "remaining", "expired"),
    [
        (2.0, 0.0, 2.0, False),
        (2.0, 1.5, 0.5, False),
        (2.0, 2.0, 0.0, True),
        (2.0, 5.0, 0.0, True),
        (0.0, 0.0, 0.0, True),
    ],
)
def test_remaining_and_expired(
    seconds: float, elapsed: float, remaining: float, expired: bool
) -> None:
    clock = FakeClock()
    deadline = Deadline(seconds, clock=clock)
    clock.now += elapsed
    assert deadline.remaining() == pytest.approx(remaining)
    assert deadline.expired is expired


@pytest.mark.parametrize(
    ("seconds", "elapsed", "cap", "timeout"),
    [(10.0, 0.0, 5.0, 5.0), (10.0, 7.0, 5.0, 3.0), (10.0, 11.0, 5.0, 0.0)],
)
def test_timeout_is_capped_by_remaining(
    seconds: float, elapsed: float, cap: float, timeout: float
) -> None:
    clock = FakeClock()
    deadline = Deadline(seconds, clock=clock)
    clock.now += elapsed
    assert deadline.timeout(cap) == pytest.approx(timeout)


def test_never_does_not_expire() -> None:
    deadline = Deadline.never()
    assert deadline.remaining() == math.inf
    assert not deadline.expired
    assert deadline.timeout(5.0) == 5.0


@pytest.mark.parametrize("seconds", [-1.0, math.nan])
def test_rejects_negative_or_nan(seconds: float) -> None:
    with pytest.raises(ValueError, match="non-negative"):
        Deadline(seconds)
