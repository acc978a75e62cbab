"""In-toto statements read for one image (SLSA v0.2/v1 provenance, SBOMs, hostile bytes),
`require.attestations` parsed with located errors, judged per platform, and recorded in facts
files for offline tests."""

from __future__ import annotations

import re
import textwrap
from datetime import UTC, datetime

import pytest

from policy import attestations, factsfile, loader, ruletests, schema
from policy.errors import RuleErrors
from policy.facts import AttestationFacts
from tests.support import attest

DIGEST = "sha256:" + "1" * 64
NOW = datetime(2026, 11, 1, tzinfo=UTC)


def test_buildkit_provenance_v02_is_read() -> None:
    _, body = attest.provenance_v02(DIGEST)
    assert attestations.read_statement(body, DIGEST) == AttestationFacts(
        attest.SLSA_V02,
        "provenance",
        builder="https://github.com/acme/app/actions/runs/1",
        source="https://github.com/acme/app.git#refs/tags/v1.2.0",
        build_type=attest.BUILDKIT,
    )


def test_slsa_v1_provenance_is_read() -> None:
    body = attest.statement(
        DIGEST,
        attest.SLSA_V1,
        {
            "buildDefinition": {
                "buildType": "https://actions.github.io/buildtypes/workflow/v1",
                "externalParameters": {"workflow": {"path": ".github/workflows/r.yml"}},
                "resolvedDependencies": [{"uri": "git+https://github.com/acme/app@refs/tags/v1"}],
            },
            "runDetails": {"builder": {"id": "https://github.com/actions/runner"}},
        },
    )
    found = attestations.read_statement(body, DIGEST)
    assert (found.kind, found.builder, found.source, found.build_type) == (
        "provenance",
        "https://github.com/actions/runner",
        "git+https://github.com/acme/app@refs/tags/v1",
        "https://actions.github.io/buildtypes/workflow/v1",
    )


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (attest.provenance_v02("sha256:" + "2" * 64)[1], "its subject is not this image"),
        (b"[" * 10_000, "not a JSON in-toto statement (JSON nested 10000 levels deep"),
        (b"\xff", "not a JSON in-toto statement"),
        (b'{"subject": []}', "not an in-toto statement (no predicateType)"),
        (b" " * (attestations.MAX_STATEMENT_BYTES + 1), "not a JSON in-toto statement"),
    ],
)
def test_unusable_statements_say_why(body: bytes, reason: str) -> None:
    assert attestations.read_statement(body, DIGEST).reason.startswith(reason)


@pytest.mark.parametrize(
    ("predicate", "kind"),
    [
        ("https://slsa.dev/provenance/v0.2", "provenance"),
        ("https://slsa.dev/provenance/v1", "provenance"),
        ("https://spdx.dev/Document", "sbom"),
        ("https://cyclonedx.org/bom/v1.5", "sbom"),
        ("https://in-toto.io/attestation/vulns/v0.1", "other"),
    ],
)
def test_kinds(predicate: str, kind: str) -> None:
    assert attestations.kind_of(predicate) == kind


def _rules(require: str) -> str:
    return (
        "apiVersion: image-policy/v1\nkind: RuleSet\nmetadata: {name: a}\n"
        "rules:\n  - id: att\n    match: {images: ['**']}\n    require:\n      attestations:\n"
        + textwrap.indent(textwrap.dedent(require), " " * 8)
    )


@pytest.mark.parametrize(
    ("require", "message"),
    [
        (
            "sbom: false\n",
            "rules.yaml:9:9: rules[0].require.attestations: require provenance, sbom, or both",
        ),
        ("provenance: {builders: [x]}\n", 'unknown key "builders" (did you mean "builder"?)'),
        (
            "provenance: {builder: []}\n",
            "rules[0].require.attestations.provenance.builder: expected a non-empty list",
        ),
        ("sbom: yes please\n", "rules[0].require.attestations.sbom: expected true or false"),
        ("sbom: true\nsigned: {keys: [missing.pub]}\n", "key file missing.pub does not exist"),
    ],
)
def test_rule_mistakes_are_located(require: str, message: str) -> None:
    with pytest.raises(RuleErrors, match=re.escape(message)):
        loader.load_rules_text(_rules(require), "rules.yaml")


