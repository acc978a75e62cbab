"""Keyless signatures against a test Sigstore configured as the trusted root (offline): a
Fulcio-shaped certificate chaining to the test CA, its embedded SCT from the test CT log, the
signature's entry in the test Rekor log; each missing or wrong part refused with its reason."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from policy import sigverify
from policy.facts import SignatureFacts
from tests.support import cosign
from tests.support.sigstore import GITHUB, SIGNED_AT, WORKFLOW, Sigstore

DIGEST = "sha256:" + "1" * 64
STORE = Sigstore()
TRUST = sigverify.Trust((), sigverify.load_roots([STORE.trusted_root()]))
PAYLOAD = cosign.payload(DIGEST, "r.example/app")


def _layer(**options: Any) -> SignatureFacts:
    annotations = STORE.sign_cosign_layer(PAYLOAD, **options)
    return sigverify.verify_cosign(PAYLOAD, annotations, DIGEST, TRUST)


def test_keyless_cosign_signature_verifies_with_its_identity() -> None:
    found = _layer()
    assert found.verified, found.reason
    assert (found.issuer, found.subject, found.tlog, found.key) == (GITHUB, WORKFLOW, True, None)
    assert found.signer == f"keyless {WORKFLOW} (issuer {GITHUB})"


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        (
            {"log_at": SIGNED_AT + timedelta(minutes=20)},
            "the certificate was not valid when signed (2026-10-01T12:20:00Z; valid "
            "2026-10-01T11:59:00Z to 2026-10-01T12:09:00Z)",
        ),
        ({"logged": False}, "no transparency-log entry proves when it was signed"),
        ({"sct": False}, "the certificate carries no SCT"),
        (
            {"ct_key": ec.generate_private_key(ec.SECP256R1())},
            "no SCT from a CT log of the trusted root verifies",
        ),
    ],
)
def test_each_missing_or_wrong_part_is_refused_with_its_reason(
    options: dict[str, Any], reason: str
) -> None:
    found = _layer(**options)
    assert not found.verified
    assert found.reason == reason
    assert found.signer == f"keyless {WORKFLOW} (issuer {GITHUB})"


def test_entry_in_a_log_the_root_does_not_know_is_refused() -> None:
    annotations = STORE.sign_cosign_layer(PAYLOAD)
    other = Sigstore()
    import json

    rekor = json.loads(annotations["dev.sigstore.cosign/bundle"])
    leaf = annotations["dev.sigstore.cosign/certificate"].encode()
    signature = sigverify._b64(annotations[cosign.SIGNATURE_ANNOTATION], "s")
    forged = other.entry(PAYLOAD, signature, leaf)
    annotations["dev.sigstore.cosign/bundle"] = json.dumps(forged)
    found = sigverify.verify_cosign(PAYLOAD, annotations, DIGEST, TRUST)
    assert found.reason == "its transparency-log entry is from a log the trusted root does not know"
    assert not found.verified
    assert found.signer == f"keyless {WORKFLOW} (issuer {GITHUB})"
    assert rekor["Payload"]["logID"] != forged["Payload"]["logID"]


def test_certificate_from_another_ca_does_not_chain() -> None:
    # Another CA, logged in the trusted log with an SCT from the trusted CT log: only the
    # chain is wrong.
    other_ca = Sigstore(ct_key=STORE.ct_key, log_key=STORE.log_key, name="test-fulcio")
    annotations = other_ca.sign_cosign_layer(PAYLOAD)
    found = sigverify.verify_cosign(PAYLOAD, annotations, DIGEST, TRUST)
    assert not found.verified
    assert found.reason == "the certificate does not chain to the trusted root"


def test_keyless_payload_for_another_digest_is_refused() -> None:
    other = cosign.payload("sha256:" + "2" * 64, "r.example/app")
    annotations = STORE.sign_cosign_layer(other)
    found = sigverify.verify_cosign(other, annotations, DIGEST, TRUST)
    assert not found.verified
    assert found.reason == (
        "the payload names sha256:222222222222…, not this image sha256:111111111111…"
    )


def test_tampered_keyless_payload_is_refused() -> None:
    annotations = STORE.sign_cosign_layer(PAYLOAD)
    tampered = PAYLOAD.replace(b"r.example/app", b"r.example/evil")
    found = sigverify.verify_cosign(tampered, annotations, DIGEST, TRUST)
    assert found.reason == "the signature does not verify with its certificate"


def test_log_entry_for_another_signature_is_refused() -> None:
    import json

    first = STORE.sign_cosign_layer(PAYLOAD)
    second = STORE.sign_cosign_layer(PAYLOAD)
    first["dev.sigstore.cosign/bundle"] = second["dev.sigstore.cosign/bundle"]
    found = sigverify.verify_cosign(PAYLOAD, first, DIGEST, TRUST)
    assert not found.verified
    assert found.reason == "the log entry is for another signature"
    assert json.loads(first["dev.sigstore.cosign/bundle"]) != json.loads(
        STORE.sign_cosign_layer(PAYLOAD)["dev.sigstore.cosign/bundle"]
    )


def test_keyless_bundle_message_signature_verifies_and_needs_its_entry() -> None:
    found = sigverify.verify_bundle(STORE.message_bundle(DIGEST), DIGEST, TRUST)
    assert found.verified, found.reason
    assert (found.format, found.subject, found.tlog) == ("bundle", WORKFLOW, True)
    unlogged = sigverify.verify_bundle(STORE.message_bundle(DIGEST, logged=False), DIGEST, TRUST)
    assert unlogged.reason == "no transparency-log entry proves when it was signed"
    expired = sigverify.verify_bundle(
        STORE.message_bundle(DIGEST, valid_from=SIGNED_AT - timedelta(hours=1)), DIGEST, TRUST
    )
    assert expired.reason.startswith("the certificate was not valid when signed")


def test_keyless_dsse_bundle_logged_as_a_dsse_entry_verifies() -> None:
    statement = cosign.statement(DIGEST)
    found = sigverify.verify_bundle(STORE.dsse_bundle(statement), DIGEST, TRUST)
    assert found.verified, found.reason
    assert (found.subject, found.issuer, found.tlog) == (WORKFLOW, GITHUB, True)
    # The same envelope with the entry of another signature: the log does not vouch for it.
    import json

    bundle = json.loads(STORE.dsse_bundle(statement))
    other = json.loads(STORE.dsse_bundle(statement))
    bundle["verificationMaterial"]["tlogEntries"] = other["verificationMaterial"]["tlogEntries"]
    refused = sigverify.verify_bundle(json.dumps(bundle).encode(), DIGEST, TRUST)
    assert refused.reason == "the log entry is for another signature"
    about_another = sigverify.verify_bundle(
        STORE.dsse_bundle(cosign.statement("sha256:" + "3" * 64)), DIGEST, TRUST
    )
    assert about_another.reason.startswith("the statement's subject is sha256:333333333333…")
