"""Tests for policy/units.py: sizes (`500MiB`) and durations (`90d`) as users write them."""

from __future__ import annotations

import math

import pytest

from policy import units

KIB, MIB, GIB = 1024, 1024**2, 1024**3


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (1, 1),
        (1024, 1024),
        ("1", 1),
        ("0.5KB", 500),
        ("1B", 1),
        ("1b", 1),
        ("1KB", 1000),
        ("1kb", 1000),
        ("1MB", 1000**2),
        ("1GB", 1000**3),
        ("1TB", 1000**4),
        ("1KiB", KIB),
        ("500MiB", 500 * MIB),
        ("500mib", 500 * MIB),
        ("1.5GiB", 3 * GIB // 2),
        ("2TiB", 2 * 1024**4),
        (" 12 MiB ", 12 * MIB),
        ("0.1KB", 100),  # exact: no float rounding down to 99
        ("1" * 30 + "GB", int("1" * 30) * 1000**3),  # huge but exact, no overflow
    ],
)
def test_parse_size(text: object, expected: int) -> None:
    assert units.parse_size(text) == expected


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (0, "expected a positive size"),
        (-1, "expected a positive size"),
        ("0", "expected a positive size"),
        ("0MiB", "expected a positive size"),
        ("0.1B", "expected a positive size"),  # rounds down to zero bytes
        ("-1MiB", "expected a size like 500MiB"),
        ("", "expected a size like 500MiB"),
        ("MiB", "expected a size like 500MiB"),
        ("1.MiB", "expected a size like 500MiB"),
        ("1e3", "expected a size like 500MiB"),
        ("1 2MiB", "expected a size like 500MiB"),
        ("500XB", "unknown size unit 'XB'"),
        ("5 megabytes", "unknown size unit 'megabytes'"),
        (True, "expected a size like 500MiB"),
        (False, "expected a size like 500MiB"),
        (1.5, "expected a size like 500MiB"),
        (None, "expected a size like 500MiB"),
        (["1MiB"], "expected a size like 500MiB"),
    ],
)
def test_parse_size_rejects(value: object, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        units.parse_size(value)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (1, 1.0),
        (0.5, 0.5),
        ("500ms", 0.5),
        ("1ms", 0.001),
        ("30s", 30.0),
        ("5m", 300.0),
        ("12h", 43200.0),
        ("90d", 90 * 86400.0),
        ("2w", 14 * 86400.0),
        ("1h30m", 5400.0),
        ("1m5s", 65.0),
        ("1d12h", 129600.0),
        ("1.5h", 5400.0),
        (" 5m ", 300.0),
        ("0s1ms", 0.001),
        ("3650000d", 3650000 * 86400.0),  # 10000 years: the longest allowed
    ],
)
def test_parse_duration(value: object, seconds: float) -> None:
    assert units.parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (0, "expected a positive duration"),
        (-5, "expected a positive duration"),
        ("0s", "expected a positive duration"),
        ("0d0h", "expected a positive duration"),
        (math.nan, "expected a positive duration"),
        (math.inf, "duration too long"),
        ("3650001d", "duration too long"),
        ("1" * 400 + "d", "duration too long"),
        ("90", "expected a duration like 90d"),
        ("90 days", "expected a duration like 90d"),
        ("d", "expected a duration like 90d"),
        ("5m garbage", "expected a duration like 90d"),
        ("x5m", "expected a duration like 90d"),
        ("5y", "expected a duration like 90d"),
        ("-5m", "expected a duration like 90d"),
        ("", "expected a duration like 90d or 5m"),
        ("   ", "expected a duration like 90d or 5m"),
        (True, "expected a duration like 90d or 5m"),
        (None, "expected a duration like 90d or 5m"),
    ],
)
def test_parse_duration_rejects(value: object, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        units.parse_duration(value)


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (500 * MIB, "500.0 MiB"),
        (MIB - 1, "1024.0 KiB"),
        (3 * GIB, "3.0 GiB"),
        (2048 * GIB, "2048.0 GiB"),
    ],
)
def test_format_size(size: int, text: str) -> None:
    assert units.format_size(size) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (90 * 86400.0, "90d"),
        (36 * 3600.0, "36h"),
        (300.0, "5m"),
        (90.0, "90s"),
        (0.5, "0.5s"),
        (86400 * 1.5 + 1, "1.5d"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert units.format_duration(seconds) == text


@pytest.mark.parametrize("text", ["90d", "12h", "5m", "30s", "2w"])
def test_duration_round_trips_through_format(text: str) -> None:
    seconds = units.parse_duration(text)
    assert units.parse_duration(units.format_duration(seconds)) == seconds
