"""Reading who must have signed, for `require.signatures` and an attestation check's
`signed`: keys (inline PEM or files beside the rules file), keyless identities (issuer and
subject, glob or regex) and a Sigstore trusted root file."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from policy import jsonbound, signing
from policy.yamlsrc import Node, Reader

T = TypeVar("T")


def _key(reader: Reader, node: Node, path: str) -> signing.KeySpec | None:
    """One `keys` entry: inline PEM text, or a file path (relative to the rules file)."""
    text = reader.string(node, path)
    if text is None:
        return None
    source = "inline key"
    if "-----BEGIN" not in text:
        file = _file_near(node, text)
        source = text
        try:
            with file.open("rb") as stream:
                raw = stream.read(signing.MAX_PEM_CHARS + 1)
            text = raw.decode("ascii")
        except FileNotFoundError:
            reader.error(node, path, f"key file {file} does not exist")
            return None
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not ASCII PEM"
            reader.error(node, path, f"cannot read key file {file}: {why}")
            return None
    try:
        return signing.parse_public_key(text, source)
    except ValueError as exc:
        reader.error(node, path, str(exc))
        return None


def _file_near(node: Node, text: str) -> Path:
    """A path from a rule file: relative to that file's directory."""
    file = Path(text)
    if not file.is_absolute() and node.location.file not in ("", "<rules>"):
        file = Path(node.location.file).parent / file
    return file


def _trusted_root(reader: Reader, node: Node, path: str) -> bytes | None:
    """A Sigstore trusted root file (JSON), read whole (at most 1 MiB); its certificates and
    keys are checked when verifying."""
    text = reader.string(node, path)
    if text is None:
        return None
    file = _file_near(node, text)
    try:
        with file.open("rb") as stream:
            data = stream.read(signing.MAX_TRUSTED_ROOT_BYTES + 1)
    except OSError as exc:
        reader.error(node, path, f"cannot read trusted root {file}: {exc.strerror or exc}")
        return None
    if len(data) > signing.MAX_TRUSTED_ROOT_BYTES:
        reader.error(node, path, f"trusted root {file} is larger than 1 MiB")
        return None
    try:
        document = jsonbound.loads(data, max_bytes=signing.MAX_TRUSTED_ROOT_BYTES)
    except jsonbound.JSONRefused as exc:
        reader.error(node, path, f"trusted root {file} is not JSON: {exc}")
        return None
    if not isinstance(document, dict) or not isinstance(
        document.get("certificateAuthorities"), list
    ):
        reader.error(
            node,
            path,
            f"trusted root {file} has no certificateAuthorities (a Sigstore trusted_root.json)",
        )
        return None
    return data


_IDENTITY_KEYS = ("issuer", "issuerRegExp", "subject", "subjectRegExp")


def _identity(reader: Reader, node: Node, path: str) -> signing.Identity | None:
    """`{issuer, subject}`: exact text or a `*` glob each; `issuerRegExp`/`subjectRegExp`
    for regular expressions."""
    fields = reader.mapping(node, path, allowed=_IDENTITY_KEYS)
    if fields is None:
        return None
    found: dict[str, signing.Matcher] = {}
    for field in ("issuer", "subject"):
        plain, regex = fields.get(field), fields.get(f"{field}RegExp")
        if (plain is None) == (regex is None):
            reader.error(node, path, f"give one of {field} or {field}RegExp")
            continue
        child = plain if plain is not None else regex
        assert child is not None
        child_path = f"{path}.{field if plain is not None else field + 'RegExp'}"
        text = reader.string(child, child_path)
        if text is None:
            continue
        try:
            found[field] = signing.matcher(text, "glob" if plain is not None else "regex")
        except ValueError as exc:
            reader.error(child, child_path, str(exc))
    if len(found) != 2:
        return None
    return signing.Identity(issuer=found["issuer"], subject=found["subject"])


def keys_and_identities(
    reader: Reader, children: dict[str, Node], path: str
) -> tuple[list[signing.KeySpec], list[signing.Identity], bool]:
    """The `keys` and `keyless` entries of a signer list (`require.signatures`, an
    attestation's `signed`), and whether both read without error (errors reported)."""
    keys, keys_ok = _entries(
        reader, children, "keys", path, _key, "a non-empty list of PEM public keys or key files"
    )
    identities, ids_ok = _entries(
        reader, children, "keyless", path, _identity, "a non-empty list of {issuer, subject}"
    )
    return keys, identities, keys_ok and ids_ok


def _entries(
    reader: Reader,
    children: dict[str, Node],
    name: str,
    path: str,
    read: Callable[[Reader, Node, str], T | None],
    expected: str,
) -> tuple[list[T], bool]:
    """The items of the optional non-empty list `name`, each read by `read`, and whether all
    read without error (errors reported)."""
    if name not in children:
        return [], True
    listed, listed_path = children[name], f"{path}.{name}"
    if not isinstance(listed.value, list) or not listed.value:
        reader.expected(listed, listed_path, expected)
        return [], False
    parsed = [read(reader, c, item) for item, c in reader.items(listed, listed_path)]
    found = [p for p in parsed if p is not None]
    return found, len(found) == len(parsed)


KEYLESS_SCHEMA = {
    "type": "array",
    "minItems": 1,
    "items": {
        "type": "object",
        "additionalProperties": False,
        "properties": {k: {"type": "string"} for k in _IDENTITY_KEYS},
        "allOf": [
            {"oneOf": [{"required": [f]}, {"required": [f"{f}RegExp"]}]}
            for f in ("issuer", "subject")
        ],
    },
    "description": "Fulcio certificate identities: OIDC issuer and subject (SAN), exact or "
    "`*` glob, or issuerRegExp/subjectRegExp",
}


def signer_list(
    reader: Reader, node: Node, path: str, allowed: Sequence[str]
) -> dict[str, Node] | None:
    """The entries of a signer list (`require.signatures`, an attestation's `signed`), which
    must give keys, keyless identities or both (None when not, the error reported)."""
    children = reader.mapping(node, path, allowed=allowed)
    if children is None:
        return None
    if "keys" not in children and "keyless" not in children:
        reader.error(node, path, "give keys, keyless identities, or both")
        return None
    return children


def trusted_root(reader: Reader, children: dict[str, Node], path: str) -> tuple[bytes | None, bool]:
    """The optional `trustedRoot` file of a signer list, and whether it read without error."""
    if "trustedRoot" not in children:
        return None, True
    root = _trusted_root(reader, children["trustedRoot"], f"{path}.trustedRoot")
    return root, root is not None


def roots_for(root: bytes | None) -> tuple[signing.RootFile, ...]:
    """What keyless signatures (and log entries) are verified against: the trusted root
    given, else the public-good root shipped with image-policy."""
    return (signing.RootFile.of(root if root is not None else signing.public_good_root()),)
