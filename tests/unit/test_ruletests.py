"""Tests for policy/ruletests.py: rule tests in YAML, judged offline by the real pipeline —
passing and failing cases (failures show expected vs actual per image and rule), the shipped
example for rules/default.yaml, and located errors for malformed case files."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest

from policy import loader, ruletests
from policy.errors import InputError

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "ruletests"
NOW = datetime(2026, 11, 1, tzinfo=UTC)
SHA = "sha256:" + "1" * 64

RULES = loader.load_rules_text(
    """\
apiVersion: image-policy/v1
kind: RuleSet
metadata: {name: ruletest}
defaults: {platforms: ["linux/amd64"]}
rules:
  - id: registries
    match: {images: ["**"]}
    require: {registries: ["docker.io", "ghcr.io"]}
  - id: few-layers
    match: {images: ["**"]}
    require: {maxLayers: 10}
  - id: no-latest
    match: {images: ["**"]}
    require: {denyTags: ["latest"]}
    action: warn
  - id: fresh
    match: {images: ["ghcr.io/**"]}
    require: {maxAge: 30d}
    action: audit
exceptions:
  - rules: [few-layers]
    images: ["ghcr.io/acme/big"]
    reason: being split up
    expires: 2026-12-31
""",
    "rules.yaml",
)


def run(text: str, *, now: datetime = NOW) -> ruletests.TestReport:
    return ruletests.run_tests(RULES, [("cases.yaml", textwrap.dedent(text))], now=now)


HEADER = """\
apiVersion: image-policy/v1
kind: RuleTest
facts:
  images:
    busybox:1.36: {layers: 11}
    busybox:latest: {layers: 3}
    ghcr.io/acme/app:1: {layers: 2, created: 2026-10-20T00:00:00Z}
    ghcr.io/acme/big:1: {layers: 50, created: 2026-10-20T00:00:00Z}
cases:
"""


def test_shipped_example_for_the_default_rules_passes() -> None:
    ruleset = loader.load_rules([ROOT / "rules" / "default.yaml"])
    files = ruletests.read_case_files([ROOT / "rules" / "tests"])
    report = ruletests.run_tests(ruleset, files, now=datetime(2030, 1, 1, tzinfo=UTC))
    assert len(report.results) >= 6
    assert report.ok, ruletests.format_report(report)
    assert (
        ruletests.format_report(report).splitlines()[-1]
        == f"{len(report.results)} passed, 0 failed"
    )


LATEST = "image: busybox:latest, expect: allowed"


@pytest.mark.parametrize(
    ("case", "passed"),
    [
        ("image: busybox:1.36, expect: denied", True),
        ("image: busybox:1.36, expect: allowed", False),
        ("image: busybox:1.36, expect: denied, violations: [few-layers]", True),
        ("image: busybox:1.36, expect: denied, violations: [few-layers, no-latest]", False),
        ("image: busybox:1.36, expect: denied, violations: []", False),
        (f"{LATEST}, violations: [no-latest]", True),
        (f"{LATEST}, violations: [{{rule: no-latest, action: warn}}]", True),
        (f"{LATEST}, violations: [{{rule: no-latest, action: deny}}]", False),
        (
            f"{LATEST}, violations: "
            "[{rule: no-latest, check: denyTags, message: \"tag 'latest'\"}]",
            True,
        ),
        (f"{LATEST}, violations: [{{rule: no-latest, check: maxLayers}}]", False),
        (f"{LATEST}, violations: [{{rule: no-latest, message: nope}}]", False),
        # A registries check denies before anything is looked up.
        ("image: quay.io/x/y:1, expect: denied, violations: [registries]", True),
        # Not in the facts: onResolveError (deny by default) decides.
        ("image: ghcr.io/acme/unknown:1, expect: denied, violations: [few-layers, fresh]", True),
        # The exception lifts few-layers until it expires; the file's `now` is before that...
        ("image: ghcr.io/acme/big:1, expect: allowed, violations: []", True),
        # ...and a case's own `now` after it brings the rule back (fresh audits the age).
        (
            "image: ghcr.io/acme/big:1, now: 2027-01-02, expect: denied, "
            "violations: [few-layers, fresh]",
            True,
        ),
    ],
)
def test_case_verdicts(case: str, passed: bool) -> None:
    report = run(HEADER + f"  - {{name: c, {case}}}\n")
    assert [r.passed for r in report.results] == [passed], ruletests.format_report(report)
    assert report.ok is passed


def test_the_runner_time_applies_when_the_file_gives_none() -> None:
    case = HEADER + "  - {name: c, image: ghcr.io/acme/app:1, expect: allowed, violations: []}\n"
    assert run(case, now=datetime(2026, 11, 1, tzinfo=UTC)).ok
    late = run(case, now=datetime(2027, 6, 1, tzinfo=UTC))
    assert not late.ok
    assert [v.rule for v in late.results[0].unexpected] == ["fresh"]
    pinned_time = run(
        case.replace("cases:\n", "now: 2026-11-01\ncases:\n"), now=datetime(2027, 6, 1, tzinfo=UTC)
    )
    assert pinned_time.ok


def test_failures_show_expected_versus_actual_per_image_and_rule() -> None:
    report = run(
        HEADER
        + """\
  - name: layers pass
    image: busybox:1.36
    expect: denied
  - name: wrong verdict
    image: busybox:latest
    expect: denied
  - name: wrong rules
    image: busybox:1.36
    expect: denied
    violations: [{rule: no-latest, action: warn}]
