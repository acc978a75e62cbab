"""Attestations end to end: `image-policy serve` (gunicorn, TLS) and the CLI enforce
`require.attestations` signed by a keyless identity, against images attested in cosign's
`.att` layout in the real registry (keyless, against a test Sigstore as the trusted root)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from policy import cli
from tests.e2e.conftest import CA, Seeded, Webhook, start_webhook
from tests.support import attest, cosign, images
from tests.support.reviews import pod_review
from tests.support.sigstore import GITHUB, Sigstore

pytestmark = pytest.mark.registry

STORE = Sigstore()


@dataclass(frozen=True)
class Attested:
    host: str
    root: Path


def _push(url: str, repo: str, subject: str) -> None:
    digest = images.push_image(
        url,
        repo,
        "1.0",
        layers=[images.blob_bytes(f"att/{repo}", 300)],
        config=images.image_config("linux/amd64", user="1000"),
    )
    _, provenance = attest.provenance_v02(digest)
    _, sbom = attest.sbom(digest)
    layers = [STORE.attest_cosign_layer(s, subject=subject) for s in (provenance, sbom)]
    cosign.push_attestations(url, repo, digest, layers)


@pytest.fixture(scope="module")
def attested(registry: Seeded, tmp_path_factory: pytest.TempPathFactory) -> Attested:
    url = f"http://{registry.host}"
    _push(url, "team/attested", "https://github.com/acme/app/.github/workflows/r.yml@main")
    _push(url, "team/foreign", "https://github.com/evil/app/.github/workflows/r.yml@main")
    root = tmp_path_factory.mktemp("sigstore") / "root.json"
    root.write_bytes(STORE.trusted_root())
    return Attested(registry.host, root)


def _rules(root: Path) -> str:
    return f"""\
apiVersion: image-policy/v1
kind: RuleSet
defaults: {{onResolveError: deny, unmatched: deny}}
rules:
  - id: built-by-ci
    match: {{images: ["**"]}}
    require:
      attestations:
        provenance: {{builder: ["https://github.com/acme/*"]}}
        sbom: true
        signed:
          keyless: [{{issuer: "{GITHUB}", subject: "https://github.com/acme/*"}}]
          trustedRoot: "{root}"
"""


@pytest.fixture(scope="module")
def webhook(
    tmp_path_factory: pytest.TempPathFactory, ca: CA, attested: Attested
) -> Iterator[Webhook]:
    hook = start_webhook(tmp_path_factory.mktemp("att-webhook"), ca, _rules(attested.root))
    try:
        yield hook
    finally:
        hook.stop()


def _answer(hook: Webhook, image: str) -> dict[str, Any]:
    review = pod_review(image, uid="u1", user="u", names=["c"])
    response: dict[str, Any] = hook.post("/validate", review)["response"]
    return response


def test_webhook_allows_keyless_attested_images_and_denies_other_identities(
    webhook: Webhook, attested: Attested
) -> None:
    assert _answer(webhook, f"{attested.host}/team/attested:1.0") == {"uid": "u1", "allowed": True}
    denied = _answer(webhook, f"{attested.host}/team/foreign:1.0")
    assert denied["allowed"] is False
    assert (
        "has no SLSA provenance attestation signed by a configured signer (provenance (cosign) "
        "(signed by keyless https://github.com/evil/app/.github/workflows/r.yml@main (issuer "
        f"{GITHUB}), not an identity of this rule)"
    ) in denied["status"]["message"]


def test_cli_check_enforces_the_same_rule(attested: Attested, tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(_rules(attested.root))
    settings = tmp_path / "settings.yaml"
    settings.write_text("{}\n")

    def check(image: str) -> tuple[int, str]:
        out, err = io.StringIO(), io.StringIO()
        code = cli.main(
            ["check", "--rules", str(rules), "--config", str(settings), "--image", image],
            out=out,
            err=err,
        )
        return code, out.getvalue() + err.getvalue()

    assert check(f"{attested.host}/team/attested:1.0")[0] == 0
    code, text = check(f"{attested.host}/team/foreign:1.0")
    assert code == 1, text
    assert "not an identity of this rule" in text


def test_cli_resolve_shows_who_signed_each_attestation(attested: Attested, tmp_path: Path) -> None:
    import json

    settings = tmp_path / "settings.yaml"
    settings.write_text("{}\n")
    image = f"{attested.host}/team/attested:1.0"

    def resolve(*extra: str) -> list[dict[str, Any]]:
        out, err = io.StringIO(), io.StringIO()
        argv = ["resolve", image, "--json", "--config", str(settings), "--attestations", *extra]
        assert cli.main(argv, out=out, err=err) == 0, err.getvalue()
        (platform,) = json.loads(out.getvalue())["platforms"]
        found: list[dict[str, Any]] = platform["attestations"]
        return found

    shown = resolve("--trusted-root", str(attested.root))
    assert sorted((a["kind"], a["format"], a["issuer"], a["subject"]) for a in shown) == [
        (kind, "cosign", GITHUB, "https://github.com/acme/app/.github/workflows/r.yml@main")
        for kind in ("provenance", "sbom")
    ]
    # Against the public-good root (the default), the test CA is no one's: each says why.
    for a in resolve():
        assert a["issuer"] is None
        assert a["signature"].endswith("from a log the trusted root does not know")
