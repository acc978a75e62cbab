"""policy.scanners.detect: which scanner reads a file, and `--images-from` lists."""

from __future__ import annotations

from pathlib import Path

import pytest

from policy.errors import InputError
from policy.scanners import detect

DATA = Path(__file__).parent.parent / "data"
POD = "apiVersion: v1\nkind: Pod\nspec:\n  containers:\n  - {name: a, image: nginx:1.25}\n"
COMPOSE = "services:\n  web:\n    image: nginx:1.25\n"


@pytest.mark.parametrize(
    ("path", "text", "expected"),
    [
        # by name, whatever the content
        ("Dockerfile", "", "dockerfile"),
        ("app/Dockerfile", POD, "dockerfile"),
        ("dockerfile", "", "dockerfile"),
        ("Containerfile", "", "dockerfile"),
        ("Dockerfile.prod", "", "dockerfile"),
        ("build/api.Dockerfile", "", "dockerfile"),
        ("api.containerfile", "", "dockerfile"),
        ("C:\\src\\Dockerfile", "", "dockerfile"),
        ("compose.yaml", POD, "compose"),
        ("compose.yml", "", "compose"),
        ("compose.override.yaml", "", "compose"),
        ("docker-compose.yml", "", "compose"),
        ("docker-compose.prod.yaml", "", "compose"),
        ("docker-compose-dev.yml", "", "compose"),
        # by content
        ("stack.yaml", COMPOSE, "compose"),
        ("<stdin>", COMPOSE, "compose"),
        ("<stdin>", POD, "kubernetes"),
        ("<stdin>", "", "kubernetes"),
        ("<stdin>", "---\n# Source: chart/templates/x.yaml\n" + POD, "kubernetes"),
        ("<stdin>", "apiVersion: v1\nkind: Pod\nspec: [\n", "kubernetes"),
        ("build.txt", "# syntax=docker/dockerfile:1\nARG V=1\nFROM nginx:$V\n", "dockerfile"),
        ("<stdin>", "from alpine\nrun true\n", "dockerfile"),
        ("values.yaml", "replicas: 3\n", "kubernetes"),
        ("broken.yml", "a: [\n", "kubernetes"),
        ("data.json", '{"a": 1}', "kubernetes"),
        ("Dockerfile.dockerignore", "node_modules\n", "images"),
        ("images.txt", "nginx:1.25\n# comment\n\nghcr.io/a/b:1  # app\n", "images"),
        ("<stdin>", "nginx:1.25\n", "images"),
    ],
)
def test_kind_of(path: str, text: str, expected: str) -> None:
    assert detect.kind_of(path, text) == expected


def test_unrecognized_content_is_an_input_error() -> None:
    with pytest.raises(InputError, match=r"^README\.md: cannot tell what kind of file"):
        detect.kind_of("README.md", "# Title\n\nSome prose here.\n")


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("k8s/deploy.yaml", True),
        ("k8s/deploy.YML", True),
        ("x.json", True),
        ("Dockerfile", True),
        ("sub/compose.yaml", True),
        ("README.md", False),
        ("main.py", False),
        ("Dockerfile.dockerignore", False),
    ],
)
def test_is_candidate(path: str, expected: bool) -> None:
    assert detect.is_candidate(path) is expected


@pytest.mark.parametrize(
    ("path", "kinds"),
    [
        ("manifests/deployment.yaml", {"Deployment"}),
        ("compose/compose.yaml", {"compose"}),
        ("dockerfiles/Dockerfile", {"Dockerfile"}),
        ("dockerfiles/windows.Dockerfile", {"Dockerfile"}),
        ("dockerfiles/Containerfile.plain", {"Dockerfile"}),
    ],
)
def test_scan_dispatches_by_kind(path: str, kinds: set[str]) -> None:
    env = {"API_TAG": "1", "MIGRATE_IMAGE": "m:1"}
    found = detect.scan(path, (DATA / path).read_text(), env=env)
    assert found
    assert {f.kind for f in found} == kinds
    assert {f.file for f in found} == {path}


def test_scan_passes_env_and_build_args() -> None:
    compose_found = detect.scan("<stdin>", "services:\n  a: {image: 'x:${T}'}\n", env={"T": "2"})
    assert [f.image for f in compose_found] == ["x:2"]
    docker_found = detect.scan(
        "Dockerfile", "ARG T=1\nFROM x:$T\n", env={"T": "9"}, build_args={"T": "3"}
    )
    assert [f.image for f in docker_found] == ["x:3"]
    listed = detect.scan("list.txt", "a:1\n", env={})
    assert [(f.kind, f.image) for f in listed] == [("list", "a:1")]


def test_images_from() -> None:
    text = "\ufeff# images the release uses\nnginx:1.25\n\n  ghcr.io/acme/app:2  # app\r\n#x\nb\n"
    found = detect.images_from(text, "images.txt")
    assert [(f.line, f.column, f.image) for f in found] == [
        (2, 1, "nginx:1.25"),
        (4, 3, "ghcr.io/acme/app:2"),
        (6, 1, "b"),
    ]
    assert {(f.kind, f.field, f.name, f.namespace, f.file) for f in found} == {
        ("list", "image", "", None, "images.txt")
    }


def test_images_from_reports_every_line_with_several_tokens() -> None:
    with pytest.raises(InputError) as raised:
        detect.images_from("a b\nok\n  c d e\n", "l.txt")
    assert str(raised.value).splitlines() == [
        "l.txt:1:1: expected one image reference per line, got 2: 'a b'",
        "l.txt:3:3: expected one image reference per line, got 3: 'c d e'",
    ]
