"""Attestations signed keyless or by keys, as `cosign attest` writes them (a DSSE envelope in
a `.att` layer with certificate, chain and Rekor-bundle annotations) and as Sigstore bundles
with DSSE content: opened and verified against a test Sigstore (offline), each wrong part
refused with its reason; `require.attestations.signed` with keyless identities parsed and
judged, BuildKit's certificate-less envelopes said to be out of a keyless identity's reach."""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import textwrap
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from policy import attestations, checks, loader, schema, sigverify
from policy.errors import RuleErrors
from policy.evaluate import Context, evaluate_image, needs
from policy.facts import AttestationFacts, ImageFacts, PlatformFacts
from policy.reference import parse
from tests.support import attest, cosign
from tests.support.sigstore import GITHUB, WORKFLOW, Sigstore

DIGEST = "sha256:" + "1" * 64
OTHER = "sha256:" + "2" * 64
STORE = Sigstore()
TRUST = sigverify.Trust((), sigverify.load_roots([STORE.trusted_root()]))
KEY = cosign.keypair()
NOW = datetime(2026, 11, 1, tzinfo=UTC)
_, STATEMENT = attest.provenance_v02(DIGEST)


def _open(statement: bytes = STATEMENT, **options: Any) -> sigverify.Opened | str:
    envelope, annotations = STORE.attest_cosign_layer(statement, **options)
    return sigverify.open_cosign_attestation(envelope, annotations, TRUST)


@pytest.mark.parametrize("kind", ["intoto", "dsse"])
def test_keyless_cosign_attestation_opens_with_its_identity(kind: str) -> None:
    opened = _open(kind=kind)
    assert isinstance(opened, sigverify.Opened)
    assert (opened.payload, opened.issuer, opened.subject) == (STATEMENT, GITHUB, WORKFLOW)
    assert (opened.key, opened.reason) == (None, "")


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"logged": False}, "no transparency-log entry proves when it was signed"),
        ({"sct": False}, "the certificate carries no SCT"),
        (
            {"ct_key": ec.generate_private_key(ec.SECP256R1())},
            "no SCT from a CT log of the trusted root verifies",
        ),
    ],
)
def test_each_wrong_part_of_a_keyless_attestation_is_its_reason(
    options: dict[str, Any], reason: str
) -> None:
    opened = _open(**options)
    assert isinstance(opened, sigverify.Opened)
    assert opened.issuer is None and opened.subject is None
    assert opened.reason == f"keyless {WORKFLOW} (issuer {GITHUB}): {reason}"


def test_a_certificate_from_another_ca_does_not_chain() -> None:
    stranger = Sigstore(log_key=STORE.log_key, ct_key=STORE.ct_key, name="other-fulcio")
    envelope, annotations = stranger.attest_cosign_layer(STATEMENT)
    opened = sigverify.open_cosign_attestation(envelope, annotations, TRUST)
    assert isinstance(opened, sigverify.Opened)
    assert opened.reason.endswith("the certificate does not chain to the trusted root")


def test_a_tampered_envelope_does_not_verify_with_its_certificate() -> None:
    envelope, annotations = STORE.attest_cosign_layer(STATEMENT)
    document = json.loads(envelope)
    _, forged = attest.provenance_v02(DIGEST, builder="https://evil.example/ci")
    document["payload"] = base64.b64encode(forged).decode()
    opened = sigverify.open_cosign_attestation(json.dumps(document).encode(), annotations, TRUST)
    assert isinstance(opened, sigverify.Opened)
    assert opened.reason == "the signature does not verify with its certificate"
    assert opened.payload == forged and opened.subject is None


def test_a_log_entry_of_another_signature_is_refused() -> None:
    envelope, _ = STORE.attest_cosign_layer(STATEMENT)
    _, annotations = STORE.attest_cosign_layer(STATEMENT)  # its certificate and entry
    opened = sigverify.open_cosign_attestation(envelope, annotations, TRUST)
    assert isinstance(opened, sigverify.Opened)
    assert opened.reason == "the signature does not verify with its certificate"


