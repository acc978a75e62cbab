"""Reading a review request's JSON (pure): the body parsed by `load_json`, and each field
checked by `string_field` / `mapping_field`, whose `ReviewError`s (HTTP 400) name the field's
path and what was found: `request.uid must be a string, got an integer`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from policy.errors import ReviewError
from policy.k8s import workloads
from policy.k8s.workloads import MAPPING


def load_json(body: bytes) -> object:
    """Parse a request body; ReviewError when it is not UTF-8 JSON (NaN/Infinity refused,
    nesting bounded by the interpreter's recursion limit)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ReviewError(
            f"request body is not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from None
    try:
        return _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        if not text.strip():
            raise ReviewError("request body is empty; expected a JSON object") from None
        raise ReviewError(
            f"request body is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise ReviewError("request body is not usable JSON: nested too deeply") from None
    except ValueError as exc:  # NaN/Infinity, integers too long to convert
        raise ReviewError(f"request body is not usable JSON: {exc}") from None


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not a JSON number")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def kind_name(value: object) -> str:
    """What a value is, for an error message: `missing`, `a string`, `an integer`, ..."""
    return "missing" if value is None else workloads.describe(value)


def string_field(
    mapping: Mapping[str, object], key: str, path: str, *, required: bool = False
) -> str:
    """`mapping[key]` as a string ("" when absent and not `required`); ReviewError otherwise."""
    value = mapping.get(key)
    if value is None:
        if required:
            raise ReviewError(f"{path}.{key} is missing; expected a string")
        return ""
    if not isinstance(value, str):
        raise ReviewError(f"{path}.{key} must be a string, got {kind_name(value)}")
    return value


def mapping_field(
    value: object, path: str, *, required: bool = False
) -> Mapping[str, object] | None:
    """`value` as an object (None when absent and not `required`); ReviewError otherwise."""
    if value is None:
        if required:
            raise ReviewError(f"{path} is missing; expected an object")
        return None
    if not isinstance(value, MAPPING):
        raise ReviewError(f"{path} must be an object, got {kind_name(value)}")
    return value


def envelope(document: object, kinds: str) -> Mapping[str, object]:
    """The review document as an object; ReviewError naming the `kinds` of fields expected."""
    if not isinstance(document, MAPPING):
        raise ReviewError(
            f"expected a JSON object with apiVersion, kind and {kinds}, got {kind_name(document)}"
        )
    return document
