"""policy.scanners.compose: `services.*.image` of compose files, interpolated, located."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from policy.errors import InputError
from policy.scanners import FoundImage, compose

COMPOSE = Path(__file__).parent.parent / "data" / "compose"
PINNED = "sha256:c5b1261d6d3e43071626931fc004f70149baeba2c8ec672bd4f27761f8e1ad6b"
SHOP_ENV = {"API_TAG": "3.4", "MIGRATE_IMAGE": "ghcr.io/acme/migrate:9", "ADMIN_SUFFIX": "beta"}

# (line, column, image, service, template)
Row = tuple[int, int, str, str, str | None]


def rows(found: list[FoundImage]) -> list[Row]:
    return [(f.line, f.column, f.image, f.name, f.template) for f in found]


@pytest.mark.parametrize(
    ("filename", "env", "expected"),
    [
        (
            "compose.yaml",
            SHOP_ENV,
            [
                # merged from the `x-common` anchor: located where the anchor writes it
                (5, 10, "registry.example.com/shop/base:2.1", "worker",
                 "registry.example.com/shop/base:${BASE_TAG:-2.1}"),
                (10, 12, "nginx:1.25", "web", None),
                (14, 12, "ghcr.io/acme/api:3.4", "api", "ghcr.io/acme/api:${API_TAG}"),
                # profiles do not matter; `builder-only` (build, no image) is skipped
                (23, 12, "busybox:1.36", "debug", None),
                (24, 18, "redis:7.2", "cache", "redis:${REDIS_VERSION-7.2}"),
                (26, 12, "ghcr.io/acme/migrate:9", "migrate",
                 "${MIGRATE_IMAGE:?set MIGRATE_IMAGE to the migration image}"),
                (29, 12, "ghcr.io/acme/admin-beta:1.0", "admin",
                 "ghcr.io/acme/admin${ADMIN_SUFFIX:+-$ADMIN_SUFFIX}:1.0"),
            ],
        ),
        (
            "compose.yaml",
            {**SHOP_ENV, "BASE_TAG": "", "REDIS_VERSION": "", "ADMIN_SUFFIX": ""},
            [
                (5, 10, "registry.example.com/shop/base:2.1", "worker",
                 "registry.example.com/shop/base:${BASE_TAG:-2.1}"),
                (10, 12, "nginx:1.25", "web", None),
                (14, 12, "ghcr.io/acme/api:3.4", "api", "ghcr.io/acme/api:${API_TAG}"),
                (23, 12, "busybox:1.36", "debug", None),
                (24, 18, "redis:", "cache", "redis:${REDIS_VERSION-7.2}"),
                (26, 12, "ghcr.io/acme/migrate:9", "migrate",
                 "${MIGRATE_IMAGE:?set MIGRATE_IMAGE to the migration image}"),
                (29, 12, "ghcr.io/acme/admin:1.0", "admin",
                 "ghcr.io/acme/admin${ADMIN_SUFFIX:+-$ADMIN_SUFFIX}:1.0"),
            ],
        ),
        (
            "docker-compose.yml",
            {},
            [
                (3, 12, "postgres:16.2", "db", None),
                (7, 12, "traefik:v3.0", "proxy", None),
                (8, 18, "rabbitmq:3.13-management", "queue", None),
                (10, 12, "ghcr.io/acme/tools:1", "tools", None),
                (13, 12, "ghcr.io/acme/app:dev", "app", "ghcr.io/acme/app:${TAG:-dev}"),
                (15, 12, f"alpine:3.19@{PINNED}", "pinned", None),
            ],
        ),
    ],
)  # fmt: skip
def test_sample_files(filename: str, env: dict[str, str], expected: list[Row]) -> None:
    found = compose.scan((COMPOSE / filename).read_text(), filename, env=env)
    assert rows(found) == expected
    assert {(f.kind, f.field, f.namespace, f.container) for f in found} == {
        ("compose", "image", None, "")
    }


def test_every_unset_variable_is_reported_at_once() -> None:
    text = (COMPOSE / "compose.yaml").read_text()
    with pytest.raises(InputError) as raised:
        compose.scan(text, "compose.yaml", env={})
    assert str(raised.value).splitlines() == [
        "compose.yaml:14:12: services.api.image: variable ${API_TAG} is not set "
        "(set it or give a default: ${API_TAG:-default})",
        "compose.yaml:26:12: services.migrate.image: variable ${MIGRATE_IMAGE} is required "
        "but not set: set MIGRATE_IMAGE to the migration image",
    ]


@pytest.mark.parametrize(
    ("template", "env", "expected"),
    [
        ("$A", {"A": "1"}, "1"),
        ("${A}", {"A": "1"}, "1"),
        ("x${A}y$A", {"A": "1"}, "x1y1"),
        ("${A:-d}", {}, "d"),
        ("${A:-d}", {"A": ""}, "d"),
        ("${A:-d}", {"A": "v"}, "v"),
        ("${A-d}", {}, "d"),
        ("${A-d}", {"A": ""}, ""),
        ("${A-d}", {"A": "v"}, "v"),
        ("${A:?err}", {"A": "v"}, "v"),
        ("${A?err}", {"A": ""}, ""),
        ("${A:+alt}", {"A": "v"}, "alt"),
        ("${A:+alt}", {"A": ""}, ""),
        ("${A:+alt}", {}, ""),
        ("${A+alt}", {"A": ""}, "alt"),
        ("${A+alt}", {}, ""),
        ("$$A", {}, "$A"),
        ("$${A}", {}, "${A}"),
        ("a$$", {}, "a$"),
        ("${A:-${B:-x}}", {}, "x"),
        ("${A:-${B:-x}}", {"B": "y"}, "y"),
        ("${A:-$B}", {"A": "1"}, "1"),  # an unused default is not evaluated
        ("${A:+$B}", {}, ""),
        ("${A:-a}}", {}, "a}"),
        ("${_a1}", {"_a1": "lower"}, "lower"),
    ],
)
def test_interpolation(template: str, env: dict[str, str], expected: str) -> None:
    assert compose.interpolate(template, env) == (expected, [])


@pytest.mark.parametrize(
    ("template", "env", "problem"),
    [
        ("$A", {}, r"variable \$\{A\} is not set \(set it or give a default: \$\{A:-default\}\)"),
        ("${A}", {}, r"variable \$\{A\} is not set"),
        ("${A:?err}", {"A": ""}, r"variable \$\{A\} is required but empty: err"),
        ("${A:?err}", {}, r"variable \$\{A\} is required but not set: err"),
        ("${A?}", {}, r"variable \$\{A\} is required but not set$"),
        ("${A:-$B}", {}, r"variable \$\{B\} is not set"),
        ("${A:?must be $B}", {}, r"variable \$\{B\} is not set"),
        ("a$1", {}, r"invalid interpolation at '\$1' \(write \$\$ for a literal \$\)"),
        ("${A/x/y}", {"A": "x"}, r"invalid interpolation \$\{A/x/y\}"),
        ("${}", {}, r"invalid interpolation \$\{\}"),
        ("x${A", {"A": "1"}, r"unterminated variable '\$\{A'"),
    ],
)
def test_interpolation_problems(template: str, env: dict[str, str], problem: str) -> None:
    _, problems = compose.interpolate(template, env)
    assert problems
    assert re.search(problem, problems[0]), problems


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", []),
        ("name: x\n", []),
        ("services:\n", []),
        ("services:\n  a:\n", []),
        ("services:\n  a:\n    build: .\n", []),
        ("services:\n  a:\n    image:\n", []),
        ("services:\n  a:\n    image: !reset null\n", []),
        ("services:\n  a:\n    extends: {file: b.yaml, service: b}\n", []),
        ('services:\n  "web": {image: "nginx"}\n', [(2, 18, "nginx", "web", None)]),
        ("services:\n  a: &a {image: x:1}\n  b: *a\n", [(2, 17, "x:1", "a", None),
                                                      (2, 17, "x:1", "b", None)]),
        ("include: [other.yaml]\nx-img: &i y:2\nservices:\n  c:\n    image: *i\n",
         [(2, 8, "y:2", "c", None)]),
        ("services:\n  a: &a\n    <<: *a\n    image: z\n", [(4, 12, "z", "a", None)]),
    ],
)  # fmt: skip
def test_shapes(text: str, expected: list[Row]) -> None:
    assert rows(compose.scan(text, "c.yaml", env={})) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("services: [a, b]\n", r"^c\.yaml:1:11: services: expected a mapping$"),
        ("services:\n  a: [x]\n", r"^c\.yaml:2:6: services\.a: expected a mapping$"),
        (
            "services:\n  a:\n    image: 12\n  b:\n    image: {x: 1}\n",
            r"^c\.yaml:3:12: services\.a\.image: expected an image reference \(a string\)\n"
            r"c\.yaml:5:12: services\.b\.image: expected an image reference",
        ),
        ("- a\n", r"^c\.yaml:1:1: expected a compose file \(a mapping\)$"),
        ("services:\n  a: {image: [\n", r"^c\.yaml:3:1: "),
    ],
)
def test_malformed_files_are_located(text: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        compose.scan(text, "c.yaml", env={})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("services:\n  a:\n    image: x\n", True),
        ("services:\n  a:\n    build: .\n", True),
        ("version: '3'\nservices:\n  a: {image: x}\n", True),
        ("services: {}\n", False),
        ("services:\n  a:\n    ports: [80]\n", False),
        ("apiVersion: v1\nkind: Pod\n", False),
        ("services: [\n", False),
        ("FROM nginx\n", False),
    ],
)
def test_looks_like_compose(text: str, expected: bool) -> None:
    assert compose.looks_like_compose(text) is expected
