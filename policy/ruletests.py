"""Rule tests: `image-policy test RULES CASES...` checks rules offline against expected verdicts.

Like `kyverno test` or `gator verify`, a rule author writes cases — an image, what is known
about it, and the verdict the rules must reach — and runs them without a registry. Each case is
judged by the same pipeline as `check` (`service.Service` calling `evaluate.needs` and
`evaluate.evaluate_image`, with a `factsfile.FactsResolver` answering from the file's facts).

A case file:
```yaml
apiVersion: image-policy/v1
kind: RuleTest
now: 2026-11-01T00:00:00Z          # optional: the decision time (maxAge, exception expiry);
                                   # default: the time the runner is given (the CLI: now)
facts:                             # optional: the shape of a facts file (see factsfile)
  images:
    nginx:1.25:
      digest: sha256:...
      platforms:
        linux/amd64: {layers: 7, user: "101", created: 2026-06-01T00:00:00Z}
cases:                             # at least one
  - name: official nginx pinned is allowed   # unique within the file
    image: nginx:1.25@sha256:...
    namespace: prod                # optional (default: unknown, as in a CLI run)
    now: 2027-01-01                # optional: this case's decision time
    expect: allowed                # allowed | denied
    violations: [pinned]           # optional: the exact set of violations (any action)
    # or entries with more detail; every key but rule is optional, message is a substring:
    # violations: [{rule: pinned, action: deny, check: digest, message: "not pinned"}]
```
Without `violations` only the verdict is compared; `violations: []` demands none at all.
An image missing from `facts` is looked up like an image missing from a facts file (its
facts are unknown, so `onResolveError` decides), and tiers known offline still apply.

Malformed case files raise `RuleTestError` listing every located problem
(`tests/x.yaml:12:7: cases[2].expect: expected one of allowed | denied, got "deny"`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Literal

from policy import factsfile, reference
from policy.deadline import Deadline
from policy.errors import ConfigError, InputError, InvalidReference, Location
from policy.evaluate import ImageDecision, Violation
from policy.rules import ACTIONS, Action, RuleSet
from policy.service import Item, Service
from policy.yamlsrc import Node, Reader, join, load

API_VERSION = "image-policy/v1"
KIND = "RuleTest"
Verdict = Literal["allowed", "denied"]
VERDICTS: tuple[Verdict, ...] = ("allowed", "denied")

_TOP_KEYS = ("apiVersion", "kind", "now", "facts", "cases")
_CASE_KEYS = ("name", "image", "namespace", "now", "expect", "violations")
_MATCHER_KEYS = ("rule", "action", "check", "message")


class CaseFileError(ConfigError):
    """One located problem in a rule-test file."""


class RuleTestError(InputError):
    """Rule-test files that are not valid; the message lists every located problem."""

    def __init__(self, errors: Sequence[ConfigError]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(str(e) for e in self.errors))


@dataclass(frozen=True)
class ExpectedViolation:
    """A violation a case expects: its rule, and optionally its action, check and a substring
    of its message."""

    rule: str
    action: Action | None = None
    check: str | None = None
    message: str | None = None

    def matches(self, v: Violation) -> bool:
        return (
            v.rule == self.rule
            and (self.action is None or v.action == self.action)
            and (self.check is None or v.check == self.check)
            and (self.message is None or self.message in v.message)
        )

    def __str__(self) -> str:
        details = [d for d in (self.action, self.check) if d is not None]
        if self.message is not None:
            details.append(f"message containing {self.message!r}")
        return f"{self.rule} ({', '.join(details)})" if details else self.rule


@dataclass(frozen=True)
class Case:
    """One image and the verdict the rules must reach on it."""

    name: str
    image: reference.Reference
    image_text: str
    namespace: str | None
    now: datetime
    expect: Verdict
    violations: tuple[ExpectedViolation, ...] | None
    facts: factsfile.FactsResolver
    location: Location


@dataclass(frozen=True)
class CaseResult:
    """A case with the decision reached and how it differs from what was expected."""

    case: Case
    decision: ImageDecision
    missing: tuple[ExpectedViolation, ...]
    unexpected: tuple[Violation, ...]

    @property
    def verdict(self) -> Verdict:
        return "allowed" if self.decision.allowed else "denied"

    @property
    def passed(self) -> bool:
        return self.verdict == self.case.expect and not self.missing and not self.unexpected


@dataclass(frozen=True)
class TestReport:
    """Every case's result, in file and case order."""

    __test__ = False  # not a pytest test class, despite its name

    results: tuple[CaseResult, ...]

    @property
    def passed(self) -> int:
        return sum(1 for r in self.results if r.passed)

    @property
    def failed(self) -> int:
        return len(self.results) - self.passed

    @property
    def ok(self) -> bool:
        """Whether every case passed (and there was at least one)."""
        return bool(self.results) and self.failed == 0


