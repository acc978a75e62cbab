"""The JSON Schema of rule files, for editors (`image-policy schema`), built from the checks."""

from __future__ import annotations

from typing import Any

from policy import checks, loader, rules
from policy.facts import TIERS

_STRINGS: dict[str, Any] = {"type": "array", "items": {"type": "string"}, "minItems": 1}


def rules_schema() -> dict[str, Any]:
    """A JSON Schema (draft 2020-12) describing `apiVersion: image-policy/v1`, `kind: RuleSet`."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://image-policy.dev/schema/ruleset-v1.json",
        "title": "image-policy RuleSet",
        "description": f"Trusted-content tiers: {', '.join(TIERS)}",
        "type": "object",
        "required": ["apiVersion", "kind"],
        # `rules` may be left out of a file of exceptions alone.
        "if": {"not": {"required": ["exceptions"]}},
        "then": {"required": ["rules"]},
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": loader.API_VERSION},
            "kind": {"const": loader.KIND},
            "metadata": {
                "type": "object",
                "additionalProperties": False,
                "properties": {"name": {"type": "string"}, "description": {"type": "string"}},
            },
            "defaults": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "action": {"enum": list(rules.ACTIONS)},
                    "platforms": _STRINGS,
                    "onResolveError": {"enum": list(rules.RESOLVE_ERROR_ACTIONS)},
                    "unmatched": {"enum": list(rules.UNMATCHED)},
                },
            },
            "rules": {"type": "array", "minItems": 1, "items": _rule()},
            "exceptions": {"type": "array", "items": _exception()},
        },
    }


def _rule() -> dict[str, Any]:
    """One entry of `rules`: its `match`, and its `require` built from `checks.CHECKS`."""
    require = {
        "type": "object",
        "minProperties": 1,
        "additionalProperties": False,
        "properties": {
            name: {**spec.schema, "description": spec.doc} for name, spec in checks.CHECKS.items()
        },
    }
    match = {
        "type": "object",
        "required": ["images"],
        "additionalProperties": False,
        "properties": {
            "images": {**_STRINGS, "description": "normalized-name globs, optional :tag-glob"},
            "excludeImages": _STRINGS,
            "namespaces": _STRINGS,
        },
    }
    return {
        "type": "object",
        "required": ["id", "match", "require"],
        "additionalProperties": False,
        "properties": {
            "id": {"type": "string", "pattern": loader.RULE_ID.pattern},
            "description": {"type": "string"},
            "match": match,
            "require": require,
            "action": {"enum": list(rules.ACTIONS)},
            "message": {"type": "string"},
            "platforms": _STRINGS,
        },
    }


def _exception() -> dict[str, Any]:
    """One entry of `exceptions`."""
    return {
        "type": "object",
        "required": ["rules", "images", "reason"],
        "additionalProperties": False,
        "properties": {
            "rules": _STRINGS,
            "images": _STRINGS,
            "namespaces": _STRINGS,
            "reason": {"type": "string", "minLength": 1},
            "expires": {"type": "string", "format": "date"},
        },
    }
