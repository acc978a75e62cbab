"""Which files of the command line's paths are inputs, and reading them within bounds.

A path given explicitly is always an input. A directory is walked for candidates
(`detect.is_candidate`: Dockerfiles and compose files by name, `.yaml`/`.yml`/`.json`):

- directories that never hold a project's own manifests are not entered: VCS metadata
  (`.git`, `.hg`, `.svn`…), package trees (`node_modules`, `bower_components`), vendored
  trees (`vendor`, `third_party`) and tool caches (`.venv`, `.tox`, `.terraform`…);
- inside a git work tree, the files git would ignore (`.gitignore`, `.git/info/exclude`, the
  global excludes) are not inputs: the list is `git ls-files --cached --others
  --exclude-standard`, read once per directory given (a directory git ignores as a whole is
  walked without git: it was named on purpose);
- symbolic links to directories are not followed (no loops); a walk that meets more than
  `max_files` entries stops with an InputError that says to narrow the path.

Reading is bounded too: a file larger than `MAX_FILE_BYTES` is not read.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from policy.errors import InputError
from policy.scanners import Skipped, detect

__all__ = ["Skipped", "Source", "read_text", "sources", "walk"]

SKIP_DIRS: frozenset[str] = frozenset(
    {
        ".git",
        ".hg",
        ".svn",
        ".bzr",
        "_darcs",
        "CVS",
        "node_modules",
        "bower_components",
        "vendor",
        "third_party",
        ".venv",
        "venv",
        "__pycache__",
        ".tox",
        ".nox",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
        ".terraform",
        ".idea",
    }
)
"""Directory names a walk never enters (given explicitly, they are walked)."""

MAX_FILES = 500_000
"""Entries (files and directories) one directory walk may meet before it gives up."""

MAX_FILE_BYTES = 64 * 1024 * 1024
"""The largest input file read."""

_GIT_TIMEOUT = 60.0


@dataclass(frozen=True)
class Source:
    """One input: its name as reported, its path (None: standard input), and whether it was
    named on the command line (explicit) or met while walking a directory."""

    name: str
    path: Path | None
    explicit: bool


def sources(paths: Sequence[str], *, max_files: int = MAX_FILES) -> list[Source]:
    """The inputs named by `paths` (`-` is standard input), directories walked in order."""
    out: list[Source] = []
    for name in paths:
        if name == "-":
            out.append(Source("<stdin>", None, True))
            continue
        path = Path(name)
        if path.is_dir():
            out.extend(Source(str(p), p, False) for p in walk(path, max_files=max_files))
        else:
            out.append(Source(name, path, True))
    return out


def walk(root: Path, *, max_files: int = MAX_FILES) -> list[Path]:
    """The candidate files under `root`, sorted; see the module docstring for what is left out."""
    listed = _git_files(root, max_files)
    # A directory git ignores as a whole (`check build/`) was named on purpose: walk it.
    if listed:
        found = [
            root / rel
            for rel in listed
            if detect.is_candidate(rel)
            and not any(part in SKIP_DIRS for part in Path(rel).parts[:-1])
        ]
        return sorted(p for p in found if p.is_file())
    return sorted(_walk_tree(root, max_files))


def _walk_tree(root: Path, max_files: int) -> Iterator[Path]:
    seen = 0
    for directory, dirnames, filenames in os.walk(root, followlinks=False):
        seen += len(dirnames) + len(filenames)
        if seen > max_files:
            raise _too_many(root, max_files)
        dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS]
        base = Path(directory)
        for filename in filenames:
            if detect.is_candidate(filename):
                path = base / filename
                if path.is_file():  # a dangling or looping symlink is not
                    yield path


def _too_many(root: Path, max_files: int) -> InputError:
    return InputError(
        f"{root}: more than {max_files:,} files under this directory; give the directories "
        "that hold manifests instead"
    )


def _git_files(root: Path, max_files: int) -> list[str] | None:
    """Paths under `root` (relative to it) that git tracks or would not ignore, or None when
    `root` is not in a git work tree (or git is not installed). The listing is read as it
    comes and stopped past `max_files` paths (InputError), so a huge tree costs no memory."""
    try:
        inside = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--is-inside-work-tree"],
            capture_output=True,
            timeout=_GIT_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if inside.returncode != 0 or inside.stdout.strip() != b"true":
        return None
    command = [
        "git",
        "-C",
        str(root),
        "-c",
        "core.quotepath=off",
        "ls-files",
        "-z",
        "--cached",
        "--others",
        "--exclude-standard",
        "--deduplicate",
    ]
    try:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    except OSError:
        return None
    assert process.stdout is not None
    entries: list[bytes] = []
    rest = b""
    try:
        while chunk := process.stdout.read(1 << 16):
            *complete, rest = (rest + chunk).split(b"\0")
            entries.extend(complete)
            if len(entries) > max_files:
                raise _too_many(root, max_files)
        if process.wait(timeout=_GIT_TIMEOUT) != 0:
            return None
    except subprocess.TimeoutExpired:
        return None
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
    return [os.fsdecode(entry) for entry in entries if entry and b"\n" not in entry]


def read_text(source: Source, stdin_text: str | None = None) -> str:
    """The text of `source`, decoded as UTF-8 with line endings kept; InputError when it
    cannot be read, is not UTF-8 or is larger than MAX_FILE_BYTES."""
    if source.path is None:
        return stdin_text or ""
    path = source.path
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if len(data) > MAX_FILE_BYTES:
        raise InputError(f"{path}: larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB; not read")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: cannot read: not UTF-8 text ({exc.reason})") from exc