def test_a_keyed_cosign_attestation_names_its_key() -> None:
    trust = sigverify.Trust(sigverify.load_keys([_der(KEY)]))
    opened = sigverify.open_cosign_attestation(cosign.envelope(KEY, STATEMENT), {}, trust)
    assert isinstance(opened, sigverify.Opened)
    assert opened.key == KEY.fingerprint
    unknown = sigverify.open_cosign_attestation(cosign.envelope(KEY, STATEMENT), {}, TRUST)
    assert isinstance(unknown, sigverify.Opened) and unknown.key is None


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"[", "the DSSE envelope is not valid JSON"),
        (b"[]", "not a DSSE envelope"),
        (b'{"payloadType": "text/plain"}', "the DSSE payload type 'text/plain' is not"),
        (b"[" * 5000 + b"]" * 5000, "the DSSE envelope is not valid JSON"),
        (b"{}" + b" " * (sigverify.MAX_BUNDLE_BYTES + 1), "the envelope is over"),
    ],
)
def test_hostile_cosign_attestation_layers_are_refused(data: bytes, reason: str) -> None:
    opened = sigverify.open_cosign_attestation(data, {}, TRUST)
    assert isinstance(opened, str) and opened.startswith(reason)


def test_keyless_dsse_bundle_attestation_opens_and_signature_bundles_are_left_alone() -> None:
    opened = sigverify.open_attestation_bundle(STORE.dsse_bundle(STATEMENT), TRUST)
    assert isinstance(opened, sigverify.Opened)
    assert (opened.issuer, opened.subject, opened.reason) == (GITHUB, WORKFLOW, "")
    signature = STORE.dsse_bundle(cosign.statement(DIGEST))  # cosign's signature predicate
    assert sigverify.open_attestation_bundle(signature, TRUST) is None
    assert sigverify.open_attestation_bundle(STORE.message_bundle(DIGEST), TRUST) is None
    unlogged = sigverify.open_attestation_bundle(STORE.dsse_bundle(STATEMENT, logged=False), TRUST)
    assert isinstance(unlogged, sigverify.Opened)
    assert unlogged.reason.endswith("no transparency-log entry proves when it was signed")


def test_subject_must_be_the_image_or_the_index_judged() -> None:
    _, about_index = attest.provenance_v02(OTHER)
    assert attestations.read_statement(about_index, DIGEST).reason == (
        "its subject is not this image"
    )
    assert attestations.read_statement(about_index, DIGEST, also=OTHER).reason == ""


def _der(key: cosign.KeyPair) -> bytes:
    from policy import signing

    return signing.parse_public_key(key.public_pem).der


# --- rules ------------------------------------------------------------------------------------


def _rules(signed: str) -> str:
    return (
        "apiVersion: image-policy/v1\nkind: RuleSet\nrules:\n  - id: att\n"
        "    match: {images: ['**']}\n    require:\n      attestations:\n"
        "        provenance: true\n" + textwrap.indent(signed, " " * 8)
    )


KEYLESS = (
    "signed:\n  keyless:\n    - issuer: https://token.actions.githubusercontent.com\n"
    "      subject: https://github.com/acme/*\n"
)


def test_signed_takes_keyless_identities_and_the_schema_agrees() -> None:
    import jsonschema
    import yaml

    ruleset = loader.load_rules_text(_rules(KEYLESS), "rules.yaml")
    setting = ruleset.rules[0].checks[0].setting
    assert isinstance(setting, attestations.AttestationPolicy)
    assert [str(i) for i in setting.keyless] == [
        "https://github.com/acme/* (issuer https://token.actions.githubusercontent.com)"
    ]
    assert len(setting.roots) == 1 and not setting.keys  # the public-good root by default
    wanted = needs(ruleset, parse("r.example/a:1"), Context(NOW))
    assert wanted.attestations and wanted.roots == setting.roots
    jsonschema.validate(yaml.safe_load(_rules(KEYLESS)), schema.rules_schema())


@pytest.mark.parametrize(
    ("signed", "message"),
    [
        ("signed: {}\n", "rules.yaml:9:17: rules[0].require.attestations.signed: give keys, "),
        ("signed: {keyless: []}\n", "signed.keyless: expected a non-empty list of {issuer"),
        (
            "signed: {keyless: [{issuer: x}]}\n",
            "signed.keyless[0]: give one of subject or subjectRegExp",
        ),
        ("signed: {keyless: [{issuer: x, subjectRegExp: '('}]}\n", "invalid regular expression"),
        ("signed: {keys: [a.pub], trustedRoot: missing.json}\n", "missing.json"),
        ("signed: {key: [a.pub]}\n", 'unknown key "key" (did you mean "keys"?)'),
    ],
)
def test_signed_mistakes_are_located(signed: str, message: str) -> None:
    with pytest.raises(RuleErrors, match=re.escape(message)):
        loader.load_rules_text(_rules(signed), "rules.yaml")


