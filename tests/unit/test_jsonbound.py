"""policy.jsonbound: JSON parsed within a size and a nesting bound, refusals as JSONRefused."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from policy import jsonbound


def nested(levels: int, open_: str = "[", close: str = "]") -> bytes:
    return (open_ * levels + close * levels).encode()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"1", 0),
        (b'"x"', 0),
        (b"[]", 1),
        (b"{}", 1),
        (b'{"a": [1, {"b": []}]}', 4),
        (b"[[], [], [[]]]", 3),
        (b'["[[[[", "{{{{"]', 1),  # brackets inside strings do not count
        (b'["\\"[[[", "]]"]', 1),  # nor after an escaped quote
        (b'["\\\\", [["x"]]]', 3),  # an escaped backslash ends before the quote that closes
        (b'["\\\\\\"[[", 1]', 1),  # \\ then \" : the string goes on
        (b"[" * 10, 10),  # unbalanced: the depth a parser would have to reach
        (nested(100_000), 100_000),
    ],
)
def test_depth_counts_brackets_outside_strings(body: bytes, expected: int) -> None:
    assert jsonbound.depth(body) == expected


@pytest.mark.parametrize(
    ("body", "kwargs", "message"),
    [
        (nested(100_000), {}, "JSON nested 100000 levels deep, more than the limit of 64$"),
        (nested(100_000, '{"a":', "}"), {}, "JSON nested 100000 levels deep"),
        (b"[" * 2_000_000, {"max_bytes": 4_000_000}, "nested 2000000 levels deep"),
        (nested(65), {}, "nested 65 levels deep, more than the limit of 64"),
        (nested(6), {"max_depth": 5}, "nested 6 levels deep, more than the limit of 5"),
        (b"[" + b"1," * 1000 + b"1]", {"max_bytes": 1000}, "2003 bytes is larger than 1000 bytes"),
        (b"[" + b"9" * 5000 + b"]", {}, "not usable JSON .*digits"),
        (b"[NaN]", {}, "NaN is not a JSON number"),
        (b"[-Infinity]", {}, "-Infinity is not a JSON number"),
        (b"{", {}, r"not JSON \(Expecting property name .* at line 1 column 2\)"),
        (b"", {}, "not JSON"),
        (b"\xff\xff\xff\xff", {}, "not UTF-8 text"),
        (b'["\xc3"]', {}, "not UTF-8 text .* at byte 2"),
    ],
)
def test_refusals(body: bytes, kwargs: dict[str, Any], message: str) -> None:
    options = {"max_bytes": 1 << 20, **kwargs}
    with pytest.raises(jsonbound.JSONRefused, match=message):
        jsonbound.loads(body, **options)


def test_refusals_are_value_errors_for_callers_that_catch_those() -> None:
    assert issubclass(jsonbound.JSONRefused, ValueError)


@pytest.mark.parametrize(
    ("body", "kwargs"),
    [
        (nested(64), {}),
        (nested(5), {"max_depth": 5}),
        (b"[" + b"1," * 1000 + b"1]", {"max_bytes": 2003}),
        (b"[" + b"9" * 4000 + b"]", {}),
        (b'"' + b"x" * 1_000_000 + b'"', {"max_bytes": 1_000_002}),
        (b'\xef\xbb\xbf{"a": 1}', {}),  # a UTF-8 byte order mark, as json.loads allows
        ('{"a": "\u00e9"}'.encode("utf-16"), {}),  # and UTF-16, detected as json.loads does
    ],
)
def test_just_under_the_limits_is_parsed_as_json_loads_would(
    body: bytes, kwargs: dict[str, Any]
) -> None:
    options = {"max_bytes": 1 << 20, **kwargs}
    assert jsonbound.loads(body, **options) == json.loads(body)


def test_a_real_manifest_is_parsed_unchanged() -> None:
    document = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": "sha256:" + "a" * 64,
                "size": 1234,
                "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"},
                "annotations": {"org.opencontainers.image.ref.name": '1.0 "[beta]" \\ {x}'},
            }
        ]
        * 200,
    }
    body = json.dumps(document).encode()
    assert jsonbound.depth(body) == 4
    assert jsonbound.loads(body, max_bytes=len(body)) == document


@pytest.mark.parametrize(
    "body",
    [
        b"[" * (4 << 20),
        b'"' * (4 << 20),
        b'"' + b'\\"' * (2 << 20),
        b"[" * (2 << 20) + b"]" * (2 << 20),
    ],
    ids=["open-brackets", "quotes", "escaped-quotes", "balanced"],
)
def test_the_pre_scan_is_linear_on_hostile_4_mib_bodies(body: bytes) -> None:
    """Worst cases for the depth scan at the manifest cap: well under a second each."""
    started = time.perf_counter()
    with pytest.raises(jsonbound.JSONRefused):
        jsonbound.loads(body, max_bytes=len(body))
    assert time.perf_counter() - started < 1.5
