"""Find the images of a docker compose file (`services.*.image`), each located at its scalar.

Values are interpolated as the compose specification says (its "Interpolation" section):
`$VAR` and `${VAR}`; `${VAR:-default}` (unset or empty) and `${VAR-default}` (unset);
`${VAR:?err}` and `${VAR?err}` (required); `${VAR:+alt}` and `${VAR+alt}` (replacement when
set); `$$` for a literal `$`; defaults and replacements nest (`${A:-${B:-x}}`) and are only
evaluated when used. Where compose would warn and substitute an empty string for a variable
that is not set, this scanner reports the variable instead of guessing: an image must be known
to be judged.

What is read and what is not, on purpose:
- Every service is checked whatever its `profiles`: a CI check must cover the images of every
  profile, not only of the default one.
- A service with `build:` and no `image:` builds its image from a Dockerfile; it is skipped (scan
  the Dockerfile). A service with neither is skipped too (it may get its image by `extends`).
- `include`, `extends` and `x-` extension keys are not followed: the included or extended file
  is checked when it is given itself. YAML anchors, aliases and merge keys (`<<`), common in
  `x-` blocks, are honoured, and an image merged from an anchor is located at the anchor.
- A value tagged `!reset` (a compose override removing the image) is skipped.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from policy.errors import InputError, Location
from policy.scanners import FoundImage

_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_STR = "tag:yaml.org,2002:str"
_NULL = "tag:yaml.org,2002:null"
_MERGE = "tag:yaml.org,2002:merge"
_RESET = "!reset"

_NAME = re.compile(r"[_A-Za-z][_A-Za-z0-9]*")
# Longest operators first, so that `:-` is not read as `:` followed by `-`.
_OPERATORS = (":-", ":?", ":+", "-", "?", "+")


def scan(text: str, filename: str, *, env: Mapping[str, str]) -> list[FoundImage]:
    """Every `services.<name>.image` of the compose file `text`, interpolated from `env`.

    Each image is located at its scalar (for a quoted scalar, at the quote) and has kind
    "compose", name the service name, field "image"; an image whose text holds a `$` keeps the
    text as written in `FoundImage.template`. Raises InputError, every problem of the file at
    once, one per line as `file:line:col: services.web.image: …`, for invalid YAML, a
    `services` that is not a mapping of mappings, an image that is not a string, and every
    variable that is not set and has no default (or is required by `?`/`:?`).
    """
    found: list[FoundImage] = []
    problems: list[str] = []
    for root in _documents(text, filename):
        if root is None or _is_null(root):
            continue
        if not isinstance(root, MappingNode):
            raise InputError(f"{_where(filename, root)}: expected a compose file (a mapping)")
        services = _pairs(root).get("services")
        if services is None or _is_null(services[1]):
            continue
        services_node = services[1]
        if not isinstance(services_node, MappingNode):
            problems.append(f"{_where(filename, services_node)}: services: expected a mapping")
            continue
        for name, (_, service) in _pairs(services_node).items():
            image = _service_image(filename, name, service, env, problems)
            if image is not None:
                found.append(image)
    if problems:
        raise InputError("\n".join(problems))
    found.sort(key=lambda f: (f.line, f.column))
    return found


def _service_image(
    filename: str, name: str, service: Node, env: Mapping[str, str], problems: list[str]
) -> FoundImage | None:
    """The image of service `name`, interpolated; None when it has none (or a problem, which
    goes to `problems`)."""
    path = f"services.{name}"
    if _is_null(service):
        return None
    if not isinstance(service, MappingNode):
        problems.append(f"{_where(filename, service)}: {path}: expected a mapping")
        return None
    image = _pairs(service).get("image")
    if image is None:
        return None
    node = image[1]
    if _is_null(node) or node.tag == _RESET:
        return None
    where = _where(filename, node)
    if not isinstance(node, ScalarNode) or node.tag != _STR or node.value == "":
        problems.append(f"{where}: {path}.image: expected an image reference (a string)")
        return None
    written: str = node.value
    interpolation = _Interpolation(env)
    value = interpolation.expand(written)
    problems.extend(f"{where}: {path}.image: {p}" for p in interpolation.problems)
    if interpolation.problems:
        return None
    return FoundImage(
        image=value,
        file=filename,
        line=where.line,
        column=where.column,
        kind="compose",
        name=name,
        namespace=None,
        container="",
        field="image",
        template=written if "$" in written else None,
    )


def interpolate(text: str, env: Mapping[str, str]) -> tuple[str, list[str]]:
    """`text` with compose interpolation applied, and the problems found (empty when none)."""
    interpolation = _Interpolation(env)
    value = interpolation.expand(text)
    return value, interpolation.problems


def looks_like_compose(text: str) -> bool:
    """True if `text` is YAML whose top-level `services` maps names to mappings, at least one
    of which has an `image` or a `build`."""
    try:
        roots = list(yaml.compose_all(text, Loader=_LOADER))
    except (yaml.YAMLError, RecursionError):
        return False
    return any(is_compose_root(root) for root in roots)


def is_compose_root(root: Node | None) -> bool:
    """Whether a composed YAML document is a compose file (see `looks_like_compose`)."""
    if not isinstance(root, MappingNode):
        return False
    services = _pairs(root).get("services")
    if services is None or not isinstance(services[1], MappingNode):
        return False
    return any(
        isinstance(service, MappingNode) and bool({"image", "build"} & set(_pairs(service)))
        for _, service in _pairs(services[1]).values()
    )


class _Interpolation:
    """One compose interpolation, collecting every problem rather than stopping at the first."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.problems: list[str] = []

    def expand(self, text: str) -> str:
        out: list[str] = []
        i = 0
        while i < len(text):
            ch = text[i]
            if ch != "$":
                out.append(ch)
                i += 1
                continue
            following = text[i + 1 : i + 2]
            if following == "$":
                out.append("$")
                i += 2
            elif following == "{":
                end = _closing_brace(text, i + 2)
                if end is None:
                    self.problems.append(
                        f"unterminated variable {text[i:]!r} (a `${{` without its `}}`)"
                    )
                    return "".join(out)
                out.append(self._braced(text[i + 2 : end]))
                i = end + 1
            else:
                match = _NAME.match(text, i + 1)
                if match is None:
                    self.problems.append(
                        f"invalid interpolation at {text[i:]!r} (write $$ for a literal $)"
                    )
                    out.append("$")
                    i += 1
                    continue
                out.append(self._lookup(match[0]))
                i = match.end()
        return "".join(out)

    def _lookup(self, name: str) -> str:
        value = self.env.get(name)
        if value is None:
            self.problems.append(
                f"variable ${{{name}}} is not set (set it or give a default: ${{{name}:-default}})"
            )
            return ""
        return value

    def _braced(self, body: str) -> str:
        match = _NAME.match(body)
        rest = body[match.end() :] if match else body
        operator = next((op for op in _OPERATORS if rest.startswith(op)), None)
        if match is None or (rest and operator is None):
            self.problems.append(
                f"invalid interpolation ${{{body}}} (compose supports $VAR, ${{VAR}} and the "
                ":-, -, :?, ?, :+ and + operators)"
            )
            return ""
        name = match[0]
        if operator is None:
            return self._lookup(name)
        word = rest[len(operator) :]
        value = self.env.get(name)
        present = bool(value) if operator.startswith(":") else value is not None
        if operator in (":-", "-"):
            return value if present and value is not None else self.expand(word)
        if operator in (":+", "+"):
            return self.expand(word) if present else ""
        # `?` and `:?`: required.
        if present and value is not None:
            return value
        state = "empty" if value is not None else "not set"
        message = self.expand(word)
        self.problems.append(
            f"variable ${{{name}}} is required but {state}" + (f": {message}" if message else "")
        )
        return ""


