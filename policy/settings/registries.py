"""The settings file's `registries:` section: per registry host, its mirrors, CA file,
`insecure`, trusted token realms and credentials."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from policy.reference import LOCALHOST, canonical_host
from policy.settings import fields
from policy.settings.model import RegistryAuth, RegistrySettings
from policy.yamlsrc import Node, Reader, join

_REGISTRY_KEYS = ("mirrors", "ca", "insecure", "tokenRealms", "auth")
_AUTH_KEYS = ("username", "password", "passwordFile")


def registries(reader: Reader, node: Node, base: Path) -> Mapping[str, RegistrySettings] | None:
    """`registries:` by canonical host (`GHCR.IO:443` configures `ghcr.io`); a host
    configured twice is an error. None when it is not a mapping."""
    if not isinstance(node.value, dict):
        reader.expected(node, "registries", "a mapping of registry hosts to settings")
        return None
    found: dict[str, RegistrySettings] = {}
    for name, child in node.value.items():
        path = f"registries.{name}"
        domain = _registry_name(reader, child, name)
        if domain is None:
            continue
        if domain in found:
            reader.error(child, path, f"{domain} is configured twice", at_key=True)
        found[domain] = _registry(reader, child, path, base)
    return MappingProxyType(found)


def _registry_name(reader: Reader, node: Node, name: str) -> str | None:
    if not name or "/" in name or any(c.isspace() for c in name):
        # Not repeated: a key that is no host name may be anything (a pasted secret).
        message = "expected a registry host like ghcr.io as the key (no '/' or spaces)"
        reader.error(node, "registries", message, at_key=True)
        return None
    lowered = name.lower()
    if lowered != LOCALHOST and "." not in lowered and ":" not in lowered:
        # A capital letter alone makes `NGINX/x` a host to Go, but references are canonical in
        # lower case, where `nginx` is a Docker Hub namespace.
        message = "expected a registry host like ghcr.io as the key (it has no '.' or ':')"
        reader.error(node, "registries", message, at_key=True)
        return None
    try:
        return canonical_host(name)  # `GHCR.IO:443` configures `ghcr.io`
    except ValueError:
        message = (
            "expected a registry host like ghcr.io as the key "
            "(a port from 1 to 65535, an IPv6 address that parses)"
        )
        reader.error(node, "registries", message, at_key=True)
        return None


def _auth(reader: Reader, node: Node, path: str, base: Path) -> RegistryAuth | None:
    children = reader.mapping(node, path, allowed=_AUTH_KEYS, required=("username",))
    if children is None or "username" not in children:
        return None
    username = reader.string(children["username"], join(path, "username"))
    password = None
    if "password" in children and "passwordFile" in children:
        reader.error(node, path, "give password or passwordFile, not both")
        return None
    if "password" in children:
        password = reader.string(children["password"], join(path, "password"))
    elif "passwordFile" in children:
        file_path = join(path, "passwordFile")
        password = fields.password_file(reader, children["passwordFile"], file_path, base)
    else:
        reader.error(node, path, "missing password or passwordFile")
    if username is None or password is None:
        return None
    return RegistryAuth(username, password)


def _urls(reader: Reader, children: Mapping[str, Node], key: str, path: str) -> list[str]:
    """The valid URLs of list `children[key]` (none when absent); the others are errors."""
    urls: list[str] = []
    if key in children:
        for item_path, child in reader.items(children[key], join(path, key)):
            url = fields.url(reader, child, item_path)
            if url is not None:
                urls.append(url)
    return urls


def _registry(reader: Reader, node: Node, path: str, base: Path) -> RegistrySettings:
    children = reader.mapping(node, path, allowed=_REGISTRY_KEYS) or {}
    mirrors = _urls(reader, children, "mirrors", path)
    ca = None
    if "ca" in children:
        ca = fields.existing_file(reader, children["ca"], join(path, "ca"), base)
    insecure = False
    if "insecure" in children:
        insecure = bool(reader.boolean(children["insecure"], join(path, "insecure")))
    realms = _urls(reader, children, "tokenRealms", path)
    auth = _auth(reader, children["auth"], join(path, "auth"), base) if "auth" in children else None
    return RegistrySettings(tuple(mirrors), ca, insecure, tuple(realms), auth)
