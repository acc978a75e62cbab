"""Signatures end to end: `image-policy serve` (gunicorn, TLS) and the CLI enforce
`require.signatures` against images signed in cosign's layout in the real registry; `/mutate`
pins to the digest whose signature was verified."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from policy import cli, signing
from tests.e2e.conftest import CA, Seeded, Webhook, start_webhook
from tests.support import cosign, images
from tests.support.reviews import pod_review

pytestmark = pytest.mark.registry

KEY = cosign.keypair()
STRANGER = cosign.keypair()


@dataclass(frozen=True)
class Signed:
    host: str
    signed: str  # digest of team/signed:1.0 (signed by KEY)
    stranger: str  # digest of team/stranger:1.0 (signed by another key)
    unsigned: str
    key_file: Path


def _push(url: str, repo: str) -> str:
    return images.push_image(
        url,
        repo,
        "1.0",
        layers=[images.blob_bytes(f"sig/{repo}", 300)],
        config=images.image_config("linux/amd64", user="1000"),
    )


@pytest.fixture(scope="module")
def signed(registry: Seeded, tmp_path_factory: pytest.TempPathFactory) -> Signed:
    url = f"http://{registry.host}"
    good = _push(url, "team/signed")
    cosign.sign_cosign(url, "team/signed", good, KEY)
    other = _push(url, "team/stranger")
    cosign.sign_cosign(url, "team/stranger", other, STRANGER)
    key_file = tmp_path_factory.mktemp("keys") / "release.pub"
    key_file.write_text(KEY.public_pem)
    return Signed(registry.host, good, other, _push(url, "team/unsigned"), key_file)


def _rules(key_file: Path) -> str:
    return f"""\
apiVersion: image-policy/v1
kind: RuleSet
defaults: {{onResolveError: deny, unmatched: deny}}
rules:
  - id: release-signed
    match: {{images: ["**"]}}
    require:
      signatures:
        keys: ["{key_file}"]
