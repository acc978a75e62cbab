"""policy.pin: tags pinned to digests, every other byte of the file left as it was."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest

from policy import pin
from policy.errors import InputError, InvalidReference
from policy.pin import Edit
from policy.scanners import FoundImage, compose, dockerfile
from policy.scanners import kubernetes as k8s

DATA = Path(__file__).parent.parent / "data"
PINNED = "sha256:c5b1261d6d3e43071626931fc004f70149baeba2c8ec672bd4f27761f8e1ad6b"

MANIFEST = """\
# web tier
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}   # flow mapping
spec:
  template:
    spec:
      initContainers:
      - name: init
        image: "busybox:1.36"     # double quoted
      containers:
      - name: web
        image: nginx:1.25
      - {name: side, image: 'registry.k8s.io/pause:3.9'}
      - name: anchored
        image: &app ghcr.io/acme/app:2
      - name: again
        image: *app
      - name: tagged
        image: !!str quay.io/acme/tool:7
      - name: pinned
        image: alpine:3.19@DIGEST
""".replace("DIGEST", PINNED)


def digest_of(image: str) -> str:
    return "sha256:" + hashlib.sha256(image.encode()).hexdigest()


def digests_for(found: list[FoundImage]) -> dict[str, str]:
    return {f.image: digest_of(f.image) for f in found}


def scan_k8s(text: str, path: str) -> list[FoundImage]:
    return k8s.scan(text, path)


def scan_compose(text: str, path: str) -> list[FoundImage]:
    return compose.scan(text, path, env={})


def scan_dockerfile(text: str, path: str) -> list[FoundImage]:
    return dockerfile.scan(text, path)


Scanner = Callable[[str, str], list[FoundImage]]

# (name, text, scanner, images pinned, images skipped → why)
CASES: list[tuple[str, str, Scanner, list[str], dict[str, str]]] = [
    (
        "deploy.yaml",
        MANIFEST,
        scan_k8s,
        ["busybox:1.36", "nginx:1.25", "registry.k8s.io/pause:3.9", "ghcr.io/acme/app:2",
         "quay.io/acme/tool:7"],
        {f"alpine:3.19@{PINNED}": "pinned"},
    ),
    (
        "docker-compose.yml",
        (DATA / "compose" / "docker-compose.yml").read_text(),
        scan_compose,
        ["postgres:16.2", "traefik:v3.0", "rabbitmq:3.13-management", "ghcr.io/acme/tools:1"],
        {"ghcr.io/acme/app:dev": "variables", f"alpine:3.19@{PINNED}": "pinned"},
    ),
    (
        "Dockerfile",
        (DATA / "dockerfiles" / "Dockerfile").read_text(),
        scan_dockerfile,
        ["ghcr.io/acme/protos:2024.1", "busybox:1.36",
         "gcr.io/distroless/static-debian12:nonroot"],
        {"golang:1.22-alpine": "variables", "docker.io/library/alpine:3.19": "variables"},
    ),
    (
        "Containerfile.plain",
        (DATA / "dockerfiles" / "Containerfile.plain").read_text(),
        scan_dockerfile,
        ["nginx:1.25", "python:3.12-slim"],
        {},
    ),
]  # fmt: skip
CRLF_CASES = [(f"crlf-{name}", text.replace("\n", "\r\n"), *rest) for name, text, *rest in CASES]
NO_FINAL_NEWLINE = [(f"open-{name}", text.rstrip("\n"), *rest) for name, text, *rest in CASES]


@pytest.mark.parametrize(
    ("name", "before", "scanner", "pinned", "skipped"),
    CASES + CRLF_CASES + NO_FINAL_NEWLINE,
    ids=[case[0] for case in CASES + CRLF_CASES + NO_FINAL_NEWLINE],
)
def test_pin_round_trip_changes_only_the_images(
    name: str, before: str, scanner: Scanner, pinned: list[str], skipped: dict[str, str]
) -> None:
    found = scanner(before, name)
    result = pin.pin_file(name, before, found, digests_for(found))
    after = result.text
    assert sorted(edit.old for edit in result.edits) == sorted(pinned)
    assert {s.found.image: s.why for s in result.skipped} == skipped
    restored = after
    for image in pinned:
        written = f"{image}@{digest_of(image)}"
        assert after.count(written) == 1
        restored = restored.replace(written, image)
    assert restored == before  # every other byte identical: comments, quotes, CRLF, EOF
    # the pinned file scans to the pinned images, at the same places
    rescanned = scanner(after, name)
    assert [(f.line, f.column) for f in rescanned] == [(f.line, f.column) for f in found]
    # idempotent: pinning the pinned file changes nothing
    again = pin.pin_file(name, after, rescanned, digests_for(rescanned))
    assert again.text == after
    assert not again.changed
    assert {s.why for s in again.skipped} <= {"pinned", "variables"}


def test_skip_reasons() -> None:
    text = (
        "kind: Pod\napiVersion: v1\nspec:\n  containers:\n"
        "  - {name: a, image: 'nginx:1.25'}\n"
        "  - {name: b, image: redis:7}\n"
        "  - {name: c, image: NotValid}\n"
        "  - name: d\n    image: >-\n      busybox:1\n"
        '  - {name: e, image: "alp\\x69ne:3"}\n'
        "  - {name: f, image: memcached:1}\n"
    )
    found = k8s.scan(text, "pod.yaml")
    flag = FoundImage("nginx:1.25", "--image", 0, 0, "", "", None, "", "")
    digests = {
        "nginx:1.25": digest_of("nginx"),
        "busybox:1": digest_of("busybox"),
        "alpine:3": digest_of("alpine"),
        "memcached:1": "sha256:abc",
    }
    result = pin.pin_file("pod.yaml", text, [*found, flag], digests)
    assert [e.line for e in result.edits] == [5]
    assert [(s.found.image, s.why) for s in result.skipped] == [
        ("redis:7", "no-digest"),
        ("NotValid", "invalid"),
        ("busybox:1", "not-plain"),
        ("alpine:3", "not-plain"),  # written with a YAML escape
        ("memcached:1", "invalid"),
        ("nginx:1.25", "not-in-file"),
    ]
    assert "repository name must be lowercase" in result.skipped[1].reason
    assert "cannot pin to 'sha256:abc'" in result.skipped[4].reason


def test_compose_templates_are_skipped_with_the_text_as_written() -> None:
    text = "services:\n  a:\n    image: ghcr.io/a:${TAG:-1}\n"
    found = compose.scan(text, "compose.yaml", env={})
    result = pin.pin_file("compose.yaml", text, found, digests_for(found))
    assert result.text == text
    assert [s.reason for s in result.skipped] == [
        "built from variables (ghcr.io/a:${TAG:-1}); pin the value the variables get"
    ]


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("nginx", f"nginx@{PINNED}"),
        ("nginx:1.25", f"nginx:1.25@{PINNED}"),
        ("library/nginx:1", f"library/nginx:1@{PINNED}"),
        ("docker.io/library/nginx:1", f"docker.io/library/nginx:1@{PINNED}"),
        ("localhost:5000/app", f"localhost:5000/app@{PINNED}"),
        (f"nginx:1@{PINNED}", f"nginx:1@{PINNED}"),
        (f"nginx@{digest_of('other')}", f"nginx@{digest_of('other')}"),
    ],
)
def test_pinned_reference(written: str, expected: str) -> None:
    assert pin.pinned_reference(written, PINNED) == expected


@pytest.mark.parametrize(
    ("written", "digest", "problem"),
    [
        ("Nginx", PINNED, "must be lowercase"),
        ("nginx", "sha256:abc", "invalid digest"),
        ("nginx", "md5:" + "a" * 32, "unsupported digest algorithm"),
    ],
)
def test_pinned_reference_rejects(written: str, digest: str, problem: str) -> None:
    with pytest.raises(InvalidReference, match=problem):
        pin.pinned_reference(written, digest)


@pytest.mark.parametrize(
    ("text", "edits", "expected"),
    [
        ("a: x\n", [Edit(1, 4, "x", "y")], "a: y\n"),
        ("a: 'x'\r\n", [Edit(1, 4, "x", "y@z")], "a: 'y@z'\r\n"),
        ('a: "x"  # c', [Edit(1, 4, "x", "yy")], 'a: "yy"  # c'),
        ("[x, x]\n", [Edit(1, 2, "x", "1"), Edit(1, 5, "x", "2")], "[1, 2]\n"),
        ("a: &n !t x\n", [Edit(1, 4, "x", "y"), Edit(1, 4, "x", "y")], "a: &n !t y\n"),
        ("x\ry\rz", [Edit(3, 1, "z", "w")], "x\ry\rw"),
        ("FROM a AS b", [Edit(1, 6, "a", "c")], "FROM c AS b"),
        ("k: v", [], "k: v"),
    ],
)
def test_apply_edits(text: str, edits: list[Edit], expected: str) -> None:
    assert pin.apply_edits(text, edits) == expected


@pytest.mark.parametrize(
    ("text", "edit", "message"),
    [
        ("a: x\n", Edit(1, 4, "y", "z"), r"^f\.yaml:1:4: expected the image 'y' here, found 'x'$"),
        ("a: xy\n", Edit(1, 4, "x", "z"), r"^f\.yaml:1:4: expected the image 'x'"),
        ("a: 'x\n", Edit(1, 4, "x", "z"), r"^f\.yaml:1:4: expected"),
        ("a: x\n", Edit(3, 1, "x", "z"), r"^f\.yaml:3:1: no such line \(the file has 2\)$"),
        ("a: x\n", Edit(1, 9, "x", "z"), r"^f\.yaml:1:9: no such column$"),
        ('a: "x"\n', Edit(1, 4, "x", 'z"'), r"^f\.yaml:1:4: 'z\"' cannot replace 'x'"),
        ("a: 'x'\n", Edit(1, 4, "x", "z'"), r"cannot replace"),
        ("a: x\n", Edit(1, 4, "x", "z #"), r"cannot replace"),
    ],
)
def test_apply_edits_verifies_the_old_text(text: str, edit: Edit, message: str) -> None:
    with pytest.raises(InputError, match=message):
        pin.apply_edits(text, [edit], filename="f.yaml")


def test_apply_edits_rejects_conflicting_edits() -> None:
    with pytest.raises(InputError, match=r"^f:1:4: two different replacements for 'x'"):
        pin.apply_edits("a: x\n", [Edit(1, 4, "x", "y"), Edit(1, 4, "x", "z")], filename="f")


def test_unified_diff() -> None:
    before = "a: 1\nimage: nginx:1.25\r\nend"
    after = "a: 1\nimage: nginx:1.25@sha256:x\r\nend"
    assert pin.unified_diff("./k8s/app.yaml", before, after) == (
        "--- a/k8s/app.yaml\n"
        "+++ b/k8s/app.yaml\n"
        "@@ -1,3 +1,3 @@\n"
        " a: 1\n"
        "-image: nginx:1.25\r\n"
        "+image: nginx:1.25@sha256:x\r\n"
        " end\n"
        "\\ No newline at end of file\n"
    )
    assert pin.unified_diff("x", before, before) == ""


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("Dockerfile", "\ufeffFROM nginx:1.25\nRUN true\n"),
        ("Dockerfile", "\ufeffFROM nginx:1.25 AS web\r\n"),
        (
            "pod.yaml",
            "\ufeffapiVersion: v1\nkind: Pod\nspec:\n"
            "  containers: [{name: a, image: nginx:1.25}]\n",
        ),
        ("compose.yaml", "\ufeffservices: {web: {image: nginx:1.25}}\n"),
    ],
)
def test_a_byte_order_mark_is_kept_and_line_one_is_pinned(name: str, text: str) -> None:
    """Files saved by some Windows editors start with a UTF-8 BOM: the scanners count line
    1's columns after it, and so does pin (it once refused such a Dockerfile)."""
    from policy.scanners import detect

    digest = "sha256:" + "a" * 64
    found = detect.scan(name, text, env={})
    result = pin.pin_file(name, text, found, {"nginx:1.25": digest})
    assert result.skipped == ()
    assert result.text == text.replace("nginx:1.25", f"nginx:1.25@{digest}")
    assert result.text.startswith("\ufeff")
