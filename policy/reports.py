"""Reports of `image-policy check` in the formats CI systems read (pure: results in, text out).

`render(format, results, ruleset, tool_version=...)` writes one of:

- `text`: images grouped by file, `  LINE:COL IMAGE  allowed|DENIED`, one line per violation
  (`✗ deny`, `! warn`, `· audit`), then `N images, A allowed, D denied`; ANSI colour on request.
- `json`: `{"allowed", "results": [...], "summary": {...}}`, the CLI's machine-readable shape.
- `sarif`: SARIF 2.1.0 as GitHub code scanning ingests it: one run, rule metadata, one result
  per violation with a location and `partialFingerprints`.
- `junit`: JUnit XML, a `testsuite` per file and a `testcase` per image; denied images fail.
- `github`: GitHub Actions workflow commands (`::error file=…,line=…::message`) that annotate
  the offending lines of a pull request.

The CLI is run by the operator, so each format shows a violation's `detail` (the full reason a
fact could not be fetched: the upstream's words, the host and address tried) beside its
message (the classified words the webhook would tell a pod author): a line of its own in
`text`, a `detail` key in `json` (and in a SARIF result's properties), appended as
`(detail: …)` elsewhere.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import PurePath, PurePosixPath, PureWindowsPath
from typing import Literal
from urllib.parse import quote

from policy.evaluate import UNMATCHED_RULE, ImageDecision, Violation
from policy.rules import Action, RuleSet
from policy.scanners import FoundImage, Skipped

Format = Literal["text", "json", "sarif", "junit", "github"]
FORMATS: tuple[Format, ...] = ("text", "json", "sarif", "junit", "github")

TOOL_NAME = "image-policy"
SARIF_SCHEMA = (
    "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
)
REFERENCE_RULE = "(reference)"
EXPIRED_EXCEPTION_RULE = "(expired-exception)"
FINGERPRINT_KEY = "primaryLocationLineHash"

# "Files" that are not files: images given on the command line and manifests read from stdin.
_NO_FILE = ("--image", "<stdin>")

_LEVELS: dict[Action, str] = {"deny": "error", "warn": "warning", "audit": "note"}
_COMMANDS: dict[Action, str] = {"deny": "error", "warn": "warning", "audit": "notice"}
_MARKS: dict[Action, str] = {"deny": "✗", "warn": "!", "audit": "·"}

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

_ANSI = {
    "bold": "\x1b[1m",
    "red": "\x1b[31m",
    "green": "\x1b[32m",
    "yellow": "\x1b[33m",
    "dim": "\x1b[2m",
    "reset": "\x1b[0m",
}
_ACTION_COLOUR: dict[Action, str] = {"deny": "red", "warn": "yellow", "audit": "dim"}


@dataclass(frozen=True)
class Result:
    """One image as found in the input, with its decision (None: invalid reference, `invalid`
    says why)."""

    found: FoundImage
    decision: ImageDecision | None
    invalid: str | None = None

    @property
    def allowed(self) -> bool:
        return self.decision is not None and self.decision.allowed


@dataclass(frozen=True)
class _Finding:
    """One thing to report about an image: a violation, or an expired exception (a warning)."""

    rule: str
    check: str
    action: Action
    message: str
    detail: str = ""

    @property
    def described(self) -> str:
        """The message with its detail, for formats with one text per finding."""
        return f"{self.message} (detail: {self.detail})" if self.detail else self.message


def violations(result: Result) -> tuple[Violation, ...]:
    """The image's violations; an invalid reference is one deny violation of `(reference)`."""
    if result.decision is not None:
        return result.decision.violations
    return (
        Violation(
            REFERENCE_RULE,
            "reference",
            "deny",
            f"invalid image reference {result.found.image!r}: {result.invalid}",
        ),
    )


