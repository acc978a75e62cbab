"""The shared tier's entries: how each is stored in Redis and read back (pure).

Every value is an envelope: `ipc1 ` (the format version), a JSON header line, then the bytes.
Reading refuses (`Invalid`: a miss, and the entry dropped) anything this version did not write:
another Redis type, another format or kind, truncated, over the size cap, a malformed header;
content whose body does not hash to its digest; a tag or signature answer from the future.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from policy import jsonbound
from policy.errors import IntegrityError
from policy.registry import media

MAGIC = b"ipc1 "
"""The envelope's format version: an entry of another format is a miss."""
MAX_HEADER = 4096
MAX_MESSAGE = 512
CLOCK_SKEW = 60.0
"""Seconds a tag answer's `at` may lie in the future (replicas' clocks differ a little)."""


class Tag(NamedTuple):
    """A tag's answer: what it named, and how many seconds ago a registry said so."""

    digest: str
    media_type: str
    size: int | None
    age: float


class Missing(NamedTuple):
    """A registry's 404 for a tag or digest, as another replica met it."""

    message: str


class Invalid(ValueError):
    """An entry that is not one this version wrote: a miss, and dropped."""


def encode(kind: str, header: dict[str, object], payload: bytes = b"") -> bytes:
    """The stored form of an entry: format, kind and header, then the payload bytes."""
    line = json.dumps({"k": kind, **header}, separators=(",", ":")).encode()
    return MAGIC + line + b"\n" + payload


def decode(value: object, kind: str, *, max_bytes: int) -> tuple[dict[str, Any], bytes]:
    """`(header, payload)` of an entry of `kind`; `Invalid` for anything else (another type,
    another format or kind, truncated, over `max_bytes`, a header that is no JSON object)."""
    if not isinstance(value, bytes):
        raise Invalid("not a string value")
    if len(value) > max_bytes:
        raise Invalid("over the entry size cap")
    if not value.startswith(MAGIC):
        raise Invalid("not this format")
    end = value.find(b"\n", len(MAGIC), len(MAGIC) + MAX_HEADER + 1)
    if end < 0:
        raise Invalid("no header line")
    try:
        header = json.loads(value[len(MAGIC) : end])
    except (ValueError, UnicodeDecodeError):
        raise Invalid("header is not JSON") from None
    if not isinstance(header, dict) or header.get("k") != kind:
        raise Invalid("not an entry of this kind")
    return header, value[end + 1 :]


def decode_content(value: object, digest: str, kind: str, *, max_bytes: int) -> tuple[str, bytes]:
    """`(media type, body)` of a content entry whose body hashes to `digest`; `Invalid` else."""
    header, body = decode(value, kind, max_bytes=max_bytes)
    media_type = header.get("t", "")
    if not isinstance(media_type, str):
        raise Invalid("media type is not a string")
    try:
        media.verify_digest(body, digest)
    except IntegrityError:
        raise Invalid("body does not match its digest") from None
    return media_type, body


def decode_tag(value: object, *, now: float, max_bytes: int) -> Tag:
    """A tag answer; its age from its `at` (wall clock); `Invalid` for anything malformed."""
    header, _ = decode(value, "tag", max_bytes=max_bytes)
    digest, media_type, size, at = (header.get(k) for k in ("digest", "mediaType", "size", "at"))
    if not isinstance(digest, str) or not media.is_digest(digest):
        raise Invalid("no digest")
    if not isinstance(media_type, str) or len(media_type) > 255:
        raise Invalid("no media type")
    if size is not None and (type(size) is not int or size < 0):
        raise Invalid("bad size")
    if isinstance(at, bool) or not isinstance(at, int | float):
        raise Invalid("bad time")
    age = now - float(at)
    if not -CLOCK_SKEW < age < float("inf"):  # NaN fails too
        raise Invalid("bad time")
    return Tag(digest, media_type, size, max(0.0, age))


def decode_missing(value: object, *, max_bytes: int) -> Missing:
    header, _ = decode(value, "missing", max_bytes=max_bytes)
    message = header.get("message")
    if not isinstance(message, str):
        raise Invalid("no message")
    return Missing(message[:MAX_MESSAGE])


def decode_tier(value: object, *, max_bytes: int) -> tuple[str, str]:
    header, _ = decode(value, "tier", max_bytes=max_bytes)
    tier, source = header.get("tier"), header.get("source")
    if not isinstance(tier, str) or not isinstance(source, str):
        raise Invalid("no tier")
    return tier[:64], source[:MAX_MESSAGE]


class Signatures(NamedTuple):
    """The signature artifacts found for a digest (as the resolver keeps them), and how many
    seconds ago they were found."""

    cosign: tuple[tuple[bytes, dict[str, str]], ...]
    bundles: tuple[bytes, ...]
    refused: tuple[tuple[str, str], ...]
    age: float


def encode_signatures(
    cosign: Sequence[tuple[bytes, Mapping[str, str]]],
    bundles: Sequence[bytes],
    refused: Sequence[tuple[str, str]],
    *,
    at: float,
) -> bytes:
    """The stored form of a digest's signature artifacts (bytes as base64 in a JSON body)."""
    body = {
        "cosign": [
            {"payload": base64.b64encode(payload).decode(), "annotations": dict(annotations)}
            for payload, annotations in cosign
        ],
        "bundles": [base64.b64encode(bundle).decode() for bundle in bundles],
        "refused": [[form, why] for form, why in refused],
    }
    return encode("signatures", {"at": at}, json.dumps(body, separators=(",", ":")).encode())


def decode_signatures(value: object, *, now: float, max_bytes: int) -> Signatures:
    header, payload = decode(value, "signatures", max_bytes=max_bytes)
    at = header.get("at")
    if isinstance(at, bool) or not isinstance(at, int | float) or not math.isfinite(at):
        raise Invalid("no time it was found")
    if at > now + CLOCK_SKEW:
        raise Invalid("found in the future")
    try:
        body = jsonbound.loads(payload, max_bytes=max_bytes, max_depth=8)
    except jsonbound.JSONRefused:
        raise Invalid("body is not bounded JSON") from None
    if not isinstance(body, dict):
        raise Invalid("body is not an object")
    cosign, bundles, refused = body.get("cosign"), body.get("bundles"), body.get("refused")
    if not (isinstance(cosign, list) and isinstance(bundles, list) and isinstance(refused, list)):
        raise Invalid("not the three lists")
    layers: list[tuple[bytes, dict[str, str]]] = []
    for layer in cosign:
        annotations = layer.get("annotations") if isinstance(layer, dict) else None
        if not isinstance(annotations, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()
        ):
            raise Invalid("a cosign layer without string annotations")
        layers.append((_unbase64(layer.get("payload")), annotations))
    pairs: list[tuple[str, str]] = []
    for item in refused:
        if not (
            isinstance(item, list) and len(item) == 2 and all(isinstance(x, str) for x in item)
        ):
            raise Invalid("a refusal that is not two strings")
        pairs.append((item[0][:MAX_MESSAGE], item[1][:MAX_MESSAGE]))
    return Signatures(
        tuple(layers), tuple(_unbase64(b) for b in bundles), tuple(pairs), max(0.0, now - at)
    )


def _unbase64(text: object) -> bytes:
    if not isinstance(text, str):
        raise Invalid("not base64 text")
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        raise Invalid("not base64") from None
