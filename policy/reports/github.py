"""`--format github`: GitHub Actions workflow commands (`::error file=…,line=…::message`) that
annotate the offending lines of a pull request."""

from __future__ import annotations

from collections.abc import Sequence

from policy.reports.results import TOOL_NAME, Result, counts_line, findings_of, has_file, relative
from policy.rules import Action

_COMMANDS: dict[Action, str] = {"deny": "error", "warn": "warning", "audit": "notice"}


def escape_data(text: str) -> str:
    """A workflow command's message, escaped as @actions/core does (`%`, CR, LF)."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    """A workflow command's property value: also `:` and `,`, which delimit properties."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def render(results: Sequence[Result], root: str | None) -> str:
    """One workflow command per finding (file and line when known), then the counts."""
    lines: list[str] = []
    for r in results:
        props: list[tuple[str, str]] = []
        if has_file(r.found):
            props.append(("file", relative(r.found.file, root)))
        if r.found.line:
            props.append(("line", str(r.found.line)))
            if r.found.column:
                props.append(("col", str(r.found.column)))
        for finding in findings_of(r):
            title = ("title", f"{TOOL_NAME} {finding.rule}")
            rendered = ",".join(f"{k}={escape_property(v)}" for k, v in [*props, title])
            message = finding.described
            if not has_file(r.found):
                message = f"{r.found.image}: {message}"
            lines.append(f"::{_COMMANDS[finding.action]} {rendered}::{escape_data(message)}")
    lines.append(counts_line(results))
    return "\n".join(lines) + "\n"
