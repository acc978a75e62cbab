"""JSON from peers that may be hostile, parsed within a size and a nesting bound (pure core).

Registries, token realms and the Docker Hub API answer whatever they like. `json.loads` on
100,000 nested brackets raises `RecursionError` (or, deeper down the caller's stack, fails
anywhere later code walks the result), so `loads` measures the nesting before parsing: string
contents are removed (escaped quotes and backslashes first, then every other segment between
quotes), the brackets that remain are counted as +1/-1 and their running sum is the depth.
That pre-scan is linear and runs in C (`bytes.replace`, `split`, `translate`, `accumulate`).

Every refusal is a `JSONRefused`, a `ValueError` whose message says what was wrong; callers
turn it into the error of their own layer (a `RegistryAuthError`, an `IntegrityError`, ...).
"""

from __future__ import annotations

import json
from array import array
from itertools import accumulate

__all__ = ["MAX_DEPTH", "JSONRefused", "depth", "loads"]

MAX_DEPTH = 64
"""Nesting allowed by default. Manifests, indexes, image configs, token and Hub answers are 5
levels deep at most; 64 leaves room without letting a document hurt its reader."""

_BRACKETS = b"[]{}"
_NOT_BRACKETS = bytes(b for b in range(256) if b not in _BRACKETS)
# Openers to +1, closers to -1 (as a signed byte), read through array("b").
_DELTAS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")


class JSONRefused(ValueError):
    """A JSON text refused: too large, nested too deeply, not text, or not JSON."""


def _constant(name: str) -> object:
    raise JSONRefused(f"{name} is not a JSON number")


_DECODER = json.JSONDecoder(parse_constant=_constant)


def depth(body: bytes) -> int:
    """The deepest nesting of arrays and objects in `body` (brackets inside strings ignored).

    Exact for valid JSON; for anything else it is the depth the brackets outside strings
    reach, which is what a parser would have to recurse through.
    """
    text = body
    if b"\\" in text:
        # `\\` pairs first, so that the backslash left before a quote is one that escapes it.
        text = text.replace(b"\\\\", b"").replace(b'\\"', b"")
    if b'"' in text:
        text = b"".join(text.split(b'"')[::2])
    brackets = text.translate(None, _NOT_BRACKETS)
    if len(brackets) < 2:
        return len(brackets)
    return max(0, max(accumulate(array("b", brackets.translate(_DELTAS)))))


def loads(body: bytes, *, max_bytes: int, max_depth: int = MAX_DEPTH) -> object:
    """Parse JSON of at most `max_bytes` bytes nested at most `max_depth` deep.

    NaN and Infinity are refused (they are not JSON), and so are integers too long to convert.
    Raises JSONRefused, never RecursionError or another exception type.
    """
    if len(body) > max_bytes:
        raise JSONRefused(f"JSON document of {len(body)} bytes is larger than {max_bytes} bytes")
    found = depth(body)
    if found > max_depth:
        raise JSONRefused(f"JSON nested {found} levels deep, more than the limit of {max_depth}")
    try:
        # As json.loads reads bytes: UTF-8 (with or without a BOM), or UTF-16/32 by its nulls.
        text = body.decode(json.detect_encoding(body), "surrogatepass")
    except UnicodeDecodeError as exc:
        raise JSONRefused(f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        return _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise JSONRefused(f"not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except JSONRefused:
        raise
    except (ValueError, RecursionError) as exc:
        # ValueError: an integer over the interpreter's digit limit. RecursionError cannot
        # happen below MAX_DEPTH-like limits but is kept out of the callers all the same.
        raise JSONRefused(f"not usable JSON ({exc})") from None