def _judge(found: tuple[AttestationFacts, ...], signed: str = KEYLESS) -> list[str]:
    ruleset = loader.load_rules_text(_rules(signed), "rules.yaml")
    facts = ImageFacts(
        digest=DIGEST,
        index=False,
        platforms=(PlatformFacts("linux/amd64", DIGEST, attestations=found),),
    )
    decision = evaluate_image(ruleset, parse("r.example/a:1"), facts, Context(NOW))
    return [v.message for v in decision.violations]


PROVENANCE = AttestationFacts(attest.SLSA_V02, "provenance", builder="b")


def test_a_keyless_identity_of_the_rule_counts_and_another_does_not() -> None:
    ours = dataclasses.replace(PROVENANCE, format="cosign")
    good = dataclasses.replace(ours, issuer=GITHUB, subject="https://github.com/acme/x")
    assert _judge((good,)) == []
    evil = dataclasses.replace(ours, issuer=GITHUB, subject="https://github.com/evil/x")
    assert _judge((evil,)) == [
        "r.example/a:1 has no SLSA provenance attestation signed by a configured signer "
        "(provenance (cosign) (signed by keyless https://github.com/evil/x (issuer "
        f"{GITHUB}), not an identity of this rule)); rule att requires one"
    ]
    broken = dataclasses.replace(ours, signature="keyless x (issuer y): the certificate …")
    assert "its signature did not verify: keyless x (issuer y)" in _judge((broken,))[0]


def test_buildkit_envelopes_cannot_meet_a_keyless_identity_and_the_finding_says_so() -> None:
    (message,) = _judge((PROVENANCE,))
    assert message == (
        "r.example/a:1 has no SLSA provenance attestation signed by a configured signer "
        "(provenance (signed in the index (BuildKit's DSSE carries no certificate), not by a "
        "configured key; a keyless identity cannot apply)); rule att requires one"
    )
    pem = "".join(f"      {line}\n" for line in KEY.public_pem.splitlines())
    both = KEYLESS + "  keys:\n    - |\n" + pem
    (message,) = _judge((PROVENANCE,), both)
    assert "and by no configured key; a keyless identity cannot apply" in message

    assert _judge((dataclasses.replace(PROVENANCE, signed_by=KEY.fingerprint),), both) == []


def test_checks_describe_signed_keyless() -> None:
    assert "keyless" in checks.CHECKS["attestations"].doc


def test_offline_tests_judge_recorded_keyless_attestations() -> None:
    from policy import factsfile, ruletests

    ruleset = loader.load_rules_text(_rules(KEYLESS), "rules.yaml")
    cases = textwrap.dedent(
        f"""\
        apiVersion: image-policy/v1
        kind: RuleTest
        facts:
          images:
            r.example/good:1:
              digest: {DIGEST}
              attestations:
                - {{predicateType: "{attest.SLSA_V02}", format: cosign, issuer: "{GITHUB}",
                    subject: "https://github.com/acme/app"}}
            r.example/bad:1:
              digest: {DIGEST}
              attestations:
                - {{predicateType: "{attest.SLSA_V02}", format: buildkit}}
        cases:
          - {{name: good, image: r.example/good:1, expect: allowed, violations: []}}
          - {{name: bad, image: r.example/bad:1, expect: denied, violations: [att]}}
        """
    )
    report = ruletests.run_tests(ruleset, [("cases.yaml", cases)], now=NOW)
    assert report.ok, ruletests.format_report(report)
    bad = "images:\n  a:1:\n    attestations: [{predicateType: x, issuer: y}]\n"
    with pytest.raises(factsfile.FactsFileError, match="give both"):
        factsfile.parse_facts(bad, "facts.yaml")
    bad = "images:\n  a:1:\n    attestations: [{predicateType: x, format: notary}]\n"
    with pytest.raises(factsfile.FactsFileError, match=r"facts.yaml:3:.*one of buildkit, cosign"):
        factsfile.parse_facts(bad, "facts.yaml")