def _findings(result: Result) -> list[_Finding]:
    out = [_Finding(v.rule, v.check, v.action, v.message, v.detail) for v in violations(result)]
    if result.decision is not None:
        out.extend(
            _Finding(EXPIRED_EXCEPTION_RULE, "exception", "warn", w)
            for w in result.decision.warnings
        )
    return out


def _source(found: FoundImage) -> str:
    return found.location if found.line else found.file


def _has_file(found: FoundImage) -> bool:
    return found.file not in _NO_FILE


def _by_file(results: Iterable[Result]) -> dict[str, list[Result]]:
    groups: dict[str, list[Result]] = {}
    for r in results:
        groups.setdefault(r.found.file, []).append(r)
    return groups


def _path(text: str) -> PurePath:
    return PureWindowsPath(text) if "\\" in text else PurePosixPath(text)


def _relative(file: str, root: str | None) -> str:
    """`file` with forward slashes, relative to `root` when it lies under it."""
    path = _path(file)
    if root is not None and path.is_absolute() and path.is_relative_to(_path(root)):
        path = path.relative_to(_path(root))
    return path.as_posix() if path.is_absolute() else posixpath.normpath(path.as_posix())


def summary(results: Sequence[Result]) -> dict[str, int]:
    """Counts of images, allowed, denied, warnings (warn violations and expired exceptions) and
    audits."""
    denied = sum(1 for r in results if not r.allowed)
    return {
        "images": len(results),
        "allowed": len(results) - denied,
        "denied": denied,
        "warnings": sum(
            len(r.decision.by_action("warn")) + len(r.decision.warnings)
            for r in results
            if r.decision is not None
        ),
        "audits": sum(len(r.decision.by_action("audit")) for r in results if r.decision),
    }


def _summary_line(results: Sequence[Result]) -> str:
    counts = summary(results)
    return f"{counts['images']} images, {counts['allowed']} allowed, {counts['denied']} denied"


# --- json ---------------------------------------------------------------------------------


def json_document(results: Sequence[Result], skipped: Sequence[Skipped] = ()) -> dict[str, object]:
    """The `--format json` document (as a dict): `skipped` lists the files not judged (with
    why), and `summary.skipped` counts them."""
    out = []
    for r in results:
        d = r.decision
        out.append(
            {
                "image": r.found.image,
                "reference": str(d.reference) if d is not None else None,
                "digest": (d.facts.digest or d.reference.digest) if d is not None else None,
                "source": _source(r.found),
                "allowed": r.allowed,
                "violations": [_violation_json(v) for v in violations(r)],
                "warnings": list(d.warnings) if d is not None else [],
            }
        )
    counts = summary(results)
    document: dict[str, object] = {"allowed": counts["denied"] == 0, "results": out}
    document["skipped"] = [{"file": s.file, "reason": s.reason} for s in skipped]
    document["summary"] = {**counts, "skipped": len(skipped)}
    return document


def _violation_json(v: Violation) -> dict[str, str]:
    out = {"rule": v.rule, "check": v.check, "action": v.action, "message": v.message}
    if v.detail:
        out["detail"] = v.detail
    return out


def _json(results: Sequence[Result], skipped: Sequence[Skipped]) -> str:
    return json.dumps(json_document(results, skipped), indent=2) + "\n"


# --- text ---------------------------------------------------------------------------------


def _written(r: Result) -> str:
    """The image as written, with the canonical reference it was judged as beside it when
    that is not merely its long or short form (`GHCR.IO:443/a/b:1 (ghcr.io/a/b:1)`)."""
    if r.decision is None:
        return r.found.image
    ref = r.decision.reference
    if r.found.image in (str(ref), ref.familiar):
        return r.found.image
    return f"{r.found.image} ({ref})"


