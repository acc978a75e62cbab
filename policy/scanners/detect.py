"""Tell which kind of input a file is, and scan it with the right scanner.

Detection looks at the file name first, then at the content:

| name                                                          | kind       |
|---------------------------------------------------------------|------------|
| `Dockerfile`, `Containerfile`, `Dockerfile.*`, `*.Dockerfile` | dockerfile |
| `compose.yaml`, `compose.*.yaml`, `docker-compose*.yml`       | compose    |

(any case, `.yml` or `.yaml`; `Dockerfile.dockerignore` is not a Dockerfile). Otherwise, by
content: YAML whose top-level `services` has a service with `image` or `build` is compose;
YAML with a document holding `apiVersion` and `kind` (or empty input, such as an empty
`helm template` output) is Kubernetes; text whose first instruction, after any `ARG`s, is
`FROM` is a Dockerfile; any other `.yaml`/`.yml`/`.json` file is Kubernetes (its scanner
reports broken YAML and skips documents that are not Kubernetes objects); text with one token
per line is a list of images. Anything else is an InputError.
"""

from __future__ import annotations

import fnmatch
import re
import types
from collections.abc import Mapping
from typing import Any, Literal

import yaml
from yaml.nodes import Node

from policy.errors import InputError
from policy.k8s import workloads
from policy.scanners import FoundImage, compose, dockerfile, kubernetes

Kind = Literal["kubernetes", "compose", "dockerfile", "images"]

_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_NO_ARGS: Mapping[str, str] = types.MappingProxyType({})
_COMPOSE_NAMES = (
    "docker-compose*.yml",
    "docker-compose*.yaml",
    "compose.yml",
    "compose.yaml",
    "compose.*.yml",
    "compose.*.yaml",
)
_DOCKERFILE_STEMS = ("dockerfile", "containerfile")
_YAML_SUFFIXES = (".yaml", ".yml", ".json")
_TRAILING_COMMENT = re.compile(r"[ \t]+#.*")


def kind_by_name(path: str) -> Kind | None:
    """The kind a file's name alone says ("dockerfile" or "compose"), else None."""
    name = path.replace("\\", "/").rsplit("/", 1)[-1].lower()
    if name.endswith(".dockerignore"):
        return None
    if (
        name in _DOCKERFILE_STEMS
        or name.startswith(tuple(f"{stem}." for stem in _DOCKERFILE_STEMS))
        or name.endswith(tuple(f".{stem}" for stem in _DOCKERFILE_STEMS))
    ):
        return "dockerfile"
    if any(fnmatch.fnmatchcase(name, pattern) for pattern in _COMPOSE_NAMES):
        return "compose"
    return None


def is_candidate(path: str) -> bool:
    """Whether a file met while walking a directory should be scanned: a Dockerfile or
    compose file by name, or a `.yaml`, `.yml` or `.json` file."""
    return kind_by_name(path) is not None or path.lower().endswith(_YAML_SUFFIXES)


def kind_of(path: str, text: str) -> Kind:
    """The kind of input `text` (read from `path`, or "<stdin>") is; see the module docstring.

    Raises InputError when the content matches no kind.
    """
    by_name = kind_by_name(path)
    if by_name is not None:
        return by_name
    if not text.strip():
        return "kubernetes"
    if compose.looks_like_compose(text):
        return "compose"
    if kubernetes.looks_like_kubernetes(text):
        return "kubernetes"
    keywords = [k for k in dockerfile.instructions(text) if k != "ARG"]
    if keywords[:1] == ["FROM"]:
        return "dockerfile"
    if path.lower().endswith(_YAML_SUFFIXES):
        return "kubernetes"
    if all(len(_entry(line).split()) <= 1 for line in text.splitlines()):
        return "images"
    raise InputError(
        f"{path}: cannot tell what kind of file this is (expected Kubernetes YAML, "
        "a compose file, a Dockerfile or a list of images, one per line)"
    )