def test_schema_knows_attestations() -> None:
    rule = schema.rules_schema()["properties"]["rules"]["items"]
    entry = rule["properties"]["require"]["properties"]["attestations"]
    assert set(entry["properties"]) == {"provenance", "sbom", "signed"}


def test_offline_rule_tests_judge_recorded_attestations() -> None:
    ruleset = loader.load_rules_text(
        _rules("provenance: {builder: ['https://github.com/acme/*']}\nsbom: true\n"),
        "rules.yaml",
    )
    cases = textwrap.dedent(
        f"""\
        apiVersion: image-policy/v1
        kind: RuleTest
        facts:
          images:
            r.example/good:1:
              digest: {DIGEST}
              platforms:
                linux/amd64:
                  attestations:
                    - {{predicateType: "{attest.SLSA_V02}", builder: "https://github.com/acme/ci"}}
                    - {{predicateType: "{attest.SPDX}"}}
            r.example/bad:1:
              digest: {DIGEST}
              platforms:
                linux/amd64:
                  attestations:
                    - {{predicateType: "{attest.SLSA_V02}", builder: "https://evil.example"}}
        cases:
          - {{name: good, image: r.example/good:1, expect: allowed, violations: []}}
          - {{name: bad, image: r.example/bad:1, expect: denied, violations: [att]}}
        """
    )
    report = ruletests.run_tests(ruleset, [("cases.yaml", cases)], now=NOW)
    assert report.ok, ruletests.format_report(report)
    assert len(report.results) == 2


def test_facts_file_attestation_mistakes_are_located() -> None:
    text = (
        "images:\n  a:1:\n    platforms:\n      linux/amd64:\n"
        "        attestations: [{builder: x}]\n"
    )
    with pytest.raises(factsfile.FactsFileError, match="missing required key 'predicateType'"):
        factsfile.parse_facts(text, "facts.yaml")


def test_the_documented_examples_load_and_satisfy_the_schema() -> None:
    """README's keyed + keyless + attestations example: the loader and the JSON Schema agree."""
    import jsonschema
    import yaml

    from tests.support.cosign import keypair

    pem = "".join(f"            {line}\n" for line in keypair().public_pem.splitlines())
    text = (
        "apiVersion: image-policy/v1\n"
        "kind: RuleSet\n"
        "rules:\n"
        "  - id: release-signed\n"
        "    match: {images: ['registry.example/acme/**']}\n"
        "    require:\n"
        "      signatures:\n"
        "        keys:\n"
        "          - |\n" + pem + "        minimum: 1\n"
        "        requireTlog: false\n"
        "  - id: built-by-ci\n"
        "    match: {images: ['ghcr.io/acme/**']}\n"
        "    require:\n"
        "      signatures:\n"
        "        keyless:\n"
        "          - issuer: https://token.actions.githubusercontent.com\n"
        "            subject: https://github.com/acme/app/.github/workflows/release.yml@refs/tags/*\n"
        "          - {issuerRegExp: 'https://accounts\\.google\\.com', "
        "subjectRegExp: '.*@acme\\.example'}\n"
        "      attestations:\n"
        "        provenance: {builder: ['https://github.com/acme/*']}\n"
        "        sbom: true\n"
    )
    ruleset = loader.load_rules_text(text, "rules.yaml")
    assert [c.name for r in ruleset.rules for c in r.checks] == [
        "signatures",
        "signatures",
        "attestations",
    ]
    validator = jsonschema.Draft202012Validator(schema.rules_schema())
    validator.validate(yaml.safe_load(text))
    # ... and the schema, like lint, wants an issuer and a subject in each identity.
    broken = yaml.safe_load(
        text.replace("            subject: https", "            subjekt: https")
    )
    assert not validator.is_valid(broken)