def _text(
    results: Sequence[Result], color: bool, quiet: bool, skipped: Sequence[Skipped] = ()
) -> str:
    def paint(text: str, *styles: str) -> str:
        if not color:
            return text
        return "".join(_ANSI[s] for s in styles) + text + _ANSI["reset"]

    lines: list[str] = []
    shown = [r for r in results if not quiet or _findings(r)]
    for file, items in _by_file(shown).items():
        lines.append(paint(file, "bold"))
        for r in items:
            where = f"{r.found.line}:{r.found.column} " if r.found.line else ""
            verdict = paint("allowed", "green") if r.allowed else paint("DENIED", "bold", "red")
            lines.append(f"  {where}{_written(r)}  {verdict}")
            if r.decision is None:
                lines.append(paint(f"    ✗ invalid image reference: {r.invalid}", "red"))
                continue
            for v in r.decision.violations:
                text = f"    {_MARKS[v.action]} {v.action} {v.rule}: {v.message}"
                lines.append(paint(text, _ACTION_COLOUR[v.action]))
                if v.detail:
                    lines.append(paint(f"        detail: {v.detail}", "dim"))
            for w in r.decision.warnings:
                lines.append(paint(f"    ! warn: {w}", "yellow"))
    if skipped and not quiet:
        lines.append(paint("skipped (not judged)", "bold"))
        lines.extend(paint(f"  {s.file}: {s.reason}", "dim") for s in skipped)
    summary_line = _summary_line(results)
    if skipped:
        summary_line += f"; {len(skipped)} file{'s' if len(skipped) != 1 else ''} skipped"
    lines.append(summary_line)
    return "\n".join(lines) + "\n"


# --- sarif --------------------------------------------------------------------------------


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
    if _has_file(found):
        path = _path(found.file)
        outside = root is None or not path.is_relative_to(_path(root))
        if path.is_absolute() and outside:
            return path.as_uri()
        return quote(_relative(found.file, root), safe="/")
    return quote(f"{found.file.strip('<>-')}/{found.image}", safe="/")


def _fingerprint(uri: str, found: FoundImage, finding: _Finding, occurrence: int) -> str:
    """Stable across runs and line moves: the file, image, rule and check, and which
    occurrence of that image in the file it is."""
    key = "\0".join((uri, found.image, finding.rule, finding.check))
    return f"{hashlib.sha256(key.encode()).hexdigest()[:16]}:{occurrence}"