HELM_HINT = "a Helm template: render it first (`helm template CHART | image-policy check -`)"
NOT_AN_INPUT = "not a Kubernetes object or compose file"
_TEMPLATE_ACTION = re.compile(r"\{\{-?\s*[-.$\w(\"/]")


def triage(path: str, text: str, *, chart_template: bool = False) -> Kind | str:
    """The kind to scan `text` as, or why a YAML/JSON file is skipped (a string).

    Files named as Dockerfiles or compose files are always scanned. A YAML file holding Go
    template actions (`{{ .Values.x }}`) is a Helm template when it lies in a chart's
    `templates/` directory (`chart_template`) or is not valid YAML; a `.yaml`/`.yml`/`.json`
    file that is neither compose nor a Kubernetes manifest (`tsconfig.json`, `values.yaml`,
    a JSON data file, a GitHub workflow) is skipped. Other files go to `kind_of`.
    """
    by_name = kind_by_name(path)
    if by_name is not None:
        return by_name
    if not path.lower().endswith(_YAML_SUFFIXES) or not text.strip():
        return kind_of(path, text)
    try:
        roots: list[Node] | None = list(yaml.compose_all(text, Loader=_LOADER))
    except (yaml.YAMLError, RecursionError):
        roots = None
    if _TEMPLATE_ACTION.search(text) and (chart_template or roots is None):
        return HELM_HINT
    if roots is None:  # broken YAML that looks like a manifest is reported by its scanner
        return "kubernetes" if kubernetes.looks_like_kubernetes(text) else NOT_AN_INPUT
    if any(compose.is_compose_root(root) for root in roots):
        return "compose"
    if any(kubernetes.is_object_root(root) for root in roots):
        return "kubernetes"
    return NOT_AN_INPUT


def scan(
    path: str,
    text: str,
    *,
    env: Mapping[str, str],
    build_args: Mapping[str, str] = _NO_ARGS,
) -> list[FoundImage]:
    """The images of `text`, scanned as `kind_of(path, text)` says.

    `env` interpolates compose files; `build_args` are a Dockerfile's build args.
    """
    return scan_as(kind_of(path, text), path, text, env=env, build_args=build_args)


def scan_as(
    kind: Kind,
    path: str,
    text: str,
    *,
    env: Mapping[str, str],
    build_args: Mapping[str, str] = _NO_ARGS,
    table: workloads.Table | None = None,
    explain: list[str] | None = None,
) -> list[FoundImage]:
    """The images of `text` scanned as `kind` (`table` and `explain`: `kubernetes.scan`)."""
    if kind == "compose":
        return compose.scan(text, path, env=env)
    if kind == "dockerfile":
        return dockerfile.scan(text, path, build_args=build_args)
    if kind == "images":
        return images_from(text, path)
    return kubernetes.scan(text, path, table=table, explain=explain)


def images_from(text: str, filename: str) -> list[FoundImage]:
    """The images of a list (`--images-from FILE`): one reference per line, kind "list".

    Blank lines, `#` comment lines and trailing ` # comments` are skipped; each image is
    located at its first character. A line with more than one token is an InputError (all
    such lines reported at once).
    """
    found: list[FoundImage] = []
    problems: list[str] = []
    for number, line in enumerate(text.removeprefix("\ufeff").splitlines(), start=1):
        entry = _entry(line)
        tokens = entry.split()
        if not tokens:
            continue
        column = len(line) - len(line.lstrip()) + 1
        if len(tokens) > 1:
            problems.append(
                f"{filename}:{number}:{column}: expected one image reference per line, "
                f"got {len(tokens)}: {entry.strip()!r}"
            )
            continue
        found.append(
            FoundImage(
                image=tokens[0],
                file=filename,
                line=number,
                column=column,
                kind="list",
                name="",
                namespace=None,
                container="",
                field="image",
            )
        )
    if problems:
        raise InputError("\n".join(problems))
    return found


def _entry(line: str) -> str:
    """A list line without its comment."""
    if line.lstrip().startswith("#"):
        return ""
    return _TRAILING_COMMENT.sub("", line)
