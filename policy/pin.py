"""Pin image references to digests by rewriting only the image text of a file (pure core).

`image-policy pin` turns `nginx:1.25` into `nginx:1.25@sha256:…` in Kubernetes YAML, compose
files and Dockerfiles. Files are not re-serialized: each image is replaced in place, at the
line and column its scanner reported, after checking that the old text is really there, so
comments, key order, quoting, indentation, line endings (CRLF included) and the final newline
stay byte for byte as they were.

Lines are counted at `\\r\\n`, `\\r` and `\\n`, and columns in characters, as the scanners
count them.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from policy import reference
from policy.errors import InputError, InvalidReference
from policy.scanners import FoundImage

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
# YAML node properties (an anchor `&a`, a tag `!t`) that may stand before the scalar: a node's
# position is where its properties start.
_PROPERTIES = re.compile(r"(?:[&!][^ \t\r\n]*[ \t]+)+")
_PLAIN_END = " \t,]}"
_UNSAFE_PLAIN = re.compile(r"[\s#,\[\]{}\"']")


@dataclass(frozen=True)
class Edit:
    """Replace `old`, written at 1-based `line` and `column`, by `new`.

    The column points at the image text, or at its opening quote (a quoted YAML scalar, a
    quoted Dockerfile token), or at the YAML anchor or tag standing before it.
    """

    line: int
    column: int
    old: str
    new: str


SkipReason = Literal["pinned", "no-digest", "variables", "invalid", "not-in-file", "not-plain"]


@dataclass(frozen=True)
class Skipped:
    """An image `pin_file` left as it was: `why` as a code, `reason` in words."""

    found: FoundImage
    why: SkipReason
    reason: str


@dataclass(frozen=True)
class PinResult:
    """What `pin_file` did: the new text (equal to the input when nothing was pinned), the
    edits applied (one per distinct image location) and the images skipped, in input order."""

    text: str
    edits: tuple[Edit, ...]
    skipped: tuple[Skipped, ...]

    @property
    def changed(self) -> bool:
        return bool(self.edits)


def pinned_reference(written: str, digest: str) -> str:
    """`written` pinned to `digest`, keeping what the user wrote: `nginx:1.25` →
    `nginx:1.25@sha256:…` (never normalized to `docker.io/library/nginx`).

    A reference that already has a digest is returned unchanged: pinning fixes tags, it does
    not move pins. Raises InvalidReference for an invalid reference or digest.
    """
    parsed = reference.parse(written)
    if parsed.digest is not None:
        return written
    parsed.with_digest(digest)  # validates the digest
    return f"{written}@{digest}"


def apply_edits(text: str, edits: Sequence[Edit], *, filename: str = "<input>") -> str:
    """`text` with every edit applied and nothing else changed.

    Raises InputError, naming `filename:line:column`, when an edit's old text is not at its
    location, when the new text cannot stand where the old one was (a quote inside a quoted
    scalar, a blank in a plain one), or when two different edits overlap. The same edit given
    twice (one YAML anchor used by several containers) is applied once.
    """
    lines = _Lines(text)
    spans: dict[tuple[int, int], str] = {}
    for edit in edits:
        start, end, quote = lines.span(edit, filename)
        _check_new(edit, quote, filename)
        previous = spans.setdefault((start, end), edit.new)
        if previous != edit.new:
            raise InputError(
                f"{filename}:{edit.line}:{edit.column}: two different replacements for "
                f"{edit.old!r}: {previous!r} and {edit.new!r}"
            )
    out: list[str] = []
    position = 0
    for (start, end), new in sorted(spans.items()):
        if start < position:
            raise InputError(f"{filename}: overlapping edits at character {start}")
        out.append(text[position:start])
        out.append(new)
        position = end
    out.append(text[position:])
    return "".join(out)


def unified_diff(path: str, before: str, after: str) -> str:
    """A unified diff from `before` to `after`, headed `--- a/path` / `+++ b/path` like git
    ("" when they are equal). A last line without a newline is marked as git marks it."""
    name = path.lstrip("/").removeprefix("./")
    out: list[str] = []
    for line in difflib.unified_diff(
        _split_lines(before), _split_lines(after), fromfile=f"a/{name}", tofile=f"b/{name}"
    ):
        out.append(line)
        if not line.endswith(("\n", "\r")):
            out.append("\n\\ No newline at end of file\n")
    return "".join(out)


def pin_file(
    path: str,
    text: str,
    found: Sequence[FoundImage],
    digests: Mapping[str, str],
) -> PinResult:
    """Pin the images `found` in `text` (by the scanner of `path`) to their digests.

    `digests` maps an image as written (`FoundImage.image`) to its digest. Skipped, with a
    reason, are: images not written in the file (`--image`), images built from variables
    (compose interpolation, Dockerfile ARGs: pin the value the variable gets instead), invalid
    references, images already pinned, images with no digest in `digests`, and images not
    written as one plain or quoted token (a YAML block scalar, YAML escapes, a token split by
    a continuation). Everything else in the file is left as it was.
    """
    lines = _Lines(text)
    edits: dict[tuple[int, int], Edit] = {}
    skipped: list[Skipped] = []
    for item in found:
        pinned = _pin_one(item, digests, lines, path)
        if isinstance(pinned, Skipped):
            skipped.append(pinned)
        else:
            span, edit = pinned
            edits.setdefault(span, edit)
    applied = tuple(edits.values())
    return PinResult(apply_edits(text, applied, filename=path), applied, tuple(skipped))


def _pin_one(
    item: FoundImage, digests: Mapping[str, str], lines: _Lines, path: str
) -> tuple[tuple[int, int], Edit] | Skipped:
    """The edit pinning `item` and the span of text it replaces, or why it is skipped."""
    if item.line < 1:
        return Skipped(item, "not-in-file", "not written in a file")
    if item.template is not None:
        return Skipped(
            item,
            "variables",
            f"built from variables ({item.template}); pin the value the variables get",
        )
    try:
        parsed = reference.parse(item.image)
    except InvalidReference as exc:
        return Skipped(item, "invalid", f"invalid image reference: {exc.problem}")
    if parsed.digest is not None:
        return Skipped(item, "pinned", "already pinned to a digest")
    digest = digests.get(item.image)
    if digest is None:
        return Skipped(item, "no-digest", "no digest was resolved for it")
    try:
        edit = Edit(item.line, item.column, item.image, pinned_reference(item.image, digest))
    except InvalidReference as exc:
        return Skipped(item, "invalid", f"cannot pin to {digest!r}: {exc.problem}")
    try:
        span = lines.span(edit, path)
        _check_new(edit, span[2], path)
    except InputError:
        return Skipped(
            item,
            "not-plain",
            "not written as one plain or quoted token here (a block scalar, escapes or "
            "a line continuation); pin it by hand",
        )
    return span[:2], edit


class _Lines:
    """Offsets of the lines of a text, to turn (line, column) into an index."""

    def __init__(self, text: str) -> None:
        self.text = text
        # The scanners count line 1's columns after a byte order mark, as editors show them.
        self.starts = [1 if text.startswith("\ufeff") else 0]
        self.ends: list[int] = []
        for match in _LINE_BREAK.finditer(text):
            self.ends.append(match.start())
            self.starts.append(match.end())
        self.ends.append(len(text))

    def span(self, edit: Edit, filename: str) -> tuple[int, int, str]:
        """(start, end) of the edit's old text, and the quote around it ("" for none)."""
        where = f"{filename}:{edit.line}:{edit.column}"
        if not 1 <= edit.line <= len(self.starts):
            raise InputError(f"{where}: no such line (the file has {len(self.starts)})")
        line_start, line_end = self.starts[edit.line - 1], self.ends[edit.line - 1]
        position = line_start + edit.column - 1
        if edit.column < 1 or position > line_end:
            raise InputError(f"{where}: no such column")
        properties = _PROPERTIES.match(self.text, position, line_end)
        if properties is not None:
            position = properties.end()
        quote = self.text[position : position + 1]
        if quote in ("'", '"'):
            start = position + 1
            end = start + len(edit.old)
            ok = self.text[start:end] == edit.old and self.text[end : end + 1] == quote
        else:
            quote = ""
            start, end = position, position + len(edit.old)
            ok = self.text[start:end] == edit.old and (
                end >= line_end or self.text[end] in _PLAIN_END
            )
        if not ok or end > line_end:
            found = self.text[position:line_end]
            raise InputError(f"{where}: expected the image {edit.old!r} here, found {found!r}")
        return start, end, quote


def _check_new(edit: Edit, quote: str, filename: str) -> None:
    bad = (
        (quote == '"' and ('"' in edit.new or "\\" in edit.new))
        or (quote == "'" and "'" in edit.new)
        or (not quote and _UNSAFE_PLAIN.search(edit.new) is not None)
        or "\n" in edit.new
        or "\r" in edit.new
    )
    if bad:
        raise InputError(
            f"{filename}:{edit.line}:{edit.column}: {edit.new!r} cannot replace {edit.old!r} "
            "without changing the quoting"
        )


def _split_lines(text: str) -> list[str]:
    """Lines with their endings (`\\r\\n`, `\\r`, `\\n`), the last one possibly without."""
    lines: list[str] = []
    start = 0
    for match in _LINE_BREAK.finditer(text):
        lines.append(text[start : match.end()])
        start = match.end()
    if start < len(text):
        lines.append(text[start:])
    return lines