"""


@pytest.fixture(scope="module")
def webhook(tmp_path_factory: pytest.TempPathFactory, ca: CA, signed: Signed) -> Iterator[Webhook]:
    hook = start_webhook(
        tmp_path_factory.mktemp("sig-webhook"),
        ca,
        _rules(signed.key_file),
        settings="mutate: {pin: true}\n",
    )
    try:
        yield hook
    finally:
        hook.stop()


def _review(image: str, uid: str = "u1") -> dict[str, Any]:
    return pod_review(image, uid=uid, user="u", names=["c"])


def _answer(hook: Webhook, image: str, path: str = "/validate") -> dict[str, Any]:
    response: dict[str, Any] = hook.post(path, _review(image))["response"]
    return response


def test_webhook_allows_the_signed_image_and_pins_it_to_the_verified_digest(
    webhook: Webhook, signed: Signed
) -> None:
    image = f"{signed.host}/team/signed:1.0"
    assert _answer(webhook, image) == {"uid": "u1", "allowed": True}
    mutated = _answer(webhook, image, "/mutate")
    patch = json.loads(base64.b64decode(mutated["patch"]))
    assert patch == [
        {"op": "replace", "path": "/spec/containers/0/image", "value": f"{image}@{signed.signed}"}
    ]
    # The pinned reference is judged again when the pod is created: still signed.
    assert _answer(webhook, f"{image}@{signed.signed}")["allowed"] is True


def test_webhook_denies_unsigned_and_wrongly_signed_images_saying_why(
    webhook: Webhook, signed: Signed
) -> None:
    short = signing.short(KEY.fingerprint)
    unsigned = _answer(webhook, f"{signed.host}/team/unsigned:1.0")
    assert unsigned["allowed"] is False
    assert (
        f"no signatures found for {signing.short(signed.unsigned)} (cosign .sig tag, OCI "
        f"referrers); rule release-signed requires a signature by the configured key {short}"
    ) in unsigned["status"]["message"]
    stranger = _answer(webhook, f"{signed.host}/team/stranger:1.0")
    assert stranger["allowed"] is False
    assert (
        "1 signature for "
        f"{signing.short(signed.stranger)}, none by a configured signer (cosign signature by "
        "unknown key, not verified: does not verify with a configured key)"
    ) in stranger["status"]["message"]
    # /mutate refuses to pin what /validate would deny.
    assert _answer(webhook, f"{signed.host}/team/unsigned:1.0", "/mutate")["allowed"] is False


def _cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_cli_check_enforces_the_same_rule(signed: Signed, tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(_rules(signed.key_file))
    settings = tmp_path / "settings.yaml"
    settings.write_text("{}\n")
    ok = _cli(
        "check",
        "--rules",
        str(rules),
        "--config",
        str(settings),
        "--image",
        f"{signed.host}/team/signed:1.0",
    )
    assert ok[0] == cli.EXIT_ALLOWED, ok
    code, out, _ = _cli(
        "check",
        "--rules",
        str(rules),
        "--config",
        str(settings),
        "--image",
        f"{signed.host}/team/stranger:1.0",
    )
    assert code == cli.EXIT_DENIED
    assert "none by a configured signer" in out


def test_cli_resolve_json_shows_the_signatures_found(signed: Signed, tmp_path: Path) -> None:
    settings = tmp_path / "settings.yaml"
    settings.write_text("{}\n")
    image = f"{signed.host}/team/signed:1.0"
    code, out, err = _cli(
        "resolve", image, "--json", "--config", str(settings), "--key", str(signed.key_file)
    )
    assert code == 0, err
    assert json.loads(out)["signatures"] == [
        {
            "format": "cosign",
            "signer": f"key {signing.short(KEY.fingerprint)}",
            "verified": True,
            "key": KEY.fingerprint,
            "reason": None,
        }
    ]
    code, out, err = _cli("resolve", image, "--config", str(settings), "--signatures")
    assert code == 0, err
    assert (
        "  signature:  cosign by unknown key: not verified (does not verify with a configured "
        "key)\n"
    ) in out
    code, _, err = _cli("resolve", image, "--key", str(tmp_path / "nope.pub"))
    assert code == cli.EXIT_USAGE
    assert "--key " in err and "nope.pub: cannot read" in err
    # Without --signatures (or --key) nothing about signatures is asked, or shown.
    code, out, err = _cli("resolve", image, "--json", "--config", str(settings))
    assert code == 0, err
    assert json.loads(out)["signatures"] is None


def test_a_hostile_signature_manifest_is_a_denial_not_an_error(
    webhook: Webhook, signed: Signed
) -> None:
    """3,000 junk signature layers: 32 are read, each refused with its reason; the review is
    answered 200 with a denial (no 5xx, inside the deadline)."""
    url = f"http://{signed.host}"
    digest = _push(url, "team/hostile")
    junk = images.push_blob(url, "team/hostile", b'{"critical": {}}')
    layer = {
        "mediaType": cosign.SIMPLE_SIGNING,
        "digest": junk,
        "size": 16,
        "annotations": {cosign.SIGNATURE_ANNOTATION: "AAAA"},
    }
    config = images.push_blob(url, "team/hostile", b"{}")
    body = images.canonical(
        {
            "schemaVersion": 2,
            "mediaType": images.OCI_MANIFEST,
            "config": {"mediaType": images.OCI_CONFIG, "digest": config, "size": 2},
            "layers": [layer] * 3000,
        }
    )
    images.put_manifest(
        url, "team/hostile", digest.replace(":", "-") + ".sig", body, images.OCI_MANIFEST
    )
    response = _answer(webhook, f"{signed.host}/team/hostile:1.0")
    assert response["allowed"] is False
    assert response["status"]["code"] == 403
    message = response["status"]["message"]
    assert "32 signatures for" in message
    assert "not verified: the payload is not a cosign container image signature" in message
