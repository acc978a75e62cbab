"""Tests for policy/reports/: every `check` report format, validated as its consumers read it
(SARIF against the official 2.1.0 JSON schema, JUnit as parsed XML, GitHub workflow commands
with their escaping, JSON in the CLI's shape, text with and without colour)."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from types import MappingProxyType
from typing import Any

import jsonschema
import pytest

from policy import loader, reports
from policy.evaluate import UNMATCHED_RULE, ImageDecision, Violation
from policy.facts import ImageFacts
from policy.reference import parse
from policy.reports import Result
from policy.scanners import FoundImage

SCHEMA_PATH = Path(__file__).parent.parent / "data" / "sarif" / "sarif-schema-2.1.0.json"
SHA = "sha256:" + "a" * 64
ROOT = "/work/repo"

RULES = loader.load_rules_text(
    """\
apiVersion: image-policy/v1
kind: RuleSet
metadata: {name: report-test}
rules:
  - id: few-layers
    description: at most 10 layers
    message: squash the image
    match: {images: ["**"]}
    require: {maxLayers: 10}
  - id: no-latest
    description: never deploy latest
    match: {images: ["**"]}
    require: {denyTags: [latest]}
    action: warn
  - id: pinned
    match: {images: ["**"]}
    require: {digest: true}
    action: audit
