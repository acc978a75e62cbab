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

One module a format (`text`, `jsondoc`, `sarif`, `junit`, `github`), over `results`: the
`Result` of an image and what every format takes from it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from policy.reports import github, jsondoc, junit, sarif, text
from policy.reports.github import escape_data, escape_property
from policy.reports.jsondoc import json_document
from policy.reports.results import (
    EXPIRED_EXCEPTION_RULE,
    REFERENCE_RULE,
    TOOL_NAME,
    Result,
    summary,
    violations,
)
from policy.reports.sarif import FINGERPRINT_KEY, SARIF_SCHEMA
from policy.rules import RuleSet
from policy.scanners import Skipped

__all__ = [
    "EXPIRED_EXCEPTION_RULE",
    "FINGERPRINT_KEY",
    "FORMATS",
    "REFERENCE_RULE",
    "SARIF_SCHEMA",
    "TOOL_NAME",
    "Format",
    "Result",
    "escape_data",
    "escape_property",
    "json_document",
    "render",
    "summary",
    "violations",
]

Format = Literal["text", "json", "sarif", "junit", "github"]
FORMATS: tuple[Format, ...] = ("text", "json", "sarif", "junit", "github")


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
        return text.render(results, color, quiet, skipped)
    if format == "json":
        return jsondoc.render(results, skipped)
    if format == "sarif":
        return sarif.render(results, ruleset, tool_version, root, information_uri)
    if format == "junit":
        return junit.render(results)
    if format == "github":
        return github.render(results, root)
    raise ValueError(f"unknown report format {format!r}; expected one of {', '.join(FORMATS)}")
