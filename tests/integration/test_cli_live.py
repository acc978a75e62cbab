"""`image-policy check` and `resolve` resolving live from the real registry, configured only
through a settings file: plain loopback, token auth with credentials, and a docker.io mirror."""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from policy import cli
from tests.integration.conftest import SeededRegistry
from tests.support import images
from tests.support.registry import RunningRegistry, require_registry, start_registry
from tests.support.tokenserver import TokenServer

pytestmark = pytest.mark.registry

USER, PASSWORD = "ci-robot", "tok3n-pass-9d1e"


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


RULES = """
apiVersion: image-policy/v1
kind: RuleSet
defaults: {platforms: ["linux/amd64"]}
rules:
  - id: few-layers
    match: {images: ["**"]}
    require: {maxLayers: 2}
  - id: non-root
    match: {images: ["**"]}
    require: {nonRootUser: true}
"""


def test_resolve_json_describes_an_index(registry: SeededRegistry, tmp_path: Path) -> None:
    code, out, err = run("resolve", f"{registry.host}/oci/app:multi", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["digest"] == registry.oci_index.digest
    assert doc["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert doc["tier"] == "none"
    assert [p["platform"] for p in doc["platforms"]] == ["linux/amd64", "linux/arm64/v8"]
    amd = doc["platforms"][0]
    assert (amd["layers"], amd["size"], amd["user"]) == (2, 1000, "1000")
    assert amd["labels"] == {"seed": "oci/app/linux-amd64/linux/amd64"}
    assert doc["errors"] == {}


def test_resolve_platform_filter_and_missing_tag(registry: SeededRegistry) -> None:
    code, out, _ = run(
        "resolve", f"{registry.host}/docker/app:multi", "--json", "--platform", "linux/arm64"
    )
    assert code == 0
    assert [p["platform"] for p in json.loads(out)["platforms"]] == ["linux/arm64/v8"]
    code, out, _ = run("resolve", f"{registry.host}/docker/app:nope")
    assert code == 2
    # The operator sees the class and, beside it, the registry's own words, once.
    assert "error (digest, platforms, manifest, config): image not found (" in out
    assert out.count("image not found") == 1 and "manifest unknown" in out
    code, out, _ = run("resolve", f"{registry.host}/docker/app:nope", "--json")
    doc = json.loads(out)
    assert doc["errors"]["digest"] == "image not found"
    assert "MANIFEST_UNKNOWN" in doc["details"]["digest"]


def test_check_live_allows_and_denies(registry: SeededRegistry, tmp_path: Path) -> None:
    rules = write(tmp_path / "rules.yaml", RULES.replace("maxLayers: 2", "maxLayers: 1"))
    code, out, err = run(
        "check", "--rules", rules, "--format", "json", "--image", f"{registry.host}/oci/app:multi"
    )
    assert code == 1, err
    [result] = json.loads(out)["results"]
    assert result["digest"] == registry.oci_index.digest
    assert [v["message"] for v in result["violations"]] == [
        f"{registry.host}/oci/app:multi (linux/amd64) has 2 layers; "
        "rule few-layers allows at most 1"
    ]
    rules = write(tmp_path / "rules.yaml", RULES)
    code, out, err = run("check", "--rules", rules, "--image", f"{registry.host}/oci/app:multi")
    assert code == 0, out + err


@dataclass(frozen=True)
class TokenRegistry:
    running: RunningRegistry
    tokens: TokenServer


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenRegistry]:
    """A registry that accepts only JWTs from the test token server, which wants a password."""
    require_registry()
    root = tmp_path_factory.mktemp("cli-token")
    seeding = start_registry(root / "seed")
    try:
        images.push_image(
            seeding.url,
            "team/api",
            "2.0",
            layers=[images.blob_bytes("api", 200)],
            config=images.image_config("linux/amd64", user="app"),
        )
    finally:
        seeding.stop()
    shutil.copytree(root / "seed" / "storage", root / "served" / "storage")
    with TokenServer(root / "tokens", users={USER: PASSWORD}, anonymous=False) as tokens:
        running = start_registry(root / "served", auth=tokens.auth_config())
        try:
            yield TokenRegistry(running, tokens)
        finally:
            running.stop()


def test_check_with_token_auth_credentials_from_settings(
    token_registry: TokenRegistry, tmp_path: Path
) -> None:
    host = token_registry.running.host
    rules = write(tmp_path / "rules.yaml", RULES)
    image = f"{host}/team/api:2.0"
    # Without credentials the token server refuses: decided by onResolveError, clearly.
    code, out, _ = run("check", "--rules", rules, "--format", "json", "--image", image)
    assert code == 1
    violation = json.loads(out)["results"][0]["violations"][0]
    assert "could not be fetched (registry authentication failed)" in violation["message"]
    assert "requires authentication" in violation["detail"]  # the CLI shows the operator why
    assert PASSWORD not in out
    # With the password in the settings file it resolves, and the image is allowed.
    (tmp_path / "pw").write_text(PASSWORD + "\n")
    config = write(
        tmp_path / "settings.yaml",
        f"registries:\n  {host}:\n    auth: {{username: {USER}, passwordFile: pw}}\n",
    )
    code, out, err = run("check", "--rules", rules, "--config", config, "--image", image)
    assert code == 0, out + err
    assert any(r.path.startswith("/token") for r in token_registry.tokens.token_requests())


def test_docker_io_mirror_serves_docker_hub_images(tmp_path: Path) -> None:
    """docker.io is never contacted (no internet here): the mirror answers."""
    mirror = start_registry(tmp_path / "mirror")
    try:
        digest = images.push_image(
            mirror.url,
            "library/nginx",
            "1.27",
            layers=[images.blob_bytes("nginx", 100)],
            config=images.image_config("linux/amd64", user="101"),
        )
        config = write(
            tmp_path / "settings.yaml",
            f'registries:\n  docker.io:\n    mirrors: ["{mirror.url}"]\n',
        )
        code, out, err = run("resolve", "nginx:1.27", "--json", "--config", config)
        assert code == 0, out + err
        doc = json.loads(out)
        assert doc["reference"] == "docker.io/library/nginx:1.27"
        assert doc["digest"] == digest
        assert (doc["tier"], doc["tierSource"]) == ("official", "offline rule")
        rules = write(tmp_path / "rules.yaml", RULES)
        code, out, err = run("check", "--rules", rules, "--config", config, "--image", "nginx:1.27")
        assert code == 0, out + err
    finally:
        mirror.stop()


def test_resolve_text_shows_created_labels_and_counts_in_words(registry: SeededRegistry) -> None:
    code, out, err = run("resolve", f"{registry.host}/oci/app:multi", "--platform", "linux/amd64")
    assert code == 0, err
    line = next(x for x in out.splitlines() if x.lstrip().startswith("linux/amd64"))
    assert "2 layers, " in line and ", user 1000" in line and ", created " in line
    assert "label seed=oci/app/linux-amd64/linux/amd64" in out
    assert " 1 layers" not in out


def test_resolve_exits_2_whenever_a_fact_could_not_be_had() -> None:
    """A digest reference whose manifest does not match its digest: the digest is known (it
    is in the reference), the manifest is not — once exit 0 with the error in `errors`."""
    from tests.support.hostile import HostileServer

    with HostileServer() as hostile:
        image = f"{hostile.host}/digest-mismatch/app@sha256:{'1' * 64}"
        code, out, _ = run("resolve", image, "--json", "--timeout", "5")
        document = json.loads(out)
        assert document["digest"] == f"sha256:{'1' * 64}"
        assert document["errors"]
        assert code == 2
        code, out, _ = run("resolve", image, "--timeout", "5")
        assert code == 2
        errors = [x for x in out.splitlines() if x.lstrip().startswith("error (")]
        assert len(errors) == len(set(errors)) == 1, out  # one reason, said once
