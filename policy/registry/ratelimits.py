"""Registry rate limits: Docker Hub's `ratelimit-*` headers and `Retry-After` (pure,
table-tested)."""

from __future__ import annotations

import email.utils
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class RateLimit:
    """Docker Hub's `ratelimit-*` headers: "100;w=21600" → limit 100, window "6h"."""

    limit: int | None
    remaining: int | None
    window: str | None
    window_seconds: int | None = None

    def describe(self) -> str:
        """E.g. "0 of 100 left in 6h window" (parts not known are left out)."""
        if self.remaining is not None and self.limit is not None:
            text = f"{self.remaining} of {self.limit} left"
        elif self.remaining is not None:
            text = f"{self.remaining} left"
        elif self.limit is not None:
            text = f"limit {self.limit}"
        else:
            return ""
        if self.window:
            text += f" in {self.window} window"
        return text


def parse_rate_limit(headers: Mapping[str, str]) -> RateLimit | None:
    """Read `ratelimit-limit`/`ratelimit-remaining` ("100;w=21600"); None when absent."""
    limit_value = headers.get("ratelimit-limit")
    remaining_value = headers.get("ratelimit-remaining")
    if limit_value is None and remaining_value is None:
        return None
    limit, window_a = _rate_value(limit_value)
    remaining, window_b = _rate_value(remaining_value)
    seconds = window_a if window_a is not None else window_b
    return RateLimit(
        limit=limit,
        remaining=remaining,
        window=_human_seconds(seconds) if seconds is not None else None,
        window_seconds=seconds,
    )


def _rate_value(value: str | None) -> tuple[int | None, int | None]:
    if value is None:
        return None, None
    count: int | None = None
    window: int | None = None
    head, *params = value.split(";")
    if head.strip().isdigit():
        count = int(head.strip())
    for param in params:
        key, _, raw = param.partition("=")
        if key.strip() == "w" and raw.strip().isdigit():
            window = int(raw.strip())
    return count, window


def _human_seconds(seconds: int) -> str:
    if seconds and seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds and seconds % 60 == 0:
        return f"{seconds // 60}m"
    return f"{seconds}s"


def parse_retry_after(value: str, date: str | None, *, now: float) -> float | None:
    """Seconds to wait from a Retry-After value (seconds or an HTTP date).

    An HTTP date is measured against the response's `Date` header when present, else
    against `now` (epoch seconds). None when unreadable.
    """
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
    reference = now
    if date:
        try:
            reference = email.utils.parsedate_to_datetime(date).timestamp()
        except (TypeError, ValueError, IndexError):
            reference = now
    return max(0.0, when - reference)
