"""Find the images a Dockerfile (or Containerfile) builds from, each located at its token.

The file is read as BuildKit's Dockerfile frontend reads it: parser directives at the top
(`# escape=`` ` `` changes the escape character), line continuations with the escape
character (comment and empty lines inside a continuation are dropped), comment lines,
case-insensitive instructions, and heredocs (`RUN <<EOF` … `EOF`), whose bodies are not
instructions. Lines are split at `\\n`, a trailing `\\r` dropped.

Images come from:
- `FROM [--platform=P] image [AS name]`: field "from", name the stage name (lowercase, as
  BuildKit compares them) or "", `platform` the flag as written (`$BUILDPLATFORM` is kept).
  `scratch` and a name of an earlier stage are not images and are skipped.
- `COPY --from=X` / `ADD --from=X` (field "copy-from") and `RUN --mount=…,from=X,…` (field
  "mount-from"), when X is neither a stage name nor a stage index; name is the stage holding
  the instruction.

Variables in those values are substituted as BuildKit does: `$VAR`, `${VAR}`,
`${VAR:-word}`, `${VAR-word}`, `${VAR:+word}`, `${VAR+word}`, `${VAR:?msg}`, `${VAR?msg}`,
with quotes removed and the escape character honoured. A `FROM` sees the ARGs declared before
the first `FROM` (the global scope); a `--from` sees the ARGs declared in its stage (a bare
`ARG NAME` there takes the global value; ENV values are not tracked). A `build_args` value
overrides the default of a declared ARG and gives the automatic platform ARGs
(`TARGETPLATFORM`, `BUILDARCH`, …) a value; BuildKit ignores build args for undeclared names,
and so does this scanner. Where BuildKit would substitute an empty string for a variable
without a value, this scanner reports the variable instead of guessing: an image must be known
to be judged.

A substituted value may be at most `dockerargs.MAX_EXPANSION` characters long: ARGs that double each
other (`ARG A1=${A0}${A0}`, `ARG A2=${A1}${A1}`, …) would otherwise grow exponentially. The
first instruction over it stops the scan with `file:line:col: ARG A17: …`.
"""

from __future__ import annotations

import re
import types
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from policy.errors import InputError
from policy.scanners import FoundImage
from policy.scanners.dockerargs import Expansion, Lookup, TooLong, scoped

_NO_ARGS: Mapping[str, str] = types.MappingProxyType({})

_DIRECTIVE = re.compile(r"#[ \t]*([A-Za-z][A-Za-z0-9_-]*)[ \t]*=[ \t]*(\S*)[ \t]*")
_COMMENT = re.compile(r"[ \t]*#")
_KEYWORD = re.compile(r"(\S+)[ \t]*")
# A heredoc opener: a word `<<EOF`, `<<-EOF`, `<<"EOF"` (quoted `<<` is not one).
_HEREDOC = re.compile(r"<<(-?)([\"']?)([A-Za-z0-9_.-]+)\2")
_HEREDOC_INSTRUCTIONS = frozenset({"run", "copy", "add"})


@dataclass(frozen=True)
class _Char:
    """One character of an instruction and where it was written (1-based)."""

    char: str
    line: int
    column: int


@dataclass(frozen=True)
class _Word:
    """A token and where its first character was written."""

    text: str
    line: int
    column: int

    def at(self, offset: int) -> _Word:
        """The rest of this token from `offset` (on the same physical line)."""
        return _Word(self.text[offset:], self.line, self.column + offset)

    def prefix(self, length: int) -> _Word:
        """The first `length` characters of this token."""
        return _Word(self.text[:length], self.line, self.column)


@dataclass(frozen=True)
class _Instruction:
    keyword: str  # lowercase
    line: int
    column: int
    args: tuple[_Char, ...]

    def words(self) -> list[_Word]:
        """The arguments split at blanks, as BuildKit splits FROM and the flags."""
        words: list[_Word] = []
        current: list[_Char] = []
        for char in (*self.args, None):
            if char is None or char.char in " \t":
                if current:
                    text = "".join(c.char for c in current)
                    words.append(_Word(text, current[0].line, current[0].column))
                    current = []
            else:
                current.append(char)
        return words


