"""policy.scanners.dockerfile: the images a Dockerfile pulls, ARGs substituted, located."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from policy.errors import InputError
from policy.scanners import FoundImage, dockerfile

DOCKERFILES = Path(__file__).parent.parent / "data" / "dockerfiles"

# (line, column, image, stage, field, template, platform)
Row = tuple[int, int, str, str, str, str | None, str | None]


def rows(found: list[FoundImage]) -> list[Row]:
    return [(f.line, f.column, f.image, f.name, f.field, f.template, f.platform) for f in found]


def scan_text(text: str, **build_args: str) -> list[Row]:
    return rows(dockerfile.scan(text, "Dockerfile", build_args=build_args))


MULTI_STAGE: list[Row] = [
    (7, 32, "golang:1.22-alpine", "build", "from", "golang:${GO_VERSION}-alpine",
     "$BUILDPLATFORM"),
    (10, 28, "ghcr.io/acme/protos:2024.1", "build", "mount-from", None, None),
    (12, 13, "busybox:1.36", "build", "copy-from", None, None),
    # `from build as test` (a stage), COPY --from=build/0/runtime/export, the heredoc body
    # and `FROM scratch` are not images.
    (19, 3, "docker.io/library/alpine:3.19", "runtime", "from", "${RUNTIME}", None),
    (29, 29, "gcr.io/distroless/static-debian12:nonroot", "", "from", None, "linux/amd64"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("filename", "build_args", "expected"),
    [
        ("Dockerfile", {}, MULTI_STAGE),
        (
            "Dockerfile",
            {"GO_VERSION": "1.23", "REGISTRY": "mirror.example.com", "UNUSED": "x"},
            [
                (7, 32, "golang:1.23-alpine", *MULTI_STAGE[0][3:]),
                *MULTI_STAGE[1:3],
                (19, 3, "mirror.example.com/library/alpine:3.19", *MULTI_STAGE[3][3:]),
                MULTI_STAGE[4],
            ],
        ),
        (
            "windows.Dockerfile",
            {},
            [
                (2, 6, "mcr.microsoft.com/windows/servercore:ltsc2022", "base", "from", None,
                 None),
                (3, 13, "mcr.microsoft.com/powershell:lts-nanoserver-ltsc2022", "base",
                 "copy-from", None, None),
            ],
        ),
        (
            "Containerfile.plain",
            {},
            [
                (1, 6, "nginx:1.25", "", "from", None, None),
                (3, 6, "python:3.12-slim", "app", "from", None, None),
            ],
        ),
    ],
)  # fmt: skip
def test_sample_files(filename: str, build_args: dict[str, str], expected: list[Row]) -> None:
    text = (DOCKERFILES / filename).read_text()
    found = dockerfile.scan(text, filename, build_args=build_args)
    assert rows(found) == expected
    assert {(f.kind, f.file, f.namespace, f.container) for f in found} == {
        ("Dockerfile", filename, None, "")
    }


def test_crlf_file_scans_like_lf() -> None:
    text = (DOCKERFILES / "Dockerfile").read_text()
    assert scan_text(text.replace("\n", "\r\n")) == MULTI_STAGE


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("FROM nginx\n", [(1, 6, "nginx", "", "from", None, None)]),
        ("  fRoM   nginx:1   aS   Web  \n", [(1, 10, "nginx:1", "web", "from", None, None)]),
        ("FROM a AS x\nFROM X\nFROM y AS z\n", [(1, 6, "a", "x", "from", None, None),
                                                (3, 6, "y", "z", "from", None, None)]),
        # a stage name used before the stage is defined is an image, as for BuildKit
        ("FROM later\nFROM b AS later\n", [(1, 6, "later", "", "from", None, None),
                                           (2, 6, "b", "later", "from", None, None)]),
        ("FROM scratch\n", []),
        ("ARG V=1\nFROM a:$V\n", [(2, 6, "a:1", "", "from", "a:$V", None)]),
        ("ARG V=1\nFROM a:${V:+2}\n", [(2, 6, "a:2", "", "from", "a:${V:+2}", None)]),
        ("ARG V\nFROM a:${V:-3}\n", [(2, 6, "a:3", "", "from", "a:${V:-3}", None)]),
        ("ARG V=\nFROM a:${V-4}x\n", [(2, 6, "a:x", "", "from", "a:${V-4}x", None)]),
        ("ARG V\nFROM a${V:+:5}\n", [(2, 6, "a", "", "from", "a${V:+:5}", None)]),
        ("ARG V=\nFROM a${V+:6}\n", [(2, 6, "a:6", "", "from", "a${V+:6}", None)]),
        ("ARG A=1 B=${A}.2\nFROM x:$B\n", [(2, 6, "x:1.2", "", "from", "x:$B", None)]),
        ('ARG A="1 2" B=\'$A\'\nFROM x:${B}\n', [(2, 6, "x:$A", "", "from", "x:${B}", None)]),
        ("ARG V=1\nFROM a:\\$V\n", [(2, 6, "a:$V", "", "from", None, None)]),
        ("FROM 'a:1'\n", [(1, 6, "a:1", "", "from", None, None)]),
        ("FROM a\nARG V=9\nFROM b:${V:-0}\n", [(1, 6, "a", "", "from", None, None),
                                               (3, 6, "b:0", "", "from", "b:${V:-0}", None)]),
        ("FROM --platform=${TARGETPLATFORM} a\n",
         [(1, 35, "a", "", "from", None, "${TARGETPLATFORM}")]),
        ("FROM a\\\n:1\n", [(1, 6, "a:1", "", "from", None, None)]),
        ("FROM \\\n\n   \n  # c\n  a\n", [(5, 3, "a", "", "from", None, None)]),
        ("FROM a\nRUN echo '<<X' \"<<Y\"\nFROM b\n",
         [(1, 6, "a", "", "from", None, None), (3, 6, "b", "", "from", None, None)]),
        ("FROM a\nCOPY <<\"EOT\" /x\nFROM c\nEOT\nFROM b\n",
         [(1, 6, "a", "", "from", None, None), (5, 6, "b", "", "from", None, None)]),
        ("RUN <<-A <<B\n\tFROM x\n\tA\nFROM y\nB\nFROM z\n", [(6, 6, "z", "", "from", None,
                                                                  None)]),
        ("FROM a AS s\nCOPY --from=s --chown=1 x y\nCOPY --from=1 x y\nADD --from=b:1 x y\n",
         [(1, 6, "a", "s", "from", None, None), (4, 12, "b:1", "s", "copy-from", None, None)]),
        ("FROM a\nCOPY --from=future x y\nFROM b AS future\n",
         [(1, 6, "a", "", "from", None, None), (3, 6, "b", "future", "from", None, None)]),
        ("FROM a\nARG I=c:2\nCOPY --from=$I x y\n",
         [(1, 6, "a", "", "from", None, None), (3, 13, "c:2", "", "copy-from", "$I", None)]),
        ("ARG I=g:1\nFROM a\nARG I\nRUN --mount=from=${I},target=/t x\n",
         [(2, 6, "a", "", "from", None, None),
          (4, 18, "g:1", "", "mount-from", "${I}", None)]),
        ("COPY --from=x:1 a b\n", []),  # no stage yet: not a valid Dockerfile, nothing to pull
        ("", []),
    ],
)  # fmt: skip
def test_instructions(text: str, expected: list[Row]) -> None:
    assert scan_text(text) == expected


def test_escape_directive_changes_the_continuation_character() -> None:
    text = "# escape=`\nFROM a`\n:1 AS x\nRUN dir c:\\\nFROM b\\\n"
    assert scan_text(text) == [
        (2, 6, "a:1", "x", "from", None, None),
        (5, 6, "b\\", "", "from", None, None),
    ]


def test_build_args_override_defaults_and_set_platform_args() -> None:
    text = "ARG V=1\nARG W\nFROM a:$V-$W-${TARGETARCH}\n"
    assert scan_text(text, V="2", W="3", TARGETARCH="arm64") == [
        (3, 6, "a:2-3-arm64", "", "from", "a:$V-$W-${TARGETARCH}", None)
    ]


def test_every_variable_without_a_value_is_reported_at_once() -> None:
    text = (
        "ARG TAG\n"
        "ARG BAD=${NOPE}\n"
        "FROM a:$TAG\n"
        "FROM b:${UNDECLARED}\n"
        "FROM c-${TARGETARCH}\n"
        "FROM d:$BAD\n"
        "FROM e:${TAG:?pass-TAG}\n"
        "FROM f AS g h\n"
        "COPY --from=${X} a b\n"
        "FROM\n"
        "FROM x:${TAG/a/b}\n"
    )
    with pytest.raises(InputError) as raised:
        dockerfile.scan(text, "Dockerfile", build_args={"UNDECLARED": "ignored"})
    assert str(raised.value).splitlines() == [
        "Dockerfile:3:6: FROM: ARG TAG has no value (give it a default, ARG TAG=…, "
        "or pass the build arg TAG)",
        "Dockerfile:4:6: FROM: variable ${UNDECLARED} is not declared by an ARG before the "
        "first FROM",
        "Dockerfile:5:6: FROM: ${TARGETARCH} is set by the builder (pass the build arg TARGETARCH)",
        "Dockerfile:6:6: FROM: ARG BAD has no value (give it a default, ARG BAD=…, "
        "or pass the build arg BAD)",
        "Dockerfile:7:6: FROM: variable ${TAG} is required: pass-TAG",
        "Dockerfile:8:1: FROM: expected `FROM [--platform=P] image [AS name]`, got 'f AS g h'",
        "Dockerfile:9:13: COPY --from: variable ${X} is not declared by an ARG in this stage",
        "Dockerfile:10:1: FROM: expected `FROM [--platform=P] image [AS name]`, got 'nothing'",
        "Dockerfile:11:6: FROM: unsupported variable syntax at '${TAG/a/b}' (use $VAR, "
        "${VAR}, or the :-, -, :+, +, :? and ? operators)",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("FROM a\nRUN x\n", ["FROM", "RUN"]),
        ("# syntax=x\n# escape=`\n\n# c\nARG A\nfrom a\n", ["ARG", "FROM"]),
        ("nginx:1.25\n", ["NGINX:1.25"]),
        ("", []),
    ],
)
def test_instruction_keywords(text: str, expected: list[str]) -> None:
    assert dockerfile.instructions(text) == expected


def doubling_args(count: int, *, base: str = "x", stage: bool = False) -> str:
    """`ARG A0=x`, then `ARG A{i}=${A{i-1}}${A{i-1}}`: A{i} is 2**i characters long."""
    lines = [f"ARG A0={base}"] + [f"ARG A{i}=${{A{i - 1}}}${{A{i - 1}}}" for i in range(1, count)]
    if stage:
        return (
            "FROM alpine AS build\n" + "\n".join(lines) + f"\nCOPY --from=${{A{count - 1}}} a b\n"
        )
    return "\n".join(lines) + f"\nFROM alpine:${{A{count - 1}}}\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            doubling_args(39),
            "Dockerfile:18:1: ARG A17: value longer than 65536 characters once its variables are "
            "substituted (ARGs that double each other?)",
        ),
        (
            doubling_args(39, stage=True),
            "Dockerfile:19:1: ARG A17: value longer than 65536",
        ),
        (
            "ARG A=" + "x" * 40_000 + "\nFROM alpine:${A}${A}\n",
            "Dockerfile:2:6: FROM: value longer than 65536",
        ),
        (
            "ARG A=" + "x" * 40_000 + "\nFROM a\nARG A\nCOPY --from=${A:-y}$A a b\n",
            "Dockerfile:4:13: COPY --from: value longer than 65536",
        ),
        (
            "ARG A=" + "x" * 40_000 + "\nARG B=${A:+set}${A:?}${A}\nFROM b\n",
            "Dockerfile:2:1: ARG B: value longer than 65536",
        ),
        (
            # One line naming a 60,000-character ARG a thousand times: refused at the second.
            "ARG A=" + "x" * 60_000 + "\nARG B=" + "${A}" * 1000 + "\nFROM b\n",
            "Dockerfile:2:1: ARG B: value longer than 65536",
        ),
    ],
    ids=["39-doubling-args", "in-a-stage", "from", "copy-from", "operators", "many-uses"],
)
def test_substitution_is_bounded(text: str, message: str) -> None:
    started = time.perf_counter()
    with pytest.raises(InputError) as raised:
        dockerfile.scan(text, "Dockerfile")
    assert time.perf_counter() - started < 2.0  # exponential growth took minutes and GBs
    assert str(raised.value).startswith(message)


def test_a_value_of_exactly_the_limit_is_substituted() -> None:
    """A16 is 2**16 = 65,536 characters: the limit itself is allowed."""
    found = dockerfile.scan(doubling_args(17), "Dockerfile")
    assert len(found) == 1 and found[0].image == "alpine:" + "x" * 65_536
