"""Readers for the values that recur across the settings file's sections: URLs, durations,
sizes and files, each reporting a located error that names the type found, never the value."""

from __future__ import annotations

from pathlib import Path

from policy import units
from policy.yamlsrc import Node, Reader

SIZE_UNITS = "units B, KB, MB, GB, KiB, MiB, GiB"


def url(reader: Reader, node: Node, path: str) -> str | None:
    """An http(s) URL, without its trailing slashes."""
    text = reader.string(node, path)
    if text is None:
        return None
    if not text.startswith(("https://", "http://")):
        reader.error(node, path, f"expected an http(s) URL, got {reader.found(node)}")
        return None
    return text.rstrip("/")


def duration(reader: Reader, node: Node, path: str) -> float | None:
    """Seconds, from `5s`, `250ms`, `24h` or a number."""
    return reader.parsed(node, path, units.parse_duration)


def size(reader: Reader, node: Node, path: str, example: str) -> int | None:
    """Bytes, from `256MiB`, `1GB` or a number; `example` is shown in the error."""
    try:
        return units.parse_size(node.value)
    except ValueError:
        message = (
            f"expected a positive size like {example} ({SIZE_UNITS}), got {reader.found(node)}"
        )
        reader.error(node, path, message)
        return None


def existing_file(reader: Reader, node: Node, path: str, base: Path) -> str | None:
    """The path of a file that exists, relative to the settings file's directory `base`."""
    name = reader.string(node, path)
    if name is None:
        return None
    if not (base / name).is_file():
        message = "no such file (a relative path is read from the settings file's directory)"
        reader.error(node, path, message)
        return None
    return str(base / name)


def password_file(reader: Reader, node: Node, path: str, base: Path) -> str | None:
    """The password in the file `node` names (relative to `base`), stripped; an unreadable
    file is an error that names neither the file nor its contents."""
    name = reader.string(node, path)
    if name is None:
        return None
    try:
        return (base / name).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reader.error(node, path, f"cannot read password file: {why_unreadable(exc)}")
        return None


def why_unreadable(exc: OSError | UnicodeDecodeError) -> str:
    """Why a file could not be read, without its name or contents."""
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8 text"
    return exc.strerror or type(exc).__name__