def scan(text: str, filename: str, *, build_args: Mapping[str, str] = _NO_ARGS) -> list[FoundImage]:
    """Every image the Dockerfile `text` pulls, in file order, kind "Dockerfile".

    An image that needed variable substitution keeps its token as written in
    `FoundImage.template`. Raises InputError, every problem of the file at once, one per line
    as `file:line:col: FROM: …`, for a malformed `FROM` and for each variable without a value.
    """
    lines = _lines(text)
    escape = escape_of(lines)
    instructions = list(_instructions(lines, escape))
    stage_names = {name for ins in instructions if (name := _stage_name(ins))}
    problems: list[str] = []
    found: list[FoundImage] = []
    global_args: dict[str, str | None] = {}
    stage_args: dict[str, str | None] | None = None
    earlier_stages: set[str] = set()
    stage = ""
    global_lookup = scoped(global_args, build_args, "before the first FROM")

    for ins in instructions:
        if ins.keyword == "arg":
            scope, lookup, inherited = global_args, global_lookup, None
            if stage_args is not None:
                scope, inherited = stage_args, global_args
                lookup = scoped(stage_args, build_args, "in this stage")
            try:
                _declare(ins, scope, lookup, build_args, escape, inherited=inherited)
            except TooLong as exc:
                raise InputError(f"{filename}:{ins.line}:{ins.column}: ARG {exc}") from None
            continue
        if ins.keyword == "from":
            opened = _from(ins, filename, escape, global_lookup, earlier_stages, found, problems)
            stage = stage if opened is None else opened
            stage_args = {}
            continue
        if stage_args is None:
            continue
        stage_lookup = scoped(stage_args, build_args, "in this stage")
        for word, what, field_name in _from_flags(ins):
            expansion = Expansion(escape, stage_lookup)
            try:
                value = expansion.word(word.text)
            except TooLong as exc:
                raise InputError(f"{_where(filename, word)}: {what}: {exc}") from None
            if expansion.problems:
                problems.extend(
                    f"{_where(filename, word)}: {what}: {p}" for p in expansion.problems
                )
            elif value and not value.isdigit() and value.lower() not in stage_names:
                found.append(_found(word, value, filename, stage, field_name, expansion, None))
    if problems:
        raise InputError("\n".join(problems))
    return found


def _where(filename: str, word: _Word) -> str:
    """`file:line:col` of `word`, which a message about it starts with."""
    return f"{filename}:{word.line}:{word.column}"


def _from(
    ins: _Instruction,
    filename: str,
    escape: str,
    lookup: Lookup,
    earlier_stages: set[str],
    found: list[FoundImage],
    problems: list[str],
) -> str | None:
    """Read one FROM: its image goes to `found` (unless `scratch` or an earlier stage), its
    problems to `problems`. The name of the stage it opens ("" unnamed); None if malformed."""
    flags = [w for w in ins.words() if w.text.startswith("--")]
    args = [w for w in ins.words() if not w.text.startswith("--")]
    if len(args) not in (1, 3) or (len(args) == 3 and args[1].text.lower() != "as"):
        got = " ".join(w.text for w in args) or "nothing"
        problems.append(
            f"{filename}:{ins.line}:{ins.column}: FROM: expected "
            f"`FROM [--platform=P] image [AS name]`, got {got!r}"
        )
        return None
    stage = args[2].text.lower() if len(args) == 3 else ""
    platform = next(
        (f.text.partition("=")[2] for f in flags if f.text.startswith("--platform=")),
        None,
    )
    expansion = Expansion(escape, lookup)
    try:
        value = expansion.word(args[0].text)
    except TooLong as exc:
        raise InputError(f"{_where(filename, args[0])}: FROM: {exc}") from None
    if expansion.problems:
        problems.extend(f"{_where(filename, args[0])}: FROM: {p}" for p in expansion.problems)
    elif value.lower() != "scratch" and value.lower() not in earlier_stages:
        found.append(_found(args[0], value, filename, stage, "from", expansion, platform))
    if stage:
        earlier_stages.add(stage)
    return stage


def escape_of(lines: Sequence[str]) -> str:
    """The escape character set by an `# escape=` parser directive, else a backslash."""
    escape = "\\"
    for line in lines:
        match = _DIRECTIVE.fullmatch(line)
        if match is None:
            break
        if match[1].lower() == "escape" and match[2] in ("\\", "`"):
            escape = match[2]
    return escape


def instructions(text: str) -> list[str]:
    """The keywords (uppercase) of the instructions of `text`, in order."""
    lines = _lines(text)
    return [ins.keyword.upper() for ins in _instructions(lines, escape_of(lines))]


def _lines(text: str) -> list[str]:
    return [line.removesuffix("\r") for line in text.removeprefix("\ufeff").split("\n")]


