"""`--format junit`: JUnit XML, a `testsuite` per file and a `testcase` per image; a denied
image's case fails, its other findings go to `system-out`."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence

from policy.reports.results import (
    TOOL_NAME,
    Result,
    by_file,
    findings_of,
    has_file,
    source,
    summary,
)
from policy.scanners import FoundImage

# Characters XML 1.0 cannot hold at all (C0 controls but tab, LF and CR; surrogates; U+FFFE/F).
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _xml(text: str) -> str:
    return _XML_INVALID.sub("\ufffd", text)


def _case_name(found: FoundImage) -> str:
    return f"{found.image}@{found.line}" if found.line else found.image


def render(results: Sequence[Result]) -> str:
    """The JUnit XML document of `results`."""
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
    for file, items in by_file(results).items():
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
            _testcase(suite, file, r)
    ET.indent(top)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(top, encoding="unicode") + "\n"


def _testcase(suite: ET.Element, file: str, r: Result) -> None:
    """The image's case in `suite`: failed by its denials (the first named in the message),
    with its other findings in `system-out`."""
    case = ET.SubElement(
        suite,
        "testcase",
        {"name": _xml(_case_name(r.found)), "classname": _xml(file), "time": "0"},
    )
    if has_file(r.found):
        case.set("file", _xml(file))
        case.set("line", str(r.found.line))
    findings = findings_of(r)
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
                [f"{source(r.found)}: {r.found.image}"]
                + [f"{f.action} {f.rule} ({f.check}): {f.described}" for f in denials]
            )
        )
    others = [f for f in findings if f.action != "deny"]
    if others:
        out = ET.SubElement(case, "system-out")
        out.text = _xml("\n".join(f"{f.action} {f.rule}: {f.described}" for f in others))
