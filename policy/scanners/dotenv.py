"""Read compose's `.env` files (pure: text in, variables out), as `docker compose` does.

`docker compose` reads `.env` in the project directory (the first compose file's), or the
files given with `--env-file` instead (later files override earlier ones), and interpolates
the compose file from the shell environment first, then those files. Their syntax (compose's
"Use an environment variables file" page):

- `VAR=VAL`, optionally prefixed with `export `; blank lines and lines starting `#` are skipped;
- unquoted values are trimmed, and ` #` starts a comment;
- `'single quoted'` values are literal; `"double quoted"` values take `\\n`, `\\t`, `\\\\`,
  `\\"` escapes; quoted values may span lines;
- unquoted and double-quoted values are interpolated (`${VAR}`, `${VAR:-default}`…) from
  the variables above them in the file, then the environment; an unset variable is empty.

Bounds: a file over `MAX_BYTES` is refused, and so is a value that grows past `MAX_VALUE`
characters through interpolation (`B=${A}${A}`, `C=${B}${B}`… doubles each line).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from policy.errors import InputError
from policy.scanners import compose

MAX_BYTES = 1024 * 1024
MAX_VALUE = 64 * 1024

_LINE = re.compile(r"[ \t]*(?:export[ \t]+)?([A-Za-z_][A-Za-z0-9_.\-]*)[ \t]*=[ \t]*")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "$": "$$"}


class _Lookup(dict[str, str]):
    """Variables for interpolating a `.env` value: the file's earlier ones, then the
    environment; an unset variable reads as empty (compose warns and substitutes "")."""

    def __init__(self, own: Mapping[str, str], environment: Mapping[str, str]) -> None:
        super().__init__()
        self.own = own
        self.environment = environment

    def get(self, key: str, default: object = None) -> str | None:  # type: ignore[override]
        if key in self.own:
            return self.own[key]
        return self.environment.get(key)


def parse(text: str, filename: str, *, environment: Mapping[str, str]) -> dict[str, str]:
    """The variables of a `.env` file; InputError (located `file:line:`) for a line that is
    not `VAR=VAL`, an unterminated quote, an oversized file or an exploding value."""
    if len(text) > MAX_BYTES:
        raise InputError(f"{filename}: larger than {MAX_BYTES // 1024} KiB; not read")
    text = text.removeprefix("\ufeff").replace("\r\n", "\n")
    out: dict[str, str] = {}
    problems: list[str] = []
    lines = text.split("\n")
    index = 0
    while index < len(lines):
        number = index + 1
        line = lines[index]
        index += 1
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _LINE.match(line)
        if match is None:
            problems.append(f"{filename}:{number}: expected VAR=VALUE, got {line.strip()[:60]!r}")
            continue
        name, rest = match[1], line[match.end() :]
        interpolate = True
        if rest[:1] in ("'", '"'):
            quote = rest[0]
            body = rest[1:]
            while _closing(body, quote) is None and index < len(lines):
                body += "\n" + lines[index]
                index += 1
            end = _closing(body, quote)
            if end is None:
                problems.append(f"{filename}:{number}: {name}: unterminated {quote} quote")
                break
            raw = body[:end]
            if quote == "'":
                value, interpolate = raw, False
            else:
                value = re.sub(r"\\(.)", lambda m: _ESCAPES.get(m[1], "\\" + m[1]), raw)
        else:
            value = re.split(r"[ \t]#", rest, maxsplit=1)[0].strip()
        if interpolate and "$" in value:
            value, _ = compose.interpolate(value, _Lookup(out, environment))
        if len(value) > MAX_VALUE:
            problems.append(
                f"{filename}:{number}: {name}: value longer than {MAX_VALUE:,} characters"
            )
            break
        out[name] = value
    if problems:
        raise InputError("\n".join(problems))
    return out


def _closing(body: str, quote: str) -> int | None:
    """Index of the quote closing a quoted value (a double quote may be escaped)."""
    i = 0
    while i < len(body):
        if quote == '"' and body[i] == "\\":
            i += 2
            continue
        if body[i] == quote:
            return i
        i += 1
    return None


def environment(files: Mapping[str, str], environ: Mapping[str, str]) -> dict[str, str]:
    """Interpolation variables as compose sees them: each env file's (text by name, later
    ones overriding earlier ones), under the process environment, which wins."""
    merged: dict[str, str] = {}
    for name, text in files.items():
        merged.update(parse(text, name, environment=environ))
    merged.update(environ)
    return merged