""",
    "rules/report.yaml",
)


def found(
    image: str, file: str = f"{ROOT}/k8s/app.yaml", line: int = 7, column: int = 16
) -> FoundImage:
    return FoundImage(image, file, line, column, "Pod", "app", None, "c", "container")


def decided(
    image: str, *violations: Violation, warnings: tuple[str, ...] = (), **where: Any
) -> Result:
    ref = parse(image)
    facts = ImageFacts(digest=SHA, errors=MappingProxyType({}))
    return Result(found(image, **where), ImageDecision(ref, facts, violations, warnings))


DENY = Violation("few-layers", "maxLayers", "deny", "busybox:1.36 has 11 layers; rule allows 10")
WARN = Violation("no-latest", "denyTags", "warn", "nginx uses tag 'latest'")
AUDIT = Violation("pinned", "digest", "audit", "nginx is not pinned by digest")
UNMATCHED = Violation(UNMATCHED_RULE, "unmatched", "deny", "no rule matches quay.io/x/y")
EXPIRED = "exception for rule few-layers on docker.io/library/old expired on 2026-01-01 (x)"

RESULTS = [
    decided("busybox:1.36", DENY),
    decided("nginx", WARN, AUDIT, line=12, column=18),
    Result(found("nginx:Bad Tag", file="--image", line=0, column=0), None, "invalid tag"),
    decided("quay.io/x/y:1", UNMATCHED, file=f"{ROOT}/compose.yaml", line=3, column=12),
    decided("old:1", warnings=(EXPIRED,), file="<stdin>", line=2, column=9),
    decided(f"ghcr.io/acme/ok@{SHA}", file=f"{ROOT}/k8s/app.yaml", line=20, column=16),
]


def render(fmt: reports.Format, results: list[Result] = RESULTS, **kw: Any) -> str:
    return reports.render(fmt, results, RULES, tool_version="1.2.3", root=ROOT, **kw)


# --- json -------------------------------------------------------------------------------------


def test_json_has_the_cli_shape() -> None:
    doc = json.loads(render("json", RESULTS[:3]))
    assert doc == {
        "allowed": False,
        "results": [
            {
                "image": "busybox:1.36",
                "reference": "docker.io/library/busybox:1.36",
                "digest": SHA,
                "source": f"{ROOT}/k8s/app.yaml:7",
                "allowed": False,
                "violations": [
                    {
                        "rule": "few-layers",
                        "check": "maxLayers",
                        "action": "deny",
                        "message": DENY.message,
                    }
                ],
                "warnings": [],
            },
            {
                "image": "nginx",
                "reference": "docker.io/library/nginx",
                "digest": SHA,
                "source": f"{ROOT}/k8s/app.yaml:12",
                "allowed": True,
                "violations": [
                    {
                        "rule": "no-latest",
                        "check": "denyTags",
                        "action": "warn",
                        "message": WARN.message,
                    },
                    {
                        "rule": "pinned",
                        "check": "digest",
                        "action": "audit",
                        "message": AUDIT.message,
                    },
                ],
                "warnings": [],
            },
            {
                "image": "nginx:Bad Tag",
                "reference": None,
                "digest": None,
                "source": "--image",
                "allowed": False,
                "violations": [
                    {
                        "rule": "(reference)",
                        "check": "reference",
                        "action": "deny",
                        "message": "invalid image reference 'nginx:Bad Tag': invalid tag",
                    }
                ],
                "warnings": [],
            },
        ],
        "skipped": [],
        "summary": {
            "images": 3,
            "allowed": 1,
            "denied": 2,
            "warnings": 1,
            "audits": 1,
            "skipped": 0,
        },
    }


def test_json_counts_expired_exceptions_as_warnings_and_allows_when_nothing_is_denied() -> None:
    doc = json.loads(render("json", RESULTS[4:]))
    assert doc["allowed"] is True
    assert doc["results"][0]["warnings"] == [EXPIRED]
    assert doc["summary"] == {
        "images": 2,
        "allowed": 2,
        "denied": 0,
        "warnings": 1,
        "audits": 0,
        "skipped": 0,
    }


# --- text -------------------------------------------------------------------------------------


def test_text_groups_by_file_with_marks_and_summary() -> None:
    assert render("text").splitlines() == [
        f"{ROOT}/k8s/app.yaml",
        "  7:16 busybox:1.36  DENIED",
        f"    ✗ deny few-layers: {DENY.message}",
        "  12:18 nginx  allowed",
        f"    ! warn no-latest: {WARN.message}",
        f"    · audit pinned: {AUDIT.message}",
        f"  20:16 ghcr.io/acme/ok@{SHA}  allowed",
        "--image",
        "  nginx:Bad Tag  DENIED",
        "    ✗ invalid image reference: invalid tag",
        f"{ROOT}/compose.yaml",
        "  3:12 quay.io/x/y:1  DENIED",
        f"    ✗ deny {UNMATCHED_RULE}: {UNMATCHED.message}",
        "<stdin>",
        "  2:9 old:1  allowed",
        f"    ! warn: {EXPIRED}",
        "6 images, 3 allowed, 3 denied",
    ]


def test_text_colour_only_adds_ansi_codes() -> None:
    plain = render("text")
    coloured = render("text", color=True)
    assert "\x1b[" not in plain
    assert "\x1b[31m" in coloured and "\x1b[32m" in coloured and "\x1b[33m" in coloured
    assert re.sub(r"\x1b\[[0-9;]*m", "", coloured) == plain


# --- sarif ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sarif_validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)  # the draft the schema declares
    cls.check_schema(schema)
    return cls(schema)


def sarif(results: list[Result] = RESULTS, **kw: Any) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(render("sarif", results, **kw))
    return doc


def test_sarif_is_valid_against_the_official_schema(sarif_validator: Any) -> None:
    doc = sarif(information_uri="https://example.org/image-policy")
    errors = [e.message for e in sarif_validator.iter_errors(doc)]
    assert errors == []
    assert doc["version"] == "2.1.0"
    assert doc["$schema"].endswith("sarif-schema-2.1.0.json")


def test_the_schema_check_rejects_a_broken_document(sarif_validator: Any) -> None:
    """The validation above can fail: a level SARIF does not know is refused."""
    doc = sarif()
    doc["runs"][0]["results"][0]["level"] = "fatal"
    assert not sarif_validator.is_valid(doc)


def test_sarif_driver_and_rule_metadata() -> None:
    driver = sarif(information_uri="https://example.org/ip")["runs"][0]["tool"]["driver"]
    assert (driver["name"], driver["version"], driver["informationUri"]) == (
        "image-policy",
        "1.2.3",
        "https://example.org/ip",
    )
    rules = {r["id"]: r for r in driver["rules"]}
    # Every rule of the rule set, then the synthetic rules the results use, each once.
    assert list(rules) == [
        "few-layers",
        "no-latest",
        "pinned",
        "(reference)",
        UNMATCHED_RULE,
        "(expired-exception)",
    ]
    assert rules["few-layers"]["shortDescription"] == {"text": "at most 10 layers"}
    assert rules["few-layers"]["fullDescription"] == {"text": "squash the image"}
    assert rules["few-layers"]["help"] == {"text": "squash the image"}
    levels = {rid: r["defaultConfiguration"]["level"] for rid, r in rules.items()}
    assert levels == {
        "few-layers": "error",
        "no-latest": "warning",
        "pinned": "note",
        "(reference)": "error",
        UNMATCHED_RULE: "error",
        "(expired-exception)": "warning",
    }


def test_sarif_without_information_uri_leaves_it_out() -> None:
    assert "informationUri" not in sarif()["runs"][0]["tool"]["driver"]


def test_sarif_results_point_at_their_rule_level_and_line() -> None:
    run = sarif()["runs"][0]
    rules = run["tool"]["driver"]["rules"]
    got = [
        (
            r["ruleId"],
            rules[r["ruleIndex"]]["id"],
            r["level"],
            r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
            r["locations"][0]["physicalLocation"]["region"],
        )
        for r in run["results"]
    ]
    line7 = {"startLine": 7, "startColumn": 16}
    assert got == [
        ("few-layers", "few-layers", "error", "k8s/app.yaml", line7),
        ("no-latest", "no-latest", "warning", "k8s/app.yaml", {"startLine": 12, "startColumn": 18}),
        ("pinned", "pinned", "note", "k8s/app.yaml", {"startLine": 12, "startColumn": 18}),
        ("(reference)", "(reference)", "error", "image/nginx%3ABad%20Tag", {"startLine": 1}),
        (
            UNMATCHED_RULE,
            UNMATCHED_RULE,
            "error",
            "compose.yaml",
            {"startLine": 3, "startColumn": 12},
        ),
        (
            "(expired-exception)",
            "(expired-exception)",
            "warning",
            "stdin/old%3A1",
            {"startLine": 2, "startColumn": 9},
        ),
    ]
    assert run["results"][0]["message"] == {"text": DENY.message}
    assert run["results"][0]["properties"]["reference"] == "docker.io/library/busybox:1.36"


def test_every_sarif_result_has_an_artifact_uri_as_code_scanning_requires() -> None:
    """Code scanning refuses uploads with results lacking `physicalLocation.artifactLocation.uri`
    (`locationFromSarifResult: expected artifact location`), so images without a file get one."""
    for result in sarif()["runs"][0]["results"]:
        assert result["locations"], result
        uri = result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
        assert uri and "\\" not in uri and not uri.startswith("/")


@pytest.mark.parametrize(
    ("file", "root", "uri"),
    [
        (f"{ROOT}/deploy/a b.yaml", ROOT, "deploy/a%20b.yaml"),
        ("deploy/./app.yaml", ROOT, "deploy/app.yaml"),
        ("deploy\\win\\app.yaml", None, "deploy/win/app.yaml"),
        ("C:\\repo\\k8s\\app.yaml", "C:\\repo", "k8s/app.yaml"),
        ("/elsewhere/app.yaml", ROOT, "file:///elsewhere/app.yaml"),
        ("/elsewhere/app.yaml", None, "file:///elsewhere/app.yaml"),
    ],
)
def test_sarif_artifact_uris_are_relative_with_forward_slashes(
    file: str, root: str | None, uri: str
) -> None:
    doc = json.loads(
        reports.render(
            "sarif", [decided("busybox:1.36", DENY, file=file)], RULES, tool_version="1", root=root
        )
    )
    location = doc["runs"][0]["results"][0]["locations"][0]["physicalLocation"]
    assert location["artifactLocation"]["uri"] == uri


def fingerprints(results: list[Result]) -> list[str]:
    return [
        r["partialFingerprints"]["primaryLocationLineHash"]
        for r in sarif(results)["runs"][0]["results"]
    ]


def test_sarif_fingerprints_survive_line_moves_and_tell_repeats_apart() -> None:
    before = fingerprints(
        [decided("busybox:1.36", DENY, line=7), decided("busybox:1.36", DENY, line=30)]
    )
    after = fingerprints(
        [decided("busybox:1.36", DENY, line=9), decided("busybox:1.36", DENY, line=41)]
    )
    assert before == after
    assert len(set(before)) == 2
    other_file = fingerprints([decided("busybox:1.36", DENY, file=f"{ROOT}/other.yaml")])
    assert other_file[0] not in before


# --- junit ------------------------------------------------------------------------------------


def test_junit_is_xml_with_a_suite_per_file_and_a_case_per_image() -> None:
    text = render("junit")
    assert text.startswith('<?xml version="1.0" encoding="UTF-8"?>\n')
    top = ET.fromstring(text.split("\n", 1)[1])
    assert top.tag == "testsuites"
    assert (top.get("tests"), top.get("failures")) == ("6", "3")
    suites = {s.get("name"): s for s in top.findall("testsuite")}
    assert list(suites) == [f"{ROOT}/k8s/app.yaml", "--image", f"{ROOT}/compose.yaml", "<stdin>"]
    app = suites[f"{ROOT}/k8s/app.yaml"]
    assert (app.get("tests"), app.get("failures")) == ("3", "1")
    cases = app.findall("testcase")
    assert [c.get("name") for c in cases] == [
        "busybox:1.36@7",
        "nginx@12",
        f"ghcr.io/acme/ok@{SHA}@20",
    ]
    assert {c.get("classname") for c in cases} == {f"{ROOT}/k8s/app.yaml"}
    failure = cases[0].find("failure")
    assert failure is not None
    assert failure.get("message") == f"few-layers: {DENY.message}"
    assert (
        failure.text is not None and f"deny few-layers (maxLayers): {DENY.message}" in failure.text
    )
    assert cases[1].find("failure") is None
    out = cases[1].find("system-out")
    assert (
        out is not None
        and out.text == f"warn no-latest: {WARN.message}\naudit pinned: {AUDIT.message}"
    )
    assert list(cases[2]) == []  # allowed and clean: no failure, no output
    invalid = suites["--image"].find("testcase")
    assert invalid is not None and invalid.get("name") == "nginx:Bad Tag"
    assert invalid.find("failure") is not None


def test_junit_escapes_markup_in_messages() -> None:
    v = Violation("few-layers", "maxLayers", "deny", 'a <b> & "c" \x1b')
    top = ET.fromstring(render("junit", [decided("busybox:1.36", v)]).split("\n", 1)[1])
    failure = top.find("testsuite/testcase/failure")
    assert failure is not None
    # Characters XML 1.0 cannot hold are replaced, so the document still parses.
    assert failure.get("message") == 'few-layers: a <b> & "c" \ufffd'


# --- github -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "data", "prop"),
    [
        ("plain", "plain", "plain"),
        ("100% sure", "100%25 sure", "100%25 sure"),
        ("a\nb\r\nc", "a%0Ab%0D%0Ac", "a%0Ab%0D%0Ac"),
        ("k8s/a,b:c.yaml", "k8s/a,b:c.yaml", "k8s/a%2Cb%3Ac.yaml"),
        ("%0A", "%250A", "%250A"),
    ],
)
def test_github_escaping(text: str, data: str, prop: str) -> None:
    assert reports.escape_data(text) == data
    assert reports.escape_property(text) == prop


def test_github_annotations_on_the_offending_lines() -> None:
    assert render("github").splitlines() == [
        "::error file=k8s/app.yaml,line=7,col=16,title=image-policy few-layers::" + DENY.message,
        "::warning file=k8s/app.yaml,line=12,col=18,title=image-policy no-latest::" + WARN.message,
        "::notice file=k8s/app.yaml,line=12,col=18,title=image-policy pinned::" + AUDIT.message,
        "::error title=image-policy (reference)::nginx:Bad Tag: invalid image reference "
        "'nginx:Bad Tag': invalid tag",
        "::error file=compose.yaml,line=3,col=12,title=image-policy (unmatched)::"
        + UNMATCHED.message,
        f"::warning line=2,col=9,title=image-policy (expired-exception)::old:1: {EXPIRED}",
        "6 images, 3 allowed, 3 denied",
    ]


def test_github_escapes_file_names_and_messages() -> None:
    v = Violation("few-layers", "maxLayers", "deny", "50% over\nthe limit")
    line = render("github", [decided("busybox:1.36", v, file=f"{ROOT}/a,b:c.yaml")]).splitlines()[0]
    assert line == (
        "::error file=a%2Cb%3Ac.yaml,line=7,col=16,title=image-policy few-layers::"
        "50%25 over%0Athe limit"
    )


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown report format 'yaml'"):
        reports.render("yaml", RESULTS, RULES, tool_version="1")  # type: ignore[arg-type]


# --- the operator sees the detail a pod author is not told ----------------------------------

UNFETCHED = Violation(
    "few-layers",
    "maxLayers",
    "deny",
    "cannot check ghcr.io/x/y:1: image manifest could not be fetched (registry answered an "
    "error (HTTP 500)); onResolveError is deny",
    "ghcr.io/x/y:1: ghcr.io answered HTTP 500: X: internal-admin v3.2",
)
DETAILED = [decided("ghcr.io/x/y:1", UNFETCHED, DENY)]


def test_json_has_the_detail_beside_the_message_and_only_when_there_is_one() -> None:
    doc = json.loads(render("json", DETAILED))
    first, second = doc["results"][0]["violations"]
    assert (first["message"], first["detail"]) == (UNFETCHED.message, UNFETCHED.detail)
    assert "detail" not in second


def test_text_shows_the_detail_on_a_line_of_its_own() -> None:
    lines = render("text", DETAILED).splitlines()
    at = lines.index(f"    ✗ deny few-layers: {UNFETCHED.message}")
    assert lines[at + 1] == f"        detail: {UNFETCHED.detail}"
    assert lines[at + 2] == f"    ✗ deny few-layers: {DENY.message}"  # no detail, no line


def test_sarif_junit_and_github_append_the_detail(sarif_validator: Any) -> None:
    described = f"{UNFETCHED.message} (detail: {UNFETCHED.detail})"
    doc = sarif(DETAILED)
    assert list(sarif_validator.iter_errors(doc)) == []
    first, second = doc["runs"][0]["results"]
    assert first["message"]["text"] == described
    assert first["properties"]["detail"] == UNFETCHED.detail
    assert second["message"]["text"] == DENY.message and "detail" not in second["properties"]
    failure = ET.fromstring(render("junit", DETAILED)).find(".//failure")
    assert failure is not None and failure.text is not None
    assert f"deny few-layers (maxLayers): {described}" in failure.text
    assert f"::{described}" in render("github", DETAILED)
