"""YAML with source positions: every value keeps its file:line:column (pure core).

Rule, settings and facts files are read through `load`, which returns a tree of `Node`s, and
validated with a `Reader` that collects every located error, so `lint` can report them all at
once and each message starts with where the problem is.

Aliases are expanded (each use becomes its own located subtree), within a budget: before
anything is built, the parser's events are counted — each anchored node's size with the aliases
inside it — and a file whose aliases would make more than `ALIAS_BUDGET` values is refused at
the alias that crosses it (`x.yaml:9:5: too many aliases: …`). A 500-byte "billion laughs" file
is thus refused in linear time, without building anything exponential. An alias used inside
its own anchor, and nesting deeper than `MAX_NESTING`, are refused the same way.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TypeVar

import yaml

from policy.errors import ConfigError, Location

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"

MAX_NESTING = 100
"""Mappings and lists inside each other, at most (converting them is recursive)."""

ALIAS_BUDGET = 10_000
"""Values that aliases may add to one file, in all. A rule file sharing a list of 50 registries
between 40 rules uses 2,000; a billion-laughs file asks for 9**9."""

T = TypeVar("T")


@dataclass
class Node:
    """A YAML value with its position. Mappings hold `dict[str, Node]`, sequences `list[Node]`."""

    value: object
    location: Location
    key_location: Location | None = None
    tag: str = ""

    @property
    def is_mapping(self) -> bool:
        return isinstance(self.value, dict)

    @property
    def is_sequence(self) -> bool:
        return isinstance(self.value, list)

    def type_name(self) -> str:
        return describe(self.value)

    def plain(self) -> object:
        """The value with positions stripped (plain dicts, lists and scalars)."""
        if isinstance(self.value, dict):
            return {k: v.plain() for k, v in self.value.items()}
        if isinstance(self.value, list):
            return [v.plain() for v in self.value]
        return self.value


def describe(value: object) -> str:
    """A short description of a found value for error messages: `"ten"`, `42`, `a mapping`."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        shown = value if len(value) <= 60 else value[:57] + "..."
        return f'"{shown}"'
    return str(value)


def kind(value: object) -> str:
    """The type of a found value, never the value itself: `a string`, `an integer`. For
    errors about files that may hold secrets (settings), which must not echo what they hold."""
    if isinstance(value, str):
        return "a string" if value.strip() else "an empty string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, datetime | date):
        return "a date"
    if isinstance(value, dict | list) or value is None:
        return describe(value)
    return f"a value of type {type(value).__name__}"


def _location(filename: str, mark: yaml.Mark | None) -> Location:
    if mark is None:
        return Location(filename, 1, 1)
    return Location(filename, mark.line + 1, mark.column + 1)


def _convert(
    node: yaml.Node,
    filename: str,
    errors: list[ConfigError],
    path: str,
    constructor: yaml.constructor.SafeConstructor,
) -> Node:
    """The located `Node` tree of a composed YAML node; errors are appended to `errors`."""
    loc = _location(filename, node.start_mark)
    if isinstance(node, yaml.MappingNode):
        out = _convert_mapping(node, filename, errors, path, constructor)
        return Node(out, loc, tag=node.tag)
    if isinstance(node, yaml.SequenceNode):
        items = [
            _convert(item, filename, errors, f"{path}[{i}]", constructor)
            for i, item in enumerate(node.value)
        ]
        return Node(items, loc, tag=node.tag)
    try:
        value = constructor.construct_object(node, deep=True)
    except (yaml.YAMLError, ValueError, OverflowError) as exc:
        if node.tag == _TIMESTAMP_TAG:
            # A date-shaped scalar that is no date (`2027-02-30`): keep the text, so the field's
            # own check says "expected a date like 2027-03-31, got "2027-02-30"".
            value = node.value
        else:
            errors.append(ConfigError(_unreadable(node, exc), location=loc, path=path))
            value = None
    return Node(value, loc, tag=node.tag)


def _convert_mapping(
    node: yaml.MappingNode,
    filename: str,
    errors: list[ConfigError],
    path: str,
    constructor: yaml.constructor.SafeConstructor,
) -> dict[str, Node]:
    """A mapping's entries by key; merge keys, keys that are not plain scalars and duplicate
    keys are errors, their entries left out."""
    out: dict[str, Node] = {}
    for key_node, value_node in node.value:
        key_loc = _location(filename, key_node.start_mark)
        key = _mapping_key(key_node, key_loc, errors, path, constructor)
        if key is None:
            continue
        child_path = f"{path}.{key}" if path else key
        if key in out:
            first = out[key].key_location
            line = first.line if first else "?"
            errors.append(
                ConfigError(
                    f"duplicate key {key!r} (first defined at line {line})",
                    location=key_loc,
                    path=child_path,
                )
            )
            continue
        child = _convert(value_node, filename, errors, child_path, constructor)
        child.key_location = key_loc
        out[key] = child
    return out