def _instructions(lines: Sequence[str], escape: str) -> Iterator[_Instruction]:
    """The instructions of a Dockerfile, continuations joined, heredoc bodies skipped."""
    i = 0
    while i < len(lines) and _DIRECTIVE.fullmatch(lines[i]):
        i += 1
    while i < len(lines):
        line = lines[i]
        i += 1
        stripped = line.lstrip(" \t")
        if not stripped or stripped.startswith("#"):
            continue
        indent = len(line) - len(stripped)
        chars, more = _continued(
            [_Char(c, i, indent + n + 1) for n, c in enumerate(stripped)], escape
        )
        while more and i < len(lines):
            line = lines[i]
            i += 1
            if _COMMENT.match(line) or not line.strip():
                continue
            continuation, more = _continued(
                [_Char(c, i, n + 1) for n, c in enumerate(line)], escape
            )
            chars.extend(continuation)
        text = "".join(c.char for c in chars)
        keyword = _KEYWORD.match(text)
        if keyword is None:  # pragma: no cover - `stripped` starts with a non-blank
            continue
        ins = _Instruction(
            keyword[1].lower(), chars[0].line, chars[0].column, tuple(chars[keyword.end() :])
        )
        yield ins
        if ins.keyword in _HEREDOC_INSTRUCTIONS:
            heredocs = (_HEREDOC.fullmatch(w) for w in _shell_words(text[keyword.end() :], escape))
            for heredoc in filter(None, heredocs):
                strip_tabs, terminator = heredoc[1] == "-", heredoc[3]
                while i < len(lines):
                    body = lines[i].lstrip("\t") if strip_tabs else lines[i]
                    i += 1
                    if body == terminator:
                        break


def _continued(chars: list[_Char], escape: str) -> tuple[list[_Char], bool]:
    """The line without its continuation mark, and whether it continues on the next line."""
    end = len(chars)
    while end and chars[end - 1].char in " \t":
        end -= 1
    if end and chars[end - 1].char == escape:
        return chars[: end - 1], True
    return chars, False


def _stage_name(ins: _Instruction) -> str | None:
    if ins.keyword != "from":
        return None
    args = [w for w in ins.words() if not w.text.startswith("--")]
    if len(args) == 3 and args[1].text.lower() == "as":
        return args[2].text.lower()
    return None


def _from_flags(ins: _Instruction) -> Iterator[tuple[_Word, str, str]]:
    """(value, what to call it in messages, field) for `--from=` and `--mount=…from=…`."""
    for word in ins.words():
        if not word.text.startswith("--"):
            break
        if ins.keyword in ("copy", "add") and word.text.startswith("--from="):
            yield word.at(len("--from=")), f"{ins.keyword.upper()} --from", "copy-from"
        elif ins.keyword == "run" and word.text.startswith("--mount="):
            offset = len("--mount=")
            for part in word.text[offset:].split(","):
                if part.startswith("from="):
                    value = word.at(offset + len("from=")).prefix(len(part) - len("from="))
                    yield value, "RUN --mount from", "mount-from"
                offset += len(part) + 1


def _declare(
    ins: _Instruction,
    scope: dict[str, str | None],
    lookup: Lookup,
    build_args: Mapping[str, str],
    escape: str,
    *,
    inherited: Mapping[str, str | None] | None,
) -> None:
    """Declare the ARGs of one `ARG a=1 b …` instruction in `scope`.

    A build arg wins over a default; a bare `ARG name` in a stage takes the global value
    (`inherited`). A default whose own variables have no value leaves the ARG without one.
    """
    for word in _shell_words("".join(c.char for c in ins.args), escape):
        name, equals, default = word.partition("=")
        if name in build_args:
            scope[name] = build_args[name]
        elif equals:
            expansion = Expansion(escape, lookup)
            try:
                value = expansion.word(default)
            except TooLong as exc:
                raise TooLong(f"{name}: {exc} (ARGs that double each other?)") from None
            scope[name] = None if expansion.problems else value
        elif inherited is not None and name in inherited:
            scope[name] = inherited[name]
        else:
            scope[name] = None


def _shell_words(text: str, escape: str) -> list[str]:
    """`text` split at blanks outside quotes, quotes and escapes kept (expanded later)."""
    words: list[str] = []
    current: list[str] = []
    quote = ""
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == escape and quote != "'" and i + 1 < len(text):
            current.append(text[i : i + 2])
            i += 2
            continue
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in " \t":
            if current:
                words.append("".join(current))
                current = []
            i += 1
            continue
        current.append(ch)
        i += 1
    if current:
        words.append("".join(current))
    return words


def _found(
    at: _Word,
    value: str,
    filename: str,
    stage: str,
    field_name: str,
    expansion: Expansion,
    platform: str | None,
) -> FoundImage:
    return FoundImage(
        image=value,
        file=filename,
        line=at.line,
        column=at.column,
        kind="Dockerfile",
        name=stage,
        namespace=None,
        container="",
        field=field_name,
        template=at.text if expansion.substituted else None,
        platform=platform,
    )
