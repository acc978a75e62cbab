"""`--format sarif`: SARIF 2.1.0 as GitHub code scanning ingests it: one run, rule metadata,
one result per finding with a location and `partialFingerprints` stable across runs."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from urllib.parse import quote

from policy.evaluate import UNMATCHED_RULE
from policy.reports.results import (
    EXPIRED_EXCEPTION_RULE,
    REFERENCE_RULE,
    TOOL_NAME,
    Finding,
    Result,
    as_path,
    findings_of,
    has_file,
    relative,
)
from policy.rules import Action, RuleSet
from policy.scanners import FoundImage

SARIF_SCHEMA = (
    "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
)
FINGERPRINT_KEY = "primaryLocationLineHash"

_LEVELS: dict[Action, str] = {"deny": "error", "warn": "warning", "audit": "note"}

# Rules evaluate (or this module) reports that no rule file defines.
_SYNTHETIC: dict[str, tuple[str, str]] = {
    UNMATCHED_RULE: (
        "no rule matches the image",
        "Images that no rule covers are denied when defaults.unmatched is deny: add a rule "
        "that matches the image, or set defaults.unmatched: allow.",
    ),
    REFERENCE_RULE: (
        "the image reference is not valid",
        "The image string does not follow the distribution reference grammar "
        "([registry/]repository[:tag][@digest]); fix the image string.",
    ),
    EXPIRED_EXCEPTION_RULE: (
        "an exception to a rule has expired",
        "An exception in the rule set covered this image but its expiry date has passed, so "
        "the rule applies again: renew the exception or fix the image.",
    ),
}


def _rule_descriptor(rule_id: str, ruleset: RuleSet) -> dict[str, object]:
    rule = ruleset.rule(rule_id)
    if rule is not None:
        action = rule.action or ruleset.defaults.action
        short = rule.description or f"rule {rule.id}"
        full = rule.message or rule.description or f"rule {rule.id} of {ruleset.name}"
    else:
        action = "warn" if rule_id == EXPIRED_EXCEPTION_RULE else "deny"
        short, full = _SYNTHETIC.get(
            rule_id, (f"rule {rule_id}", f"reported by image-policy as {rule_id}")
        )
    descriptor: dict[str, object] = {
        "id": rule_id,
        "shortDescription": {"text": short},
        "fullDescription": {"text": full},
        "help": {"text": full},
        "defaultConfiguration": {"level": _LEVELS[action]},
    }
    if rule is None:
        descriptor["properties"] = {"synthetic": True}
    elif rule.location is not None:
        descriptor["properties"] = {"source": str(rule.location)}
    return descriptor


def _artifact_uri(found: FoundImage, root: str | None) -> str:
    """A relative URI for the file holding the image. Images without a file (`--image`,
    stdin) get their own reference as a path, since code scanning rejects results without an
    artifact location."""
    if has_file(found):
        path = as_path(found.file)
        outside = root is None or not path.is_relative_to(as_path(root))
        if path.is_absolute() and outside:
            return path.as_uri()
        return quote(relative(found.file, root), safe="/")
    return quote(f"{found.file.strip('<>-')}/{found.image}", safe="/")


def _fingerprint(uri: str, found: FoundImage, finding: Finding, occurrence: int) -> str:
    """Stable across runs and line moves: the file, image, rule and check, and which
    occurrence of that image in the file it is."""
    key = "\0".join((uri, found.image, finding.rule, finding.check))
    return f"{hashlib.sha256(key.encode()).hexdigest()[:16]}:{occurrence}"


def render(
    results: Sequence[Result],
    ruleset: RuleSet,
    tool_version: str,
    root: str | None,
    information_uri: str | None,
) -> str:
    """The SARIF log of `results`: rules of the rule set first, then the synthetic ones
    reported, each result pointing at its rule by index."""
    ids = [r.id for r in ruleset.rules]
    seen_synthetic: list[str] = []
    sarif_results: list[dict[str, object]] = []
    occurrences: dict[tuple[str, str, str, str], int] = {}
    for r in results:
        uri = _artifact_uri(r.found, root)
        for finding in findings_of(r):
            if finding.rule not in ids and finding.rule not in seen_synthetic:
                seen_synthetic.append(finding.rule)
            index = (ids + seen_synthetic).index(finding.rule)
            slot = (uri, r.found.image, finding.rule, finding.check)
            occurrences[slot] = occurrences.get(slot, 0) + 1
            sarif_results.append(
                _result(
                    r, finding, uri, index, _fingerprint(uri, r.found, finding, occurrences[slot])
                )
            )
    driver: dict[str, object] = {
        "name": TOOL_NAME,
        "version": tool_version,
        "semanticVersion": tool_version,
        "rules": [_rule_descriptor(rule_id, ruleset) for rule_id in ids + seen_synthetic],
    }
    if information_uri is not None:
        driver["informationUri"] = information_uri
    document = {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {"driver": driver},
                "columnKind": "unicodeCodePoints",
                "results": sarif_results,
            }
        ],
    }
    return json.dumps(document, indent=2) + "\n"


def _result(
    r: Result, finding: Finding, uri: str, index: int, fingerprint: str
) -> dict[str, object]:
    """One SARIF result: the finding at the image's location in `uri`, rule `index`."""
    region: dict[str, int] = {"startLine": max(r.found.line, 1)}
    if r.found.column:
        region["startColumn"] = r.found.column
    location: dict[str, object] = {
        "physicalLocation": {"artifactLocation": {"uri": uri}, "region": region},
        "logicalLocations": [{"name": r.found.image, "kind": "resource"}],
    }
    properties: dict[str, object] = {"check": finding.check, "image": r.found.image}
    if r.decision is not None:
        properties["reference"] = str(r.decision.reference)
    if finding.detail:
        properties["detail"] = finding.detail
    return {
        "ruleId": finding.rule,
        "ruleIndex": index,
        "level": _LEVELS[finding.action],
        "message": {"text": finding.described},
        "locations": [location],
        "partialFingerprints": {FINGERPRINT_KEY: fingerprint},
        "properties": properties,
    }
