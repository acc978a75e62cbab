"""`WWW-Authenticate` parsing (RFC 7235 §2.1, §4.1; RFC 7230 §3.2.6): pure, table-tested.

`parse_challenges` reads a header value into its challenges (several per header, auth-params
with quoted strings and escapes, or a token68); anything malformed is a RegistryAuthError.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from policy.errors import (
    RegistryAuthError,
)

_ALPHA_DIGIT = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_TCHAR = frozenset(_ALPHA_DIGIT + "!#$%&'*+-.^_`|~")
_TOKEN68 = frozenset(_ALPHA_DIGIT + "-._~+/")
_OWS = " \t"
# Schemes whose challenges carry auth-params, never a token68.
_PARAM_SCHEMES = frozenset({"basic", "bearer"})


@dataclass(frozen=True)
class Challenge:
    """One challenge of a `WWW-Authenticate` header.

    `scheme` is lowercased; `params` maps lowercased auth-param names to their unquoted values;
    `token68` holds the token68 form some schemes use instead of params.
    """

    scheme: str
    params: dict[str, str] = field(default_factory=dict)
    token68: str = ""


class _Scanner:
    """A cursor over a header value; every failure is a RegistryAuthError."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    @property
    def eof(self) -> bool:
        return self.pos >= len(self.text)

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def fail(self, problem: str) -> RegistryAuthError:
        return RegistryAuthError(
            f"malformed WWW-Authenticate header: {problem} at position {self.pos}"
        )

    def skip_ows(self) -> bool:
        start = self.pos
        while self.peek() and self.peek() in _OWS:
            self.pos += 1
        return self.pos > start

    def skip_separators(self) -> None:
        """Skip OWS and commas (the `#rule` list allows empty elements)."""
        while self.peek() and (self.peek() in _OWS or self.peek() == ","):
            self.pos += 1

    def token(self) -> str:
        start = self.pos
        while self.peek() and self.peek() in _TCHAR:
            self.pos += 1
        return self.text[start : self.pos]

    def quoted_string(self) -> str:
        # Caller has checked the opening quote.
        self.pos += 1
        out: list[str] = []
        while True:
            if self.eof:
                raise self.fail("unterminated quoted string")
            c = self.text[self.pos]
            if c == '"':
                self.pos += 1
                return "".join(out)
            if c == "\\":
                self.pos += 1
                if self.eof:
                    raise self.fail("unterminated escape in quoted string")
                c = self.text[self.pos]
            if is_ctl(c):
                raise self.fail(f"control character {c!r} in quoted string")
            out.append(c)
            self.pos += 1

    def at_param(self, *, token68_allowed: bool) -> bool:
        """Does an auth-param (`token BWS "=" ...`) start here (rather than a token68/scheme)?"""
        start = self.pos
        try:
            if not self.token():
                return False
            self.skip_ows()
            if self.peek() != "=":
                return False
            self.pos += 1
            self.skip_ows()
            nxt = self.peek()
            if nxt == "=":
                return False  # token68 padding, e.g. `abc==`
            # `name=` followed by nothing: a token68 with one pad char where one may stand,
            # otherwise an auth-param missing its value (reported by the param parser).
            return not (token68_allowed and nxt in ("", ","))
        finally:
            self.pos = start

    def param(self) -> tuple[str, str]:
        name = self.token().lower()
        self.skip_ows()
        self.pos += 1  # "=" (checked by at_param)
        self.skip_ows()
        if self.peek() == '"':
            return name, self.quoted_string()
        value = self.token()
        if not value:
            raise self.fail(f"auth-param {name!r} has no value")
        return name, value

    def token68(self) -> str:
        start = self.pos
        while self.peek() and self.peek() in _TOKEN68:
            self.pos += 1
        if self.pos == start:
            return ""
        while self.peek() == "=":
            self.pos += 1
        return self.text[start : self.pos]


def is_ctl(c: str) -> bool:
    return (ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F


def parse_challenges(header: str) -> list[Challenge]:
    """Parse a `WWW-Authenticate` value into its challenges, in order.

    Follows RFC 7235: `1#challenge`, `challenge = auth-scheme [ 1*SP ( token68 / #auth-param ) ]`,
    `auth-param = token BWS "=" BWS ( token / quoted-string )`. Param names are case-insensitive
    (lowercased here) and may appear once per challenge. Anything malformed raises
    RegistryAuthError, never another exception type.
    """
    if not isinstance(header, str):
        raise RegistryAuthError("malformed WWW-Authenticate header: not a string")
    s = _Scanner(header)
    s.skip_separators()
    if s.eof:
        raise RegistryAuthError("empty WWW-Authenticate header")
    challenges: list[Challenge] = []
    while True:
        scheme = s.token().lower()
        if not scheme:
            raise s.fail(f"expected an auth scheme, found {s.peek()!r}")
        params: dict[str, str] = {}
        token68 = ""
        spaced = s.skip_ows()
        if not (s.eof or s.peek() == ","):
            if not spaced:
                raise s.fail(f"unexpected {s.peek()!r} after scheme {scheme!r}")
            if s.at_param(token68_allowed=True):
                name, value = s.param()
                params[name] = value
            else:
                token68 = s.token68()
                if not token68:
                    raise s.fail(f"unexpected {s.peek()!r} after scheme {scheme!r}")
                if scheme in _PARAM_SCHEMES:
                    raise s.fail(f"{scheme} challenge must carry auth-params, not a token68")
        next_scheme = False
        while not next_scheme:
            s.skip_ows()
            if s.eof:
                challenges.append(Challenge(scheme, params, token68))
                return challenges
            if s.peek() != ",":
                raise s.fail(f"expected ',' but found {s.peek()!r}")
            s.skip_separators()
            if s.eof:
                challenges.append(Challenge(scheme, params, token68))
                return challenges
            if not token68 and s.at_param(token68_allowed=False):
                name, value = s.param()
                if name in params:
                    raise s.fail(f"auth-param {name!r} repeated in the {scheme} challenge")
                params[name] = value
            else:
                challenges.append(Challenge(scheme, params, token68))
                next_scheme = True