def _closing_brace(text: str, start: int) -> int | None:
    """Index of the `}` closing a `${` whose body starts at `start`, nested `${…}` included."""
    depth = 1
    i = start
    while i < len(text):
        if text.startswith("$$", i):
            i += 2
            continue
        if text.startswith("${", i):
            depth += 1
            i += 2
            continue
        if text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def _documents(text: str, filename: str) -> Iterator[Node | None]:
    try:
        yield from yaml.compose_all(text, Loader=_LOADER)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"{filename}:{mark.line + 1}:{mark.column + 1}" if mark else filename
        raise InputError(f"{where}: {error.problem or error.context or 'invalid YAML'}") from None
    except (yaml.YAMLError, RecursionError) as error:
        raise InputError(f"{filename}: invalid YAML: {error}") from None


def _pairs(node: MappingNode, seen: frozenset[int] = frozenset()) -> dict[str, tuple[Node, Node]]:
    """A mapping's string keys → (key node, value node), merge keys applied (own keys win,
    then the first mapping merged), a duplicate key keeping its last value. A mapping that
    merges itself (through a recursive alias) is merged once."""
    result: dict[str, tuple[Node, Node]] = {}
    own: list[tuple[Node, Node]] = []
    seen = seen | {id(node)}
    for key, value in node.value:
        if key.tag == _MERGE:
            sources: list[Node] = value.value if isinstance(value, SequenceNode) else [value]
            for source in reversed(sources):
                if isinstance(source, MappingNode) and id(source) not in seen:
                    result.update(_pairs(source, seen))
        else:
            own.append((key, value))
    for key, value in own:
        if isinstance(key, ScalarNode):
            result[key.value] = (key, value)
    return result


def _is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == _NULL


def _where(filename: str, node: Node) -> Location:
    return Location(filename, node.start_mark.line + 1, node.start_mark.column + 1)
