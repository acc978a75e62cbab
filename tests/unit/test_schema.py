"""Tests for policy/schema.py: the published JSON Schema of rule files is a valid Draft 2020-12
schema that accepts every rule file we ship or test as valid, and covers every check."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import jsonschema
import pytest
import yaml

from policy import checks, loader
from policy.schema import rules_schema

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "rules"
VALID_FILES = sorted(
    [
        *(p for p in ROOT.joinpath("rules").rglob("*.yaml") if p.parent.name != "tests"),
        *DATA.joinpath("valid").rglob("*.y*ml"),
    ]
)
VALID_FILES = [p for p in VALID_FILES if not p.name.startswith(".")]


def as_editor_sees(value: object) -> object:
    """The YAML value as JSON, with dates as the ISO strings YAML 1.2 editors read them as."""
    if isinstance(value, dict):
        return {str(k): as_editor_sees(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_editor_sees(v) for v in value]
    if isinstance(value, date):
        return value.isoformat()
    return value


def validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(
        rules_schema(), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )


def test_schema_is_a_valid_draft_2020_12_schema() -> None:
    schema = rules_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert json.loads(json.dumps(schema)) == schema  # plain JSON, printable by `schema`


def test_every_check_is_in_the_schema_with_its_doc() -> None:
    require = rules_schema()["properties"]["rules"]["items"]["properties"]["require"]
    assert set(require["properties"]) == set(checks.CHECKS)
    for name, spec in checks.CHECKS.items():
        assert require["properties"][name]["description"] == spec.doc
    assert require["additionalProperties"] is False


def test_there_are_valid_files_to_check() -> None:
    names = {p.name for p in VALID_FILES}
    assert {"default.yaml", "full.yaml", "00-base.yaml", "10-extra.yml"} <= names


@pytest.mark.parametrize("path", VALID_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_valid_rule_files_validate(path: Path) -> None:
    # The loader agrees (the files of `merged/` name each other's rules, so load them together).
    assert loader.lint([path.parent if path.parent.name == "merged" else path]) == []
    document = as_editor_sees(yaml.safe_load(path.read_text()))
    errors = [e.message for e in validator().iter_errors(document)]
    assert errors == []


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("unknown-key.yaml", "Additional properties are not allowed ('acton' was unexpected)"),
        ("wrong-type.yaml", "'ten' is not of type 'integer'"),
        ("wrong-api.yaml", "'image-policy/v1' was expected"),
        ("empty-rules.yaml", "[] should be non-empty"),
        ("missing-keys.yaml", "'match' is a required property"),
        ("no-rules-key.yaml", "'rules' is a required property"),
    ],
)
def test_broken_rule_files_are_rejected_by_the_schema_too(name: str, problem: str) -> None:
    document = as_editor_sees(yaml.safe_load((DATA / "broken" / name).read_text()))
    assert problem in [e.message for e in validator().iter_errors(document)]


@pytest.mark.parametrize(
    ("fragment", "valid"),
    [
        ({"maxSize": "500MiB"}, True),
        ({"maxSize": 1024}, True),
        ({"maxSize": "500 MiB"}, True),
        ({"maxAge": "1h30m"}, True),
        ({"maxAge": 60}, True),
        ({"maxAge": "90 days"}, False),
        ({"tier": ["official"]}, True),
        ({"tier": ["gold"]}, False),
        ({"labels": {"a": None, "b": "x.*"}}, True),
        ({"labels": ["a"]}, True),
        ({"labels": {"a": 1}}, False),
        ({"digest": "yes"}, False),
        ({"maxLayers": 0}, False),
        ({}, False),
    ],
)
def test_require_fragments(fragment: dict[str, object], valid: bool) -> None:
    document = {
        "apiVersion": "image-policy/v1",
        "kind": "RuleSet",
        "rules": [{"id": "r", "match": {"images": ["**"]}, "require": fragment}],
    }
    assert validator().is_valid(document) is valid


def test_exception_expires_is_a_date() -> None:
    base = {
        "apiVersion": "image-policy/v1",
        "kind": "RuleSet",
        "rules": [{"id": "r", "match": {"images": ["**"]}, "require": {"digest": True}}],
    }
    exception = {"rules": ["r"], "images": ["nginx"], "reason": "x"}
    assert validator().is_valid({**base, "exceptions": [{**exception, "expires": "2027-03-31"}]})
    assert not validator().is_valid({**base, "exceptions": [{**exception, "expires": "next year"}]})
