"""`--format text`: images grouped by file, one line per violation (`✗ deny`, `! warn`,
`· audit`), then the summary; ANSI colour on request."""

from __future__ import annotations

from collections.abc import Sequence

from policy.reports.results import Result, by_file, counts_line, findings_of
from policy.rules import Action
from policy.scanners import Skipped

_MARKS: dict[Action, str] = {"deny": "✗", "warn": "!", "audit": "·"}

_ANSI = {
    "bold": "\x1b[1m",
    "red": "\x1b[31m",
    "green": "\x1b[32m",
    "yellow": "\x1b[33m",
    "dim": "\x1b[2m",
    "reset": "\x1b[0m",
}
_ACTION_COLOUR: dict[Action, str] = {"deny": "red", "warn": "yellow", "audit": "dim"}


def _written(r: Result) -> str:
    """The image as written, with the canonical reference it was judged as beside it when
    that is not merely its long or short form (`GHCR.IO:443/a/b:1 (ghcr.io/a/b:1)`)."""
    if r.decision is None:
        return r.found.image
    ref = r.decision.reference
    if r.found.image in (str(ref), ref.familiar):
        return r.found.image
    return f"{r.found.image} ({ref})"


def render(
    results: Sequence[Result], color: bool, quiet: bool, skipped: Sequence[Skipped] = ()
) -> str:
    """The text report: each file's images with their findings, skipped files, then the
    counts; `quiet` leaves out images without findings, `color` paints with ANSI codes."""

    def paint(text: str, *styles: str) -> str:
        if not color:
            return text
        return "".join(_ANSI[s] for s in styles) + text + _ANSI["reset"]

    lines: list[str] = []
    shown = [r for r in results if not quiet or findings_of(r)]
    for file, items in by_file(shown).items():
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
    summary_line = counts_line(results)
    if skipped:
        summary_line += f"; {len(skipped)} file{'s' if len(skipped) != 1 else ''} skipped"
    lines.append(summary_line)
    return "\n".join(lines) + "\n"
