"""What `check`, `pin` and `tiers export` read: files and directories (each file's kind told by
`detect`), standard input, `--image`, `--images-from`, `--build-arg` and compose `.env` files;
and `read_file` for the other files an option names."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from policy import walk
from policy.errors import InputError
from policy.k8s import workloads
from policy.scanners import FoundImage, Skipped, detect, dotenv

# The kinds of file `check` reads images from; any other kind `detect` tells is skipped.
KINDS = ("kubernetes", "compose", "dockerfile", "images")


class Inputs:
    """What the inputs hold: the images found, the files skipped, and how each file (and,
    for `--explain`, each Kubernetes kind) was read."""

    def __init__(self) -> None:
        self.found: list[FoundImage] = []
        self.skipped: list[Skipped] = []
        self.explained: list[str] = []


def in_chart(path: Path) -> bool:
    """Whether `path` lies in a Helm chart's `templates/` tree (a `Chart.yaml` above it)."""
    parents = path.parents
    return any(
        parent.name == "templates" and (parent.parent / "Chart.yaml").is_file()
        for parent in list(parents)[:-1]
    )


def _env_files(names: Sequence[str]) -> dict[str, str]:
    texts = {}
    for name in names:
        texts[name] = _read_bounded(Path(name), dotenv.MAX_BYTES)
    return texts


def read_file(path: str, *, flag: str = "", encoding: str = "utf-8") -> str:
    """The text of the file at `path`; an InputError naming it (after `flag`, the option that
    named it) when it cannot be read or decoded."""
    try:
        return Path(path).read_text(encoding=encoding)
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{flag}{' ' if flag else ''}{path}: cannot read: {exc}") from exc


def _read_bounded(path: Path, limit: int) -> str:
    try:
        with path.open("rb") as handle:
            data = handle.read(limit + 1)
        if len(data) > limit:
            raise InputError(f"{path}: larger than {limit // 1024} KiB; not read")
        return data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read: {exc}") from exc


class ComposeEnv:
    """Interpolation variables per compose project directory: the environment over the
    `--env-file` files, or over the project directory's `.env`, each read once."""

    def __init__(self, environ: Mapping[str, str], env_files: Sequence[str]) -> None:
        self.environ = environ
        self.given = dotenv.environment(_env_files(env_files), environ) if env_files else None
        self.by_dir: dict[Path, Mapping[str, str]] = {}

    def for_file(self, path: Path | None) -> Mapping[str, str]:
        if self.given is not None:
            return self.given
        directory = Path.cwd() if path is None else path.parent
        if directory not in self.by_dir:
            dot = directory / ".env"
            files = {str(dot): _read_bounded(dot, dotenv.MAX_BYTES)} if dot.is_file() else {}
            self.by_dir[directory] = (
                dotenv.environment(files, self.environ) if files else (self.environ)
            )
        return self.by_dir[directory]


def read_inputs(
    paths: Sequence[str],
    stdin: IO[str],
    *,
    env: Mapping[str, str] | None = None,
    build_args: Mapping[str, str] | None = None,
    env_files: Sequence[str] = (),
    workload_table: workloads.Table | None = None,
) -> Inputs:
    """Every image in the inputs, each file's kind told by `detect.triage` (standard input by
    `detect.kind_of`); files that are not inputs are skipped, those named explicitly that
    cannot be read are errors."""
    environment = os.environ if env is None else env
    compose_env = ComposeEnv(environment, env_files)
    inputs = Inputs()
    for source in walk.sources(paths):
        try:
            text = walk.read_text(source, stdin.read() if source.path is None else None)
        except InputError as exc:
            if source.explicit:
                raise
            inputs.skipped.append(Skipped(source.name, str(exc).removeprefix(f"{source.path}: ")))
            continue
        if source.path is None:
            kind: str = detect.kind_of(source.name, text)
        else:
            kind = detect.triage(source.name, text, chart_template=in_chart(source.path))
        if kind not in KINDS:
            inputs.skipped.append(Skipped(source.name, kind))
            inputs.explained.append(f"{source.name}: skipped: {kind}")
            continue
        found = detect.scan_as(
            kind,  # type: ignore[arg-type]
            source.name,
            text,
            env=compose_env.for_file(source.path) if kind == "compose" else environment,
            build_args=build_args or {},
            table=workload_table,
            explain=inputs.explained,
        )
        inputs.explained.append(f"{source.name}: {kind}, {len(found)} image(s)")
        inputs.found.extend(found)
    return inputs


def images_from(files: Sequence[str], stdin: IO[str]) -> list[FoundImage]:
    found: list[FoundImage] = []
    for name in files:
        source = (
            walk.Source("<stdin>", None, True)
            if name == "-"
            else walk.Source(name, Path(name), True)
        )
        text = walk.read_text(source, stdin.read() if source.path is None else None)
        found.extend(detect.images_from(text, source.name))
    return found


def parse_build_args(pairs: Sequence[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InputError(f"--build-arg {pair!r}: expected NAME=VALUE")
        out[key] = value
    return out


def from_flags(images: Sequence[str]) -> list[FoundImage]:
    return [
        FoundImage(
            image=text,
            file="--image",
            line=0,
            column=0,
            kind="",
            name="",
            namespace=None,
            container="",
            field="",
        )
        for text in images
    ]