def _when(reader: Reader, node: Node, path: str) -> datetime | None:
    value = node.value
    if isinstance(value, str):
        with contextlib.suppress(ValueError):  # not a timestamp: reported below
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    reader.expected(node, path, "a timestamp like 2026-11-01T00:00:00Z or a date")
    return None


def _expected(reader: Reader, node: Node, path: str) -> tuple[ExpectedViolation, ...] | None:
    if not isinstance(node.value, list):
        reader.expected(node, path, "a list of rule ids or {rule, action, check, message}")
        return None
    out: list[ExpectedViolation] = []
    for item_path, child in reader.items(node, path, nonempty=False):
        if isinstance(child.value, str):
            rule = reader.string(child, item_path)
            if rule is not None:
                out.append(ExpectedViolation(rule))
            continue
        fields = reader.mapping(child, item_path, allowed=_MATCHER_KEYS, required=("rule",))
        if fields is None:
            continue
        values: dict[str, str | None] = {}
        for key in _MATCHER_KEYS:
            values[key] = (
                reader.string(fields[key], join(item_path, key)) if key in fields else None
            )
        action = None
        if "action" in fields:
            chosen = reader.choice(fields["action"], join(item_path, "action"), ACTIONS)
            action = next((a for a in ACTIONS if a == chosen), None)
        if values["rule"] is not None:
            out.append(
                ExpectedViolation(values["rule"], action, values["check"], values["message"])
            )
    return tuple(out)


def _name(
    reader: Reader, fields: dict[str, Node], path: str, names: dict[str, Location]
) -> str | None:
    """The case's name, which no earlier case in the file may have (`names`: where each was)."""
    name = reader.string(fields["name"], join(path, "name")) if "name" in fields else None
    if name is not None and name in names:
        first = names[name]
        reader.error(
            fields["name"],
            join(path, "name"),
            f"duplicate case name {name!r} (first at line {first.line})",
        )
    elif name is not None:
        names[name] = fields["name"].location
    return name


def _image(
    reader: Reader, fields: dict[str, Node], path: str
) -> tuple[str | None, reference.Reference | None]:
    """The case's image as written, and as parsed (None when it is not a valid reference)."""
    ref = None
    image_text = reader.string(fields["image"], join(path, "image")) if "image" in fields else None
    if image_text is not None:
        try:
            ref = reference.parse(image_text)
        except InvalidReference as exc:
            reader.error(fields["image"], join(path, "image"), exc.problem)
    return image_text, ref


def _case(
    reader: Reader,
    node: Node,
    path: str,
    *,
    now: datetime,
    resolver: factsfile.FactsResolver,
    names: dict[str, Location],
) -> Case | None:
    """One case; None when it is not valid (its problems went to `reader`)."""
    fields = reader.mapping(node, path, allowed=_CASE_KEYS, required=("name", "image", "expect"))
    if fields is None:
        return None
    name = _name(reader, fields, path, names)
    image_text, ref = _image(reader, fields, path)
    namespace = (
        reader.string(fields["namespace"], join(path, "namespace"))
        if "namespace" in fields
        else None
    )
    when = _when(reader, fields["now"], join(path, "now")) if "now" in fields else now
    expect = (
        reader.choice(fields["expect"], join(path, "expect"), VERDICTS)
        if "expect" in fields
        else None
    )
    expected = (
        _expected(reader, fields["violations"], join(path, "violations"))
        if "violations" in fields
        else None
    )
    verdict = next((v for v in VERDICTS if v == expect), None)
    if name is None or ref is None or image_text is None or when is None or verdict is None:
        return None
    if "namespace" in fields and namespace is None:
        return None
    if "violations" in fields and expected is None:
        return None
    return Case(
        name=name,
        image=ref,
        image_text=image_text,
        namespace=namespace,
        now=when,
        expect=verdict,
        violations=expected,
        facts=resolver,
        location=node.location,
    )


