"""Property tests for policy.reference.parse: total on any text, and stable under printing."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from policy.errors import InvalidReference
from policy.reference import DOCKER_HUB_HOSTS, Reference, canonical_host, parse

BOUNDED = settings(max_examples=300, deadline=None)

# Characters the grammar gives meaning to, plus a few it never accepts.
GRAMMAR_ALPHABET = "abcxyz0129ABFZ._-/:@[]%~ \n"
FRAGMENTS = [
    "docker.io/",
    "index.docker.io/",
    "registry-1.docker.io/",
    "localhost",
    "library/",
    "[::1]",
    ":5000",
    "sha256:",
    "sha512:",
    "md5:",
    "f" * 32,
    "f" * 64,
    "F" * 64,
    "__",
    "--",
    "..",
    "a" * 250,
]

ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"
HEX = "0123456789abcdef"
DIGEST_SIZES = {"sha256": 64, "sha384": 96, "sha512": 128}


def _parse_or_none(text: str) -> Reference | None:
    """parse, where InvalidReference is the one allowed failure (anything else propagates)."""
    try:
        return parse(text)
    except InvalidReference as err:
        assert err.text == text
        assert err.problem
        return None


@st.composite
def path_components(draw: st.DrawFn) -> str:
    """One path component: alphanumeric runs joined by `.`, `_`, `__` or dashes."""
    runs = draw(st.lists(st.text(ALNUM, min_size=1, max_size=6), min_size=1, max_size=3))
    seps = draw(
        st.lists(
            st.sampled_from([".", "_", "__", "-", "--", "---"]),
            min_size=len(runs) - 1,
            max_size=len(runs) - 1,
        )
    )
    out = runs[0]
    for sep, run in zip(seps, runs[1:], strict=True):
        out += sep + run
    return out


domain_labels = st.from_regex(r"[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,8}[a-zA-Z0-9])?", fullmatch=True)
ports = st.integers(min_value=0, max_value=99999).map(lambda p: f":{p}")
domains = st.one_of(
    st.tuples(st.lists(domain_labels, min_size=2, max_size=4).map(".".join), st.just("")),
    st.tuples(st.lists(domain_labels, min_size=1, max_size=3).map(".".join), ports),
    st.tuples(st.sampled_from(["localhost"]), st.one_of(st.just(""), ports)),
    st.tuples(st.from_regex(r"\[[a-fA-F0-9:]{1,16}\]", fullmatch=True), ports),
).map("".join)
paths = st.lists(path_components(), min_size=1, max_size=4).map("/".join)
tags = st.one_of(st.none(), st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True))
digests = st.one_of(
    st.none(),
    st.sampled_from(sorted(DIGEST_SIZES)).flatmap(
        lambda alg: st.text(HEX, min_size=DIGEST_SIZES[alg], max_size=DIGEST_SIZES[alg]).map(
            lambda hex_: f"{alg}:{hex_}"
        )
    ),
)
HUB_NAMES = set(DOCKER_HUB_HOSTS)


def _render(domain: str | None, path: str, tag: str | None, digest: str | None) -> str:
    text = path if domain is None else f"{domain}/{path}"
    if tag is not None:
        text += f":{tag}"
    if digest is not None:
        text += f"@{digest}"
    return text


@BOUNDED
@given(st.text(max_size=80))
def test_parse_raises_only_invalid_reference_on_any_text(text: str) -> None:
    """parse never fails with anything but InvalidReference; what it accepts prints back."""
    ref = _parse_or_none(text)
    if ref is not None:
        assert parse(str(ref)) == ref


@BOUNDED
@given(
    st.lists(
        st.one_of(st.text(GRAMMAR_ALPHABET, min_size=1, max_size=6), st.sampled_from(FRAGMENTS)),
        max_size=8,
    ).map("".join)
)
def test_parse_on_grammar_alphabet_is_total_and_round_trips(text: str) -> None:
    """Text made of the grammar's own characters: InvalidReference or a stable Reference."""
    ref = _parse_or_none(text)
    if ref is not None:
        assert parse(str(ref)) == ref
        assert str(parse(str(ref))) == str(ref)


@BOUNDED
@given(domains.filter(lambda d: d not in HUB_NAMES), paths, tags, digests)
def test_grammar_built_reference_with_domain_parses_to_its_parts(
    domain: str, path: str, tag: str | None, digest: str | None
) -> None:
    """A reference built from the grammar with an explicit domain parses to exactly its parts,
    with the domain canonical; a domain without a canonical form (port 0 or past 65535, no
    valid IPv6 address) is refused, and so is a single label that is a host only because of
    its capitals."""
    text = _render(domain, path, tag, digest)
    try:
        canonical = canonical_host(domain)
    except ValueError:
        assert _parse_or_none(text) is None
        return
    if "." not in domain and ":" not in domain and domain.lower() != "localhost":
        assert _parse_or_none(text) is None
        return
    ref = parse(text)
    assert ref == Reference(registry=canonical, repository=path, tag=tag, digest=digest)
    assert str(ref) == _render(canonical, path, tag, digest)
    assert parse(str(ref)) == ref
    assert parse(ref.familiar) == ref


@BOUNDED
@given(paths, tags, digests)
def test_grammar_built_familiar_reference_round_trips(
    path: str, tag: str | None, digest: str | None
) -> None:
    """A domain-less reference built from the grammar prints back to itself, full or familiar.

    Its first component may look like a host (`a.b/c`), which parse treats as one, or be a
    host-like name that is no valid host (`a_b.c/d`), which parse refuses.
    """
    text = _render(None, path, tag, digest)
    ref = _parse_or_none(text)
    if ref is None:
        first = path.split("/")[0]
        assert "/" in path and "." in first and "_" in first
        return
    assert parse(str(ref)) == ref
    assert parse(ref.familiar) == ref
    assert ref.tag == tag
    assert ref.digest == digest
    if ref.registry == "docker.io":
        assert str(ref) in (f"docker.io/{text}", f"docker.io/library/{text}")
    else:
        assert str(ref) == text
