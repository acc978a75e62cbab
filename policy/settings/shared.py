"""The settings file's `cache.shared` section: the Redis (or Valkey) tier shared by every
replica — its URL, credentials (from a file or the environment, never the settings file),
CA, key prefix, timeouts, lease and limits."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from policy.settings import fields
from policy.settings.model import SharedCacheSettings
from policy.yamlsrc import Node, Reader, join

_SHARED_KEYS = (
    "url",
    "username",
    "passwordFile",
    "passwordEnv",
    "ca",
    "keyPrefix",
    "timeouts",
    "lease",
    "contentTTL",
    "maxEntryBytes",
    "maxConnections",
    "breakAfter",
    "breakFor",
)


def _shared_password(
    reader: Reader, node: Node, children: Mapping[str, Node], base: Path, env: Mapping[str, str]
) -> str | None:
    """The Redis password from `passwordFile` or `passwordEnv` (never from the file itself)."""
    path = "cache.shared"
    if "passwordFile" in children and "passwordEnv" in children:
        reader.error(node, path, "give passwordFile or passwordEnv, not both")
        return None
    if "passwordFile" in children:
        file_path = join(path, "passwordFile")
        return fields.password_file(reader, children["passwordFile"], file_path, base)
    if "passwordEnv" in children:
        child = children["passwordEnv"]
        name = reader.string(child, join(path, "passwordEnv"))
        if name is None:
            return None
        value = env.get(name)
        if not value:
            reader.error(
                child, join(path, "passwordEnv"), f"environment variable {name} is not set"
            )
            return None
        return value
    return None


def shared_cache(
    reader: Reader, node: Node, base: Path, env: Mapping[str, str]
) -> SharedCacheSettings | None:
    """`cache.shared`. The URL names the server only: a password in it is refused (and not
    repeated), it belongs in `passwordFile` or `passwordEnv`."""
    path = "cache.shared"
    children = reader.mapping(node, path, allowed=_SHARED_KEYS, required=("url",))
    if children is None or "url" not in children:
        return None
    url = reader.string(children["url"], join(path, "url"))
    if url is not None:
        url = _redis_url(reader, children["url"], url)
    kwargs: dict[str, object] = {}
    if "username" in children:
        kwargs["username"] = reader.string(children["username"], join(path, "username"))
    kwargs["password"] = _shared_password(reader, node, children, base, env)
    if "ca" in children:
        kwargs["ca"] = fields.existing_file(reader, children["ca"], join(path, "ca"), base)
    if "keyPrefix" in children:
        kwargs["key_prefix"] = reader.string(children["keyPrefix"], join(path, "keyPrefix"))
    if "timeouts" in children:
        timeouts_path = join(path, "timeouts")
        timeouts = (
            reader.mapping(children["timeouts"], timeouts_path, allowed=("connect", "command"))
            or {}
        )
        for key, attr in (("connect", "connect_timeout"), ("command", "command_timeout")):
            if key in timeouts:
                kwargs[attr] = fields.duration(reader, timeouts[key], join(timeouts_path, key))
    for key, attr in (("lease", "lease"), ("contentTTL", "content_ttl"), ("breakFor", "break_for")):
        if key in children:
            kwargs[attr] = fields.duration(reader, children[key], join(path, key))
    if "maxEntryBytes" in children:
        kwargs["max_entry_bytes"] = fields.size(
            reader, children["maxEntryBytes"], join(path, "maxEntryBytes"), "4MiB"
        )
    for key, attr in (("maxConnections", "max_connections"), ("breakAfter", "break_after")):
        if key in children:
            kwargs[attr] = reader.positive_int(children[key], join(path, key))
    if url is None:
        return None
    given = {k: v for k, v in kwargs.items() if v is not None}
    return SharedCacheSettings(url=url, **given)  # type: ignore[arg-type]


def _redis_url(reader: Reader, node: Node, url: str) -> str | None:
    """A `redis://` or `rediss://` URL naming a host, without a password."""
    path = "cache.shared.url"
    if not url.startswith(("redis://", "rediss://")):
        reader.error(node, path, "expected a redis:// or rediss:// URL")
        return None
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        reader.error(node, path, "expected a redis:// or rediss:// URL with a valid host:port")
        return None
    if parts.password is not None:
        message = "put the password in passwordFile or passwordEnv, not in the URL"
        reader.error(node, path, message)
        return None
    if not parts.hostname:
        reader.error(node, path, "expected a host in the URL, like redis://redis:6379/0")
        return None
    database = parts.path.strip("/")
    if database and not database.isdigit():
        reader.error(node, path, "expected a database number as the URL's path, like /0")
        return None
    return url