def _sarif(
    results: Sequence[Result],
    ruleset: RuleSet,
    tool_version: str,
    root: str | None,
    information_uri: str | None,
) -> str:
    ids = [r.id for r in ruleset.rules]
    seen_synthetic: list[str] = []
    sarif_results: list[dict[str, object]] = []
    occurrences: dict[tuple[str, str, str, str], int] = {}
    for r in results:
        uri = _artifact_uri(r.found, root)
        for finding in _findings(r):
            if finding.rule not in ids and finding.rule not in seen_synthetic:
                seen_synthetic.append(finding.rule)
            index = (ids + seen_synthetic).index(finding.rule)
            slot = (uri, r.found.image, finding.rule, finding.check)
            occurrences[slot] = occurrences.get(slot, 0) + 1
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
            sarif_results.append(
                {
                    "ruleId": finding.rule,
                    "ruleIndex": index,
                    "level": _LEVELS[finding.action],
                    "message": {"text": finding.described},
                    "locations": [location],
                    "partialFingerprints": {
                        FINGERPRINT_KEY: _fingerprint(uri, r.found, finding, occurrences[slot])
                    },
                    "properties": properties,
                }
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


# --- junit --------------------------------------------------------------------------------


# Characters XML 1.0 cannot hold at all (C0 controls but tab, LF and CR; surrogates; U+FFFE/F).
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _xml(text: str) -> str:
    return _XML_INVALID.sub("\ufffd", text)


def _case_name(found: FoundImage) -> str:
    return f"{found.image}@{found.line}" if found.line else found.image


def _junit(results: Sequence[Result]) -> str:
    counts = summary(results)
    top = ET.Element(
        "testsuites",
        {
            "name": TOOL_NAME,
            "tests": str(counts["images"]),
            "failures": str(counts["denied"]),
            "errors": "0",
            "time": "0",
        },
    )
    for file, items in _by_file(results).items():
        failures = sum(1 for r in items if not r.allowed)
        suite = ET.SubElement(
            top,
            "testsuite",
            {
                "name": _xml(file),
                "tests": str(len(items)),
                "failures": str(failures),
                "errors": "0",
                "skipped": "0",
                "time": "0",
            },
        )
        for r in items:
            case = ET.SubElement(
                suite,
                "testcase",
                {"name": _xml(_case_name(r.found)), "classname": _xml(file), "time": "0"},
            )
            if _has_file(r.found):
                case.set("file", _xml(file))
                case.set("line", str(r.found.line))
            findings = _findings(r)
            denials = [f for f in findings if f.action == "deny"]
            if denials:
                first = denials[0]
                more = f" (and {len(denials) - 1} more)" if len(denials) > 1 else ""
                failure = ET.SubElement(
                    case,
                    "failure",
                    {
                        "message": _xml(f"{first.rule}: {first.described}{more}"),
                        "type": _xml(first.rule),
                    },
                )
                failure.text = _xml(
                    "\n".join(
                        [f"{_source(r.found)}: {r.found.image}"]
                        + [f"{f.action} {f.rule} ({f.check}): {f.described}" for f in denials]
                    )
                )
            others = [f for f in findings if f.action != "deny"]
            if others:
                out = ET.SubElement(case, "system-out")
                out.text = _xml("\n".join(f"{f.action} {f.rule}: {f.described}" for f in others))
    ET.indent(top)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(top, encoding="unicode") + "\n"


# --- github -------------------------------------------------------------------------------


def escape_data(text: str) -> str:
    """A workflow command's message, escaped as @actions/core does (`%`, CR, LF)."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    """A workflow command's property value: also `:` and `,`, which delimit properties."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def _github(results: Sequence[Result], root: str | None) -> str:
    lines: list[str] = []
    for r in results:
        props: list[tuple[str, str]] = []
        if _has_file(r.found):
            props.append(("file", _relative(r.found.file, root)))
        if r.found.line:
            props.append(("line", str(r.found.line)))
            if r.found.column:
                props.append(("col", str(r.found.column)))
        for finding in _findings(r):
            title = ("title", f"{TOOL_NAME} {finding.rule}")
            rendered = ",".join(f"{k}={escape_property(v)}" for k, v in [*props, title])
            message = finding.described
            if not _has_file(r.found):
                message = f"{r.found.image}: {message}"
            lines.append(f"::{_COMMANDS[finding.action]} {rendered}::{escape_data(message)}")
    lines.append(_summary_line(results))
    return "\n".join(lines) + "\n"


def render(
    format: Format,
    results: Sequence[Result],
    ruleset: RuleSet,
    *,
    color: bool = False,
    quiet: bool = False,
    tool_version: str,
    root: str | None = None,
    information_uri: str | None = None,
    skipped: Sequence[Skipped] = (),
) -> str:
    """The report of `results` in `format`, ending with a newline.

    `color` adds ANSI colours to `text` (the CLI passes isatty and honours NO_COLOR); `quiet`
    leaves images without findings out of `text` (the summary still counts them). `root`
    (an absolute directory, usually the working directory) makes absolute file paths relative
    in `sarif` and `github`, as code scanning and annotations want repository-relative paths.
    `information_uri` is the project page SARIF's `tool.driver.informationUri` points at.
    `skipped` (files not judged, and why) are listed in `text` and `json`.
    """
    if format == "text":
        return _text(results, color, quiet, skipped)
    if format == "json":
        return _json(results, skipped)
    if format == "sarif":
        return _sarif(results, ruleset, tool_version, root, information_uri)
    if format == "junit":
        return _junit(results)
    if format == "github":
        return _github(results, root)
    raise ValueError(f"unknown report format {format!r}; expected one of {', '.join(FORMATS)}")
