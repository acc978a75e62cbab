"""`image-policy pin` against the real registry: a diff by default, byte-exact rewrites with
--write, every other byte untouched, and idempotent."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from policy import cli
from tests.integration.conftest import SeededRegistry

pytestmark = pytest.mark.registry


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_pin_kubernetes_compose_and_dockerfile(registry: SeededRegistry, tmp_path: Path) -> None:
    host = registry.host
    list_digest = registry.docker_list.digest
    single_digest = registry.oci_image.digest
    manifest = tmp_path / "deploy.yaml"
    manifest.write_text(
        "# keep me\r\n"
        "apiVersion: v1\r\nkind: Pod\r\nmetadata: {name: p}\r\nspec:\r\n"
        "  containers:\r\n"
        f"    - {{name: a, image: '{host}/docker/app:multi'}}   # quoted, flow style\r\n"
        f"    - name: b\r\n      image: {host}/oci/app@{single_digest}\r\n"
    )
    compose = tmp_path / "compose.yaml"
    compose.write_text(
        f'services:\n  web:\n    image: "{host}/oci/app:single"\n'
        f"  var:\n    image: {host}/oci/app:${{TAG:-single}}\n"
    )
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(f"FROM --platform=linux/amd64 {host}/docker/app:multi AS build\nRUN x\n")
    before = {p: p.read_bytes() for p in (manifest, compose, dockerfile)}

    code, out, err = run("pin", str(tmp_path))
    assert code == 0, err
    assert f"+      image: {host}" not in out  # the pinned line b is unchanged
    assert f"-    - {{name: a, image: '{host}/docker/app:multi'}}" in out
    assert f"+    - {{name: a, image: '{host}/docker/app:multi@{list_digest}'}}" in out
    assert {p: p.read_bytes() for p in before} == before  # a diff only, nothing written
    assert "variables" in err or "${TAG" in err  # the interpolated image is not pinned in place

    code, _, err = run("pin", "--write", str(tmp_path))
    assert code == 0, err
    pinned = {p: p.read_bytes() for p in before}
    assert pinned[manifest] == before[manifest].replace(
        f"{host}/docker/app:multi'".encode(), f"{host}/docker/app:multi@{list_digest}'".encode()
    )
    assert pinned[compose] == before[compose].replace(
        f'"{host}/oci/app:single"'.encode(), f'"{host}/oci/app:single@{single_digest}"'.encode()
    )
    assert pinned[dockerfile] == before[dockerfile].replace(
        b"docker/app:multi AS", f"docker/app:multi@{list_digest} AS".encode()
    )

    code, out, err = run("pin", "--write", str(tmp_path))
    assert (code, out) == (0, "")
    assert {p: p.read_bytes() for p in before} == pinned


def test_pin_reports_unresolvable_images(registry: SeededRegistry, tmp_path: Path) -> None:
    manifest = tmp_path / "pod.yaml"
    manifest.write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n"
        f"    - {{name: a, image: {registry.host}/docker/app:missing}}\n"
    )
    code, _, err = run("pin", "--write", str(manifest))
    assert code == 2
    assert "docker/app:missing" in err and "manifest unknown" in err
    assert "missing@" not in manifest.read_text()
