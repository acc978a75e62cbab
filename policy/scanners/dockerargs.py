"""Dockerfile variables as BuildKit substitutes them: the ARG scopes a word is looked up in,
and the word expansion itself (quotes removed, escapes honoured, `$VAR`, `${VAR}` and the
`:-`, `-`, `:+`, `+`, `:?`, `?` operators), bounded by `MAX_EXPANSION`."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

PLATFORM_ARGS = frozenset(
    prefix + suffix
    for prefix in ("BUILD", "TARGET")
    for suffix in ("PLATFORM", "OS", "ARCH", "VARIANT")
)
MAX_EXPANSION = 65_536
"""Characters a word may hold once its variables are substituted (an image reference is a few
hundred at most; a legitimate ARG a few thousand)."""

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Longest operators first, so that `:-` is not read as `:` then `-`.
_OPERATORS = (":-", ":+", ":?", "-", "+", "?")

# A variable's value, or (None, why it has none).
Lookup = Callable[[str], tuple[str | None, str]]


def scoped(scope: Mapping[str, str | None], build_args: Mapping[str, str], where: str) -> Lookup:
    """The lookup of variables declared in `scope` (`where` names it in messages)."""

    def lookup(name: str) -> tuple[str | None, str]:
        return _lookup(name, scope, build_args, where)

    return lookup


def _lookup(
    name: str, scope: Mapping[str, str | None], build_args: Mapping[str, str], where: str
) -> tuple[str | None, str]:
    if name in scope:
        value = scope[name]
        if value is None:
            return None, (
                f"ARG {name} has no value (give it a default, ARG {name}=…, "
                f"or pass the build arg {name})"
            )
        return value, ""
    if name in PLATFORM_ARGS:
        if name in build_args:
            return build_args[name], ""
        return None, f"${{{name}}} is set by the builder (pass the build arg {name})"
    return None, f"variable ${{{name}}} is not declared by an ARG {where}"


class TooLong(Exception):
    """A word whose substituted variables make it longer than MAX_EXPANSION."""


class Expansion:
    """BuildKit's word expansion: quotes removed, escapes honoured, variables substituted.

    Collects every problem (a variable without a value, a malformed `${…}`) instead of
    stopping; `substituted` says whether any variable was read. A default or replacement
    word is only evaluated when it is used.
    """

    def __init__(self, escape: str, lookup: Lookup) -> None:
        self.escape = escape
        self.lookup = lookup
        self.problems: list[str] = []
        self.substituted = False
        self._text = ""
        self._i = 0
        self._added = 0

    def word(self, text: str) -> str:
        """`text` expanded; TooLong when its variables' values add up past MAX_EXPANSION."""
        self._text, self._i, self._added = text, 0, 0
        return self._until_brace(inside=False)

    def _substitute(self, value: str) -> str:
        """A variable's value, counted: substitutions stop the word once over the limit."""
        self._added += len(value)
        if self._added > MAX_EXPANSION:
            raise TooLong(
                f"value longer than {MAX_EXPANSION} characters once its variables are substituted"
            )
        return value

    def _until_brace(self, *, inside: bool) -> str:
        out: list[str] = []
        text = self._text
        while self._i < len(text):
            ch = text[self._i]
            if inside and ch == "}":
                return "".join(out)
            if ch == self.escape:
                out.append(text[self._i + 1 : self._i + 2] or ch)
                self._i += 2
            elif ch == "'":
                end = text.find("'", self._i + 1)
                if end < 0:
                    self.problems.append(f"unterminated quote in {text!r}")
                    end = len(text)
                out.append(text[self._i + 1 : end])
                self._i = end + 1
            elif ch == '"':
                self._i += 1
                out.append(self._double_quoted())
            elif ch == "$":
                out.append(self._dollar())
            else:
                out.append(ch)
                self._i += 1
        if inside:
            self.problems.append(f"unterminated variable in {text!r} (a `${{` without `}}`)")
        return "".join(out)

    def _double_quoted(self) -> str:
        out: list[str] = []
        text = self._text
        while self._i < len(text):
            ch = text[self._i]
            if ch == '"':
                self._i += 1
                return "".join(out)
            if ch == self.escape and text[self._i + 1 : self._i + 2] in ('"', "$", self.escape):
                out.append(text[self._i + 1])
                self._i += 2
            elif ch == "$":
                out.append(self._dollar())
            else:
                out.append(ch)
                self._i += 1
        self.problems.append(f"unterminated quote in {text!r}")
        return "".join(out)

    def _dollar(self) -> str:
        text = self._text
        self._i += 1  # the `$`
        if text[self._i : self._i + 1] != "{":
            name = _NAME.match(text, self._i)
            if name is None:
                return "$"
            self._i = name.end()
            return self._value(name[0])
        self._i += 1  # the `{`
        name = _NAME.match(text, self._i)
        rest = text[name.end() :] if name else ""
        operator = next((op for op in _OPERATORS if rest.startswith(op)), None)
        if name is None or (operator is None and not rest.startswith("}")):
            self.problems.append(
                f"unsupported variable syntax at {text[self._i - 2 :]!r} (use $VAR, ${{VAR}}, "
                "or the :-, -, :+, +, :? and ? operators)"
            )
            self._i = len(text)
            return ""
        self._i = name.end()
        if operator is None:
            self._i += 1  # the `}`
            return self._value(name[0])
        self._i += len(operator)
        self.substituted = True
        value, why = self.lookup(name[0])
        present = bool(value) if operator.startswith(":") else value is not None
        used = (operator in (":+", "+")) == present or operator in (":?", "?")
        mark = len(self.problems)
        word = self._until_brace(inside=True)
        self._i += 1  # the `}`
        if not used:
            del self.problems[mark:]
        if operator in (":-", "-"):
            return self._substitute(value) if present and value is not None else word
        if operator in (":+", "+"):
            return word if present else ""
        if present and value is not None:
            del self.problems[mark:]
            return self._substitute(value)
        self.problems.append(f"variable ${{{name[0]}}} is required: {word or why}")
        return ""

    def _value(self, name: str) -> str:
        self.substituted = True
        value, why = self.lookup(name)
        if value is None:
            self.problems.append(why)
            return ""
        return self._substitute(value)
