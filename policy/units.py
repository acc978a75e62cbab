"""Sizes (`500MiB`) and durations (`90d`) as users write them in YAML (pure)."""

from __future__ import annotations

import math
import re
from fractions import Fraction

_SIZE_UNITS = {
    "": 1,
    "B": 1,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "TB": 1000**4,
    "KIB": 1024,
    "MIB": 1024**2,
    "GIB": 1024**3,
    "TIB": 1024**4,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")

_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
# Longer durations are refused: they overflow `datetime.timedelta` (and mean "never" anyway).
DURATION_MAX = 10000 * 365 * 86400.0


def parse_size(value: object) -> int:
    """Bytes from `500MiB`, `1.5GB`, `1024` (an int counts bytes); ValueError says why not."""
    if isinstance(value, bool):
        raise ValueError("expected a size like 500MiB")
    if isinstance(value, int):
        if value <= 0:
            raise ValueError("expected a positive size")
        return value
    if not isinstance(value, str):
        raise ValueError("expected a size like 500MiB")
    match = _SIZE.match(value)
    if not match:
        raise ValueError("expected a size like 500MiB")
    unit = match.group(2).upper()
    if unit not in _SIZE_UNITS:
        raise ValueError(f"unknown size unit {match.group(2)!r} (use B, KB, MB, GB, KiB, MiB, GiB)")
    size = int(Fraction(match.group(1)) * _SIZE_UNITS[unit])  # exact, no float overflow
    if size <= 0:
        raise ValueError("expected a positive size")
    return size


def parse_duration(value: object) -> float:
    """Seconds from `90d`, `5m`, `1h30m`, `500ms` (a plain number counts seconds)."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 90d or 5m")
    if isinstance(value, int | float):
        return _checked_duration(float(value))
    if not isinstance(value, str) or not value.strip():
        raise ValueError("expected a duration like 90d or 5m")
    text = value.strip()
    pos = 0
    total = 0.0
    for match in _DURATION.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or pos == 0:
        raise ValueError("expected a duration like 90d, 12h, 5m, 30s or 1h30m")
    return _checked_duration(total)


def _checked_duration(seconds: float) -> float:
    if math.isnan(seconds) or seconds <= 0:
        raise ValueError("expected a positive duration")
    if seconds > DURATION_MAX:
        raise ValueError("duration too long (at most 10000 years)")
    return seconds


def format_size(size: int) -> str:
    """`73.4 MiB` style, for messages."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def format_duration(seconds: float) -> str:
    """`90d`, `12h`, `5m`, `30s`: the largest whole unit, for messages."""
    for unit, factor in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= factor and seconds % factor == 0:
            return f"{int(seconds // factor)}{unit}"
    if seconds >= 86400:
        return f"{seconds / 86400:.1f}d"
    return f"{seconds:g}s"