def _mapping_key(
    key_node: yaml.Node,
    key_loc: Location,
    errors: list[ConfigError],
    path: str,
    constructor: yaml.constructor.SafeConstructor,
) -> str | None:
    """A mapping key as text (a number or boolean key as written); None, with the error
    appended, for a merge key or a key that is not a plain scalar."""
    if key_node.tag == "tag:yaml.org,2002:merge":
        errors.append(ConfigError("YAML merge keys (<<) are not supported", location=key_loc))
        return None
    try:
        key_value = (
            constructor.construct_object(key_node, deep=True)
            if isinstance(key_node, yaml.ScalarNode)
            else None
        )
    except (yaml.YAMLError, ValueError, OverflowError):
        # A key PyYAML cannot construct (`=:`, `2027-02-30:`) is no plain scalar here.
        key_value = None
    if not isinstance(key_value, str | int | float | bool) or key_value is None:
        errors.append(
            ConfigError("mapping keys must be plain scalars", location=key_loc, path=path)
        )
        return None
    return key_value if isinstance(key_value, str) else str(key_node.value)


def _unreadable(node: yaml.Node, exc: Exception) -> str:
    """Why a scalar could not be constructed, without its text (which may be a secret): the
    problem PyYAML states (its full message quotes the source line), or the tag it failed."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem:
        return f"cannot read value: {exc.problem}"
    tag = node.tag.replace("tag:yaml.org,2002:", "!!")
    return f"cannot read value: not a valid {tag}"


def load(text: str, filename: str) -> tuple[Node | None, list[ConfigError]]:
    """Parse one YAML document into a located Node tree; errors are returned, not raised.

    Returns `(None, [error])` for a syntax error or too many aliases, `(None, [])` for an
    empty document.
    """
    try:
        refusal = _refusal(text, filename)
        if refusal is not None:
            return None, [refusal]
        root = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        return None, [
            ConfigError(f"YAML syntax error: {problem}", location=_location(filename, mark))
        ]
    except yaml.YAMLError as exc:
        return None, [ConfigError(f"YAML syntax error: {exc}", location=Location(filename, 1, 1))]
    if root is None:
        return None, []
    errors: list[ConfigError] = []
    # A constructor per file: it remembers every node it constructed (so an alias's scalars are
    # built once), which a shared one would keep for the life of the process.
    constructor = yaml.constructor.SafeConstructor()
    return _convert(root, filename, errors, "", constructor), errors


def _refusal(text: str, filename: str) -> ConfigError | None:
    """Why `text` must not be built, from the parser's events alone: nested deeper than
    `MAX_NESTING`, aliases making more than `ALIAS_BUDGET` values, or an alias inside its own
    anchor. None when it is fine; a syntax error is left for `yaml.compose` to report.
    """
    sizes: dict[str, int] = {}  # anchor → the values its node expands to (aliases included)
    open_anchors: list[str | None] = []  # the anchor of each open collection
    counts: list[int] = [0]  # values in each open collection, the document at the bottom
    added = 0  # values made by aliases so far
    try:
        for event in yaml.parse(text, Loader=_Loader):
            if isinstance(event, yaml.AliasEvent):
                anchor = event.anchor
                where = _mark_location(filename, event.start_mark)
                if anchor in open_anchors:
                    return ConfigError(
                        f"recursive alias *{anchor} (used inside its own anchor)", location=where
                    )
                size = sizes.get(anchor or "")
                if size is None:
                    return None  # an undefined alias: compose says so
                added += size
                if added > ALIAS_BUDGET:
                    return ConfigError(
                        f"too many aliases: *{anchor} here expands to {size} values, past the "
                        f"budget of {ALIAS_BUDGET} values made by aliases in one file "
                        "(an alias bomb?)",
                        location=where,
                    )
                counts[-1] += size
            elif isinstance(event, yaml.ScalarEvent):
                counts[-1] += 1
                if event.anchor is not None:
                    sizes[event.anchor] = 1
            elif isinstance(event, yaml.CollectionStartEvent):
                if len(open_anchors) >= MAX_NESTING:
                    return ConfigError(
                        f"nested more than {MAX_NESTING} levels deep",
                        location=_mark_location(filename, event.start_mark),
                    )
                open_anchors.append(event.anchor)
                counts.append(1)
            elif isinstance(event, yaml.CollectionEndEvent):
                anchor = open_anchors.pop()
                size = counts.pop()
                counts[-1] += size
                if anchor is not None:
                    sizes[anchor] = size
            elif isinstance(event, yaml.DocumentStartEvent):
                sizes.clear()  # anchors belong to their document
    except yaml.YAMLError:
        return None
    return None


def _mark_location(filename: str, mark: object) -> Location:
    """Where an event starts (libyaml's events carry marks of their own type)."""
    line, column = getattr(mark, "line", 0), getattr(mark, "column", 0)
    return Location(filename, int(line) + 1, int(column) + 1)


@dataclass
class Reader:
    """Validates a Node tree, collecting located errors of one error class.

    Each `want_*` method returns the value when it has the expected shape, or records an error
    ("expected a positive integer, got "ten"") and returns None, so validation continues.
    """

    error_class: type[ConfigError] = ConfigError
    errors: list[ConfigError] = field(default_factory=list)
    # False for files that may hold secrets: errors then say the type found, never the
    # value, and do not repeat unknown keys (a missing colon in `{password hunter2}` makes
    # the secret a key).
    quote: bool = True

    def found(self, node: Node) -> str:
        """What was found, for "expected X, got Y": the value itself, or only its type."""
        return node.type_name() if self.quote else kind(node.value)

    def error(self, node: Node, path: str, message: str, *, at_key: bool = False) -> None:
        loc = node.key_location if at_key and node.key_location else node.location
        self.errors.append(self.error_class(message, location=loc, path=path))

    def expected(self, node: Node, path: str, what: str) -> None:
        self.error(node, path, f"expected {what}, got {self.found(node)}")

    def mapping(
        self,
        node: Node,
        path: str,
        *,
        allowed: Sequence[str],
        required: Sequence[str] = (),
    ) -> dict[str, Node] | None:
        """The mapping's children; reports unknown keys (with a did-you-mean) and missing ones."""
        if not isinstance(node.value, dict):
            self.expected(node, path, "a mapping")
            return None
        children: dict[str, Node] = node.value
        for key, child in children.items():
            if key not in allowed:
                where = join(path, key) if self.quote else path
                message = unknown_key_message(key, allowed, quote=self.quote)
                self.error(child, where, message, at_key=True)
        for key in required:
            if key not in children:
                self.error(node, path, f"missing required key {key!r}")
        return children

    def string(self, node: Node, path: str, *, nonempty: bool = True) -> str | None:
        if not isinstance(node.value, str) or (nonempty and not node.value.strip()):
            self.expected(node, path, "a non-empty string" if nonempty else "a string")
            return None
        return node.value

    def boolean(self, node: Node, path: str) -> bool | None:
        if not isinstance(node.value, bool):
            self.expected(node, path, "true or false")
            return None
        return node.value

    def positive_int(self, node: Node, path: str) -> int | None:
        if isinstance(node.value, bool) or not isinstance(node.value, int) or node.value <= 0:
            self.expected(node, path, "a positive integer")
            return None
        return node.value

    def choice(self, node: Node, path: str, choices: Sequence[str]) -> str | None:
        if not isinstance(node.value, str) or node.value not in choices:
            options = " | ".join(choices)
            self.error(node, path, f"expected one of {options}, got {self.found(node)}")
            return None
        return node.value

    def items(self, node: Node, path: str, *, nonempty: bool = True) -> Iterator[tuple[str, Node]]:
        """Yield `(path, child)` for each element of a list (an error if it is not a list)."""
        if not isinstance(node.value, list):
            self.expected(node, path, "a list")
            return
        if nonempty and not node.value:
            self.error(node, path, "expected a non-empty list")
        for i, child in enumerate(node.value):
            yield f"{path}[{i}]", child

    def string_list(
        self, node: Node, path: str, *, check: Callable[[Node, str, str], T | None] | None = None
    ) -> list[T] | list[str] | None:
        """A non-empty list of strings; `check(node, path, text)` may convert or reject each."""
        if not isinstance(node.value, list):
            self.expected(node, path, "a list of strings")
            return None
        out: list[object] = []
        ok = True
        for item_path, child in self.items(node, path):
            text = self.string(child, item_path)
            if text is None:
                ok = False
                continue
            converted = check(child, item_path, text) if check else text
            if converted is None:
                ok = False
            out.append(converted)
        return out if ok else None  # type: ignore[return-value]

    def compiled(self, node: Node, path: str, compile: Callable[[str], T]) -> tuple[T, ...] | None:
        """A non-empty list of strings, each turned into a T by `compile`, whose ValueError
        becomes a located error; None when anything in the list is wrong."""

        def check(child: Node, item_path: str, text: str) -> T | None:
            try:
                return compile(text)
            except ValueError as exc:
                self.error(child, item_path, str(exc))
                return None

        found = self.string_list(node, path, check=check)
        return tuple(found) if found else None  # type: ignore[arg-type]

    def parsed(self, node: Node, path: str, parse: Callable[[object], T]) -> T | None:
        """The value read by `parse` (`units.parse_duration`, …), whose ValueError becomes a
        located error "<why>, got <what was found>"; None then."""
        try:
            return parse(node.value)
        except ValueError as exc:
            self.error(node, path, f"{exc}, got {self.found(node)}")
            return None


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def unknown_key_message(key: str, allowed: Sequence[str], *, quote: bool = True) -> str:
    """`unknown key "maxLayer" (did you mean "maxLayers"?)`, or the list of allowed keys;
    without `quote`, the key itself is not repeated."""
    named = f'unknown key "{key}"' if quote else "unknown key"
    close = difflib.get_close_matches(key, list(allowed), n=1, cutoff=0.6)
    if close:
        return f'{named} (did you mean "{close[0]}"?)'
    return f"{named} (expected one of: {', '.join(allowed)})"