"""
    )
    assert (report.passed, report.failed, report.ok) == (1, 2, False)
    lines = ruletests.format_report(report).splitlines()
    message = (
        "docker.io/library/busybox:latest uses tag 'latest'; rule no-latest denies tags latest"
    )
    layers = "docker.io/library/busybox:1.36 has 11 layers; rule few-layers allows at most 10"
    assert lines == [
        "cases.yaml",
        "  PASS layers pass",
        "  FAIL cases.yaml:13 wrong verdict",
        "       image:    busybox:latest",
        "       expected: denied",
        "       actual:   allowed, violations: no-latest (warn)",
        f"       · found:      no-latest (warn, denyTags): {message}",
        "  FAIL cases.yaml:16 wrong rules",
        "       image:    busybox:1.36",
        "       expected: denied, violations: no-latest (warn)",
        "       actual:   denied, violations: few-layers (deny)",
        "       - missing:    no-latest (warn)",
        f"       + unexpected: few-layers (deny, maxLayers): {layers}",
        "1 passed, 2 failed",
    ]


def test_cases_from_several_files_are_reported_per_file() -> None:
    one = HEADER + "  - {name: a, image: busybox:1.36, expect: denied}\n"
    two = HEADER + "  - {name: b, image: busybox:1.36, expect: allowed}\n"
    report = ruletests.run_tests(RULES, [("one.yaml", one), ("two.yaml", two)], now=NOW)
    lines = ruletests.format_report(report).splitlines()
    assert lines[0] == "one.yaml" and "two.yaml" in lines
    assert lines[-1] == "1 passed, 1 failed"


def test_no_cases_is_not_ok() -> None:
    assert not ruletests.run_tests(RULES, [], now=NOW).ok


TOP = "apiVersion: image-policy/v1\nkind: RuleTest\n"
ONE = TOP + "cases:\n  - "  # a file whose first case (line 4, column 5) follows


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "cases.yaml:1:1: empty rule-test file"),
        ("cases: [\n", "cases.yaml:2:1: YAML syntax error"),
        ("- a\n", "cases.yaml:1:1: expected a mapping, got a list"),
        (
            "apiVersion: image-policy/v2\nkind: RuleTest\ncases: []\n",
            "cases.yaml:1:13: apiVersion: expected one of image-policy/v1",
        ),
        (
            "apiVersion: image-policy/v1\nkind: RuleSet\ncases: []\n",
            "cases.yaml:2:7: kind: expected one of RuleTest",
        ),
        (TOP, "cases.yaml:1:1: missing required key 'cases'"),
        (TOP + "cases: []\n", "cases.yaml:3:8: cases: expected a non-empty list"),
        (TOP + "case: []\n", 'cases.yaml:3:1: case: unknown key "case" (did you mean "cases"?)'),
        (
            TOP + "now: soon\ncases: [{name: a, image: x, expect: allowed}]\n",
            "cases.yaml:3:6: now: expected a timestamp",
        ),
        (
            ONE + "{name: a, image: x, expect: deny}\n",
            'cases.yaml:4:33: cases[0].expect: expected one of allowed | denied, got "deny"',
        ),
        (
            ONE + "{name: a, expect: denied}\n",
            "cases.yaml:4:5: cases[0]: missing required key 'image'",
        ),
        (
            ONE + "{name: a, image: 'nginx:Bad Tag', expect: denied}\n",
            "cases.yaml:4:22: cases[0].image: invalid reference format: invalid tag 'Bad Tag'",
        ),
        (
            ONE + "{name: a, image: x, expect: denied, expected: denied}\n",
            'cases.yaml:4:41: cases[0].expected: unknown key "expected" (did you mean "expect"?)',
        ),
        (
            ONE + "{name: a, image: x, expect: denied}\n  - {name: a, image: y, expect: denied}\n",
            "cases.yaml:5:12: cases[1].name: duplicate case name 'a' (first at line 4)",
        ),
        (
            ONE + "{name: a, image: x, expect: denied, violations: pinned}\n",
            "cases.yaml:4:53: cases[0].violations: expected a list of rule ids or {rule, action, "
            'check, message}, got "pinned"',
        ),
        (
            ONE + "{name: a, image: x, expect: denied, violations: [{action: deny}]}\n",
            "cases.yaml:4:54: cases[0].violations[0]: missing required key 'rule'",
        ),
        (
            ONE + "{name: a, image: x, expect: denied, violations: [{rule: r, action: block}]}\n",
            "cases.yaml:4:72: cases[0].violations[0].action: expected one of deny | warn | audit, "
            'got "block"',
        ),
        (
            TOP + "facts:\n  images:\n    nginx:1.25: {layers: ten}\n"
            "cases: [{name: a, image: x, expect: denied}]\n",
            "cases.yaml:5:26: facts.images.nginx:1.25.layers: "
            'expected a positive integer, got "ten"',
        ),
        (
            TOP + "facts:\n  images:\n    'Bad Ref': {layers: 1}\n"
            "cases: [{name: a, image: x, expect: denied}]\n",
            "cases.yaml:5:5: facts.images.Bad Ref: repository name must be lowercase",
        ),
    ],
)
def test_malformed_case_files_give_located_errors(text: str, expected: str) -> None:
    with pytest.raises(ruletests.RuleTestError) as info:
        ruletests.run_tests(RULES, [("cases.yaml", text)], now=NOW)
    assert any(str(e).startswith(expected) for e in info.value.errors), str(info.value)


def test_every_problem_of_every_file_is_reported_before_anything_runs() -> None:
    bad = ONE + "{name: a, image: x, expect: maybe}\n"
    with pytest.raises(ruletests.RuleTestError) as info:
        ruletests.run_tests(
            RULES,
            [
                ("a.yaml", bad),
                ("ok.yaml", HEADER + "  - {name: a, image: x, expect: denied}\n"),
                ("b.yaml", ""),
            ],
            now=NOW,
        )
    assert [e.location.file for e in info.value.errors if e.location] == ["a.yaml", "b.yaml"]
    assert str(info.value).splitlines()[0].startswith("a.yaml:4:33: cases[0].expect")


def test_read_case_files_walks_directories(tmp_path: Path) -> None:
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    (nested / "x_test.yaml").write_text("x")
    (tmp_path / "y_test.yml").write_text("y")
    (tmp_path / "notes.txt").write_text("n")
    files = ruletests.read_case_files([tmp_path])
    assert files == [(str(nested / "x_test.yaml"), "x"), (str(tmp_path / "y_test.yml"), "y")]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("missing.yaml", "missing.yaml: cannot read rule-test file"),
        ("empty-dir", "no rule-test files"),
    ],
)
def test_read_case_files_errors(tmp_path: Path, name: str, expected: str) -> None:
    (tmp_path / "empty-dir").mkdir()
    with pytest.raises(InputError, match=expected):
        ruletests.read_case_files([tmp_path / name])


def test_data_directory_cases() -> None:
    """The sample files in tests/data/ruletests: one passing, one failing case."""
    report = ruletests.run_tests(RULES, ruletests.read_case_files([DATA]), now=NOW)
    assert [(r.case.name, r.passed) for r in report.results] == [
        ("unpinned busybox is too big", True),
        ("latest is fine, says the author (wrongly)", False),
    ]