def parse_cases(text: str, filename: str, *, now: datetime) -> list[Case]:
    """The cases of one rule-test file; raise RuleTestError listing every located problem.

    `now` is the decision time of cases for which the file gives none."""
    root, syntax = load(text, filename)
    reader = Reader(CaseFileError)
    reader.errors.extend(syntax)
    cases: list[Case] = []
    if root is None:
        if not syntax:
            reader.errors.append(
                CaseFileError("empty rule-test file", location=Location(filename, 1, 1))
            )
        raise RuleTestError(reader.errors)
    top = (
        reader.mapping(root, "", allowed=_TOP_KEYS, required=("apiVersion", "kind", "cases")) or {}
    )
    if "apiVersion" in top:
        reader.choice(top["apiVersion"], "apiVersion", (API_VERSION,))
    if "kind" in top:
        reader.choice(top["kind"], "kind", (KIND,))
    file_now = _when(reader, top["now"], "now") if "now" in top else now
    # the facts file's own parser, so both files mean the same
    facts = factsfile.facts_by_reference(reader, top["facts"], "facts") if "facts" in top else {}
    resolver = factsfile.FactsResolver(facts, source=f"facts of {filename}")
    names: dict[str, Location] = {}
    if "cases" in top:
        for case_path, child in reader.items(top["cases"], "cases"):
            case = _case(
                reader, child, case_path, now=file_now or now, resolver=resolver, names=names
            )
            if case is not None:
                cases.append(case)
    if reader.errors:
        raise RuleTestError(reader.errors)
    return cases


def _judge(ruleset: RuleSet, case: Case) -> CaseResult:
    service = Service(ruleset, case.facts, now=lambda: case.now)
    decision = service.decide([Item(case.image, case.namespace)], deadline=Deadline.never())[0]
    if case.violations is None:
        return CaseResult(case, decision, (), ())
    missing = tuple(
        e for e in case.violations if not any(e.matches(v) for v in decision.violations)
    )
    unexpected = tuple(
        v for v in decision.violations if not any(e.matches(v) for e in case.violations)
    )
    return CaseResult(case, decision, missing, unexpected)


def run_tests(
    ruleset: RuleSet, case_files: Sequence[tuple[str, str]], *, now: datetime
) -> TestReport:
    """Judge every case of the given `(filename, text)` rule-test files with `ruleset`.

    Raises RuleTestError (every problem of every file) before judging anything if a file is
    malformed. `now` is the decision time for files and cases that give none."""
    errors: list[ConfigError] = []
    cases: list[Case] = []
    for filename, text in case_files:
        try:
            cases.extend(parse_cases(text, filename, now=now))
        except RuleTestError as exc:
            errors.extend(exc.errors)
    if errors:
        raise RuleTestError(errors)
    return TestReport(tuple(_judge(ruleset, case) for case in cases))


def read_case_files(paths: Sequence[str | Path]) -> list[tuple[str, str]]:
    """`(filename, text)` of each file given, and of each .yaml/.yml file under each directory
    given (recursively, sorted); raise InputError for a file that cannot be read."""
    files: list[Path] = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml")))
        else:
            files.append(path)
    out = []
    for file in files:
        try:
            out.append((str(file), file.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"{file}: cannot read rule-test file: {exc}") from exc
    if not out:
        raise InputError("no rule-test files given (or the directories hold no .yaml files)")
    return out


def _violation_line(v: Violation) -> str:
    return f"{v.rule} ({v.action}, {v.check}): {v.message}"


def _verdict_text(verdict: Verdict, violations: Sequence[str]) -> str:
    return f"{verdict}, violations: {', '.join(violations) if violations else 'none'}"


def format_report(report: TestReport) -> str:
    """Per case `PASS name` or `FAIL file:line name` with expected vs actual verdict and
    violations (rule by rule); the last line is `N passed, M failed`."""
    lines: list[str] = []
    current = ""
    for r in report.results:
        case = r.case
        if case.location.file != current:
            current = case.location.file
            lines.append(current)
        if r.passed:
            lines.append(f"  PASS {case.name}")
            continue
        lines.append(f"  FAIL {case.location.file}:{case.location.line} {case.name}")
        lines.append(f"       image:    {case.image_text}")
        expected_rules = [str(e) for e in case.violations] if case.violations is not None else []
        expected = (
            _verdict_text(case.expect, expected_rules)
            if case.violations is not None
            else case.expect
        )
        actual_rules = [f"{v.rule} ({v.action})" for v in r.decision.violations]
        lines.append(f"       expected: {expected}")
        lines.append(f"       actual:   {_verdict_text(r.verdict, actual_rules)}")
        for e in r.missing:
            lines.append(f"       - missing:    {e}")
        for v in r.unexpected:
            lines.append(f"       + unexpected: {_violation_line(v)}")
        if r.verdict != case.expect:
            for v in r.decision.violations:
                if v not in r.unexpected:
                    lines.append(f"       · found:      {_violation_line(v)}")
    lines.append(f"{report.passed} passed, {report.failed} failed")
    return "\n".join(lines) + "\n"
