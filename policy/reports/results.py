"""What every report format is made of: a `Result` (an image found, with its decision), its
findings (violations and expired exceptions), where it was found, and the summary counts."""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import PurePath, PurePosixPath, PureWindowsPath

from policy.evaluate import ImageDecision, Violation
from policy.rules import Action
from policy.scanners import FoundImage

TOOL_NAME = "image-policy"
REFERENCE_RULE = "(reference)"
EXPIRED_EXCEPTION_RULE = "(expired-exception)"

# "Files" that are not files: images given on the command line and manifests read from stdin.
_NO_FILE = ("--image", "<stdin>")


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
class Finding:
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


def findings_of(result: Result) -> list[Finding]:
    """What to report about the image: its violations, then its expired exceptions."""
    out = [Finding(v.rule, v.check, v.action, v.message, v.detail) for v in violations(result)]
    if result.decision is not None:
        out.extend(
            Finding(EXPIRED_EXCEPTION_RULE, "exception", "warn", w)
            for w in result.decision.warnings
        )
    return out


def source(found: FoundImage) -> str:
    """`file:line:column` where the image was found, or the file alone when no line is known."""
    return found.location if found.line else found.file


def has_file(found: FoundImage) -> bool:
    """Whether the image came from a file (not `--image` nor standard input)."""
    return found.file not in _NO_FILE


def by_file(results: Iterable[Result]) -> dict[str, list[Result]]:
    """The results grouped by file, in the order the files were first met."""
    groups: dict[str, list[Result]] = {}
    for r in results:
        groups.setdefault(r.found.file, []).append(r)
    return groups


def as_path(text: str) -> PurePath:
    """`text` as a Windows path when it holds a backslash, else a POSIX path."""
    return PureWindowsPath(text) if "\\" in text else PurePosixPath(text)


def relative(file: str, root: str | None) -> str:
    """`file` with forward slashes, relative to `root` when it lies under it."""
    path = as_path(file)
    if root is not None and path.is_absolute() and path.is_relative_to(as_path(root)):
        path = path.relative_to(as_path(root))
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


def counts_line(results: Sequence[Result]) -> str:
    """`N images, A allowed, D denied`."""
    counts = summary(results)
    return f"{counts['images']} images, {counts['allowed']} allowed, {counts['denied']} denied"
