"""`require.signatures`: parsing (file:line errors), needs, the judge's findings, facts files
and offline rule tests."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest

from policy import factsfile, loader, ruletests, schema, signing
from policy.errors import RuleErrors
from policy.evaluate import Context, evaluate_image, needs
from policy.facts import ImageFacts, Needs, SignatureFacts
from policy.reference import parse
from tests.support import cosign

NOW = datetime(2026, 11, 1, tzinfo=UTC)
DIGEST = "sha256:" + "1" * 64
KEY_A = cosign.keypair()
KEY_B = cosign.keypair("ed25519")


def _rules(require: str, *, path: Path | None = None, name: str = "rules.yaml") -> str:
    text = textwrap.dedent(
        """\
        apiVersion: image-policy/v1
        kind: RuleSet
        metadata: {name: signed}
        rules:
          - id: signed
            match: {images: ["**"]}
            require:
              signatures:
        """
    ) + textwrap.indent(textwrap.dedent(require), " " * 8)
    if path is not None:
        (path / name).write_text(text)
    return text


def _inline(pair: cosign.KeyPair) -> str:
    return "|\n" + textwrap.indent(pair.public_pem, "    ")


def test_inline_and_file_keys_load(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "b.pub").write_text(KEY_B.public_pem)
    _rules(f"keys:\n  - {_inline(KEY_A)}  - keys/b.pub\nminimum: 2\n", path=tmp_path)
    ruleset = loader.load_rules(tmp_path / "rules.yaml")
    (check,) = ruleset.rules[0].checks
    assert isinstance(check.setting, signing.SignaturePolicy)
    assert check.setting.minimum == 2
    assert [k.fingerprint for k in check.setting.keys] == [KEY_A.fingerprint, KEY_B.fingerprint]
    assert [k.source for k in check.setting.keys] == ["inline key", "keys/b.pub"]


@pytest.mark.parametrize(
    ("require", "message"),
    [
        (
            "keys: [missing.pub]\n",
            "rules.yaml:9:16: rules[0].require.signatures.keys[0]: key file {tmp}/missing.pub "
            "does not exist",
        ),
        (
            "keys: [bad.pub]\n",
            "rules.yaml:9:16: rules[0].require.signatures.keys[0]: bad.pub: no "
            "'-----BEGIN PUBLIC KEY-----' PEM block",
        ),
        (
            "keys: [private.pem]\n",
            "rules.yaml:9:16: rules[0].require.signatures.keys[0]: private.pem: is a private key",
        ),
        (
            "keys: []\n",
            "rules.yaml:9:15: rules[0].require.signatures.keys: expected a non-empty list of PEM "
            "public keys or key files",
        ),
        (
            "{}\n",
            "rules.yaml:9:9: rules[0].require.signatures: give keys, keyless identities, or both",
        ),
        (
            "keys: [good.pub]\nminimum: 2\n",
            "rules.yaml:10:18: rules[0].require.signatures.minimum: minimum is 2 but only 1 "
            "distinct signer is configured",
        ),
        (
            "keys: [good.pub, good.pub]\nminimum: 2\n",
            "minimum is 2 but only 1 distinct signer is configured",
        ),
        (
            "keys: [good.pub]\nminimun: 1\n",
            'rules.yaml:10:9: rules[0].require.signatures.minimun: unknown key "minimun" '
            '(did you mean "minimum"?)',
        ),
        ("keys: [good.pub]\nminimum: 0\n", "signatures.minimum: expected a positive integer"),
    ],
)
def test_rule_file_mistakes_are_located(tmp_path: Path, require: str, message: str) -> None:
    (tmp_path / "bad.pub").write_text("not a key\n")
    (tmp_path / "good.pub").write_text(KEY_A.public_pem)
    (tmp_path / "private.pem").write_text(
        "-----BEGIN PRIVATE KEY-----\nAA\n-----END PRIVATE KEY-----\n"
    )
    _rules(require, path=tmp_path)
    errors = [str(e) for e in loader.lint(tmp_path / "rules.yaml")]
    expected = message.replace("{tmp}", str(tmp_path))
    assert any(expected in e for e in errors), errors


def test_lint_names_an_unsupported_inline_key() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = (
        ec.generate_private_key(ec.SECP256K1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    text = _rules("keys:\n  - |\n" + textwrap.indent(pem, "    "))
    with pytest.raises(
        RuleErrors,
        match=r"rules.yaml:10:13: rules\[0\].require.signatures.keys\[0\]: inline key: "
        "ECDSA on secp256k1 is not supported",
    ):
        loader.load_rules_text(text, "rules.yaml")


def test_schema_knows_signatures() -> None:
    rule = schema.rules_schema()["properties"]["rules"]["items"]
    entry = rule["properties"]["require"]["properties"]["signatures"]
    assert entry["anyOf"] == [{"required": ["keys"]}, {"required": ["keyless"]}]
    assert set(entry["properties"]) == {"keys", "keyless", "minimum", "requireTlog", "trustedRoot"}
    assert entry["additionalProperties"] is False


def _ruleset(*pairs: cosign.KeyPair, minimum: int = 1) -> object:
    keys = "".join(f"  - {_inline(p)}" for p in pairs)
    return loader.load_rules_text(_rules(f"keys:\n{keys}minimum: {minimum}\n"), "rules.yaml")


def test_needs_ask_for_signatures_with_the_rules_keys() -> None:
    ruleset = _ruleset(KEY_A, KEY_B)
    ctx = Context(now=NOW)
    need = needs(ruleset, parse("r.example/app:1"), ctx)  # type: ignore[arg-type]
    ders = sorted(signing.parse_public_key(p.public_pem).der for p in (KEY_A, KEY_B))
    assert need == Needs(digest=True, signatures=True, keys=tuple(ders))
    assert need.registry


def _judge(
    ruleset: object, signatures: tuple[SignatureFacts, ...] | None, **facts: object
) -> list[str]:
    decision = evaluate_image(
        ruleset,  # type: ignore[arg-type]
        parse("r.example/app:1"),
        ImageFacts(digest=DIGEST, signatures=signatures, **facts),  # type: ignore[arg-type]
        Context(now=NOW),
    )
    return [v.message for v in decision.violations if v.action == "deny"]


def _by(pair: cosign.KeyPair, fmt: str = "cosign") -> SignatureFacts:
    return SignatureFacts(
        fmt, True, key=pair.fingerprint, signer=f"key {signing.short(pair.fingerprint)}"
    )


def test_a_signature_by_the_key_allows() -> None:
    assert _judge(_ruleset(KEY_A), (_by(KEY_A),)) == []


def test_no_signatures_is_denied_saying_where_it_looked() -> None:
    assert _judge(_ruleset(KEY_A), ()) == [
        "r.example/app:1: no signatures found for sha256:111111111111… (cosign .sig tag, OCI "
        f"referrers); rule signed requires a signature by the configured key "
        f"{signing.short(KEY_A.fingerprint)}"
    ]


def test_signatures_by_others_are_denied_naming_what_was_found() -> None:
    other = cosign.keypair()
    unverified = SignatureFacts(
        "bundle", False, reason="does not verify with a configured key", signer="unknown key"
    )
    (message,) = _judge(_ruleset(KEY_A), (_by(other), unverified))
    assert message == (
        "r.example/app:1: 2 signatures for sha256:111111111111…, none by a configured signer "
        "(bundle signature by unknown key, not verified: does not verify with a configured key; "
        f"cosign signature by key {signing.short(other.fingerprint)} (not a key of this rule)); "
        f"rule signed requires a signature by the configured key {signing.short(KEY_A.fingerprint)}"
    )


def test_minimum_counts_distinct_keys() -> None:
    ruleset = _ruleset(KEY_A, KEY_B, minimum=2)
    (message,) = _judge(ruleset, (_by(KEY_A), _by(KEY_A, "bundle")))
    assert "2 signatures for sha256:111111111111…, 1 by a configured signer" in message
    assert "requires signatures by 2 of: key sha256:" in message
    assert _judge(ruleset, (_by(KEY_A), _by(KEY_B, "bundle"))) == []


def test_signatures_not_looked_up_follow_on_resolve_error() -> None:
    ruleset = _ruleset(KEY_A)
    (message,) = _judge(
        ruleset,
        None,
        errors={"signatures": "registry unreachable"},
    )
    assert message == (
        "cannot check r.example/app:1: signatures could not be fetched (registry unreachable); "
        "onResolveError is deny"
    )


def test_facts_files_record_signatures_for_offline_tests() -> None:
    facts = factsfile.parse_facts(
        textwrap.dedent(
            f"""\
            images:
              r.example/app:1:
                digest: {DIGEST}
                signatures:
                  - {{format: cosign, key: "{KEY_A.fingerprint}"}}
                  - {{format: bundle, verified: false, reason: expired}}
              r.example/app:2:
                digest: {DIGEST}
                signatures: []
            """
        ),
        "facts.yaml",
    )
    one = facts["r.example/app:1"].signatures
    assert one == (
        SignatureFacts(
            "cosign", True, key=KEY_A.fingerprint, signer=f"key {signing.short(KEY_A.fingerprint)}"
        ),
        SignatureFacts("bundle", False, reason="expired", signer="unknown key"),
    )
    assert facts["r.example/app:2"].signatures == ()


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("signatures: 3", "images.a:1.signatures: expected a list of signatures ([] for none)"),
        ("signatures: [{format: pgp}]", "images.a:1.signatures[0].format: expected one of"),
        ("signatures: [{format: cosign, key: abc}]", "expected a key fingerprint sha256:<64 hex>"),
        (
            "signatures: [{format: cosign, verified: true}]",
            "images.a:1.signatures[0].verified: a verified signature names its key",
        ),
    ],
)
def test_facts_file_signature_mistakes_are_located(entry: str, message: str) -> None:
    with pytest.raises(
        factsfile.FactsFileError,
        match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)"),
    ):
        factsfile.parse_facts(f"images:\n  a:1:\n    {entry}\n", "facts.yaml")


def test_offline_rule_tests_judge_recorded_signatures() -> None:
    ruleset = _ruleset(KEY_A)
    cases = textwrap.dedent(
        f"""\
        apiVersion: image-policy/v1
        kind: RuleTest
        facts:
          images:
            r.example/signed:1:
              digest: {DIGEST}
              signatures: [{{format: cosign, key: "{KEY_A.fingerprint}"}}]
            r.example/unsigned:1: {{digest: {DIGEST}, signatures: []}}
            r.example/unrecorded:1: {{digest: {DIGEST}}}
        cases:
          - {{name: signed, image: r.example/signed:1, expect: allowed, violations: []}}
          - {{name: unsigned, image: r.example/unsigned:1, expect: denied, violations: [signed]}}
          - name: unrecorded
            image: r.example/unrecorded:1
            expect: denied
            violations: [signed]
        """
    )
    report = ruletests.run_tests(ruleset, [("cases.yaml", cases)], now=NOW)  # type: ignore[arg-type]
    assert report.ok, ruletests.format_report(report)
    assert len(report.results) == 3


# --- keyless --------------------------------------------------------------------------------

ISSUER = "https://token.actions.githubusercontent.com"
RELEASE = "https://github.com/acme/app/.github/workflows/release.yml@refs/tags/v1.2.0"


def _keyless_rules(tmp_path: Path, identities: str, extra: str = "") -> Path:
    from tests.support.sigstore import Sigstore

    (tmp_path / "root.json").write_bytes(Sigstore().trusted_root())
    _rules(
        f"keyless:\n{textwrap.indent(identities, '  ')}trustedRoot: root.json\n{extra}",
        path=tmp_path,
    )
    return tmp_path / "rules.yaml"


def test_keyless_identities_load_with_globs_and_regexes(tmp_path: Path) -> None:
    rules_file = _keyless_rules(
        tmp_path,
        f"- {{issuer: {ISSUER}, subject: 'https://github.com/acme/app/*@refs/tags/*'}}\n"
        "- {issuerRegExp: 'https://accounts\\.example/.*', subjectRegExp: '.*@acme\\.example'}\n",
    )
    (check,) = loader.load_rules(rules_file).rules[0].checks
    setting = check.setting
    assert isinstance(setting, signing.SignaturePolicy)
    glob, regex = setting.keyless
    assert glob.matches(ISSUER, RELEASE)
    assert not glob.matches(ISSUER, "https://github.com/evil/app/.github/workflows/x@refs/tags/v1")
    assert not glob.matches("https://evil.example", RELEASE)
    assert regex.matches("https://accounts.example/o", "ci@acme.example")
    assert not regex.matches("https://accounts.example/o", "ci@acme.example.evil")
    assert [r.data for r in setting.roots] == [(tmp_path / "root.json").read_bytes()]


@pytest.mark.parametrize(
    ("identities", "message"),
    [
        (
            "- {issuer: x}\n",
            "rules.yaml:10:13: rules[0].require.signatures.keyless[0]: give one of subject or "
            "subjectRegExp",
        ),
        (
            "- {issuer: x, subjectRegExp: '[z-a]'}\n",
            "rules.yaml:10:40: rules[0].require.signatures.keyless[0].subjectRegExp: invalid "
            "regular expression: bad character range z-a at position 1",
        ),
        (
            "- {issuer: x, issuerRegExp: y, subject: z}\n",
            "give one of issuer or issuerRegExp",
        ),
        ("- {issuer: x, subject: y, sub: z}\n", 'unknown key "sub"'),
    ],
)
def test_keyless_mistakes_are_located(tmp_path: Path, identities: str, message: str) -> None:
    errors = [str(e) for e in loader.lint(_keyless_rules(tmp_path, identities))]
    assert any(message in e for e in errors), errors


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read trusted root"),
        (b"[[", "is not JSON"),
        (b'{"tlogs": []}', "has no certificateAuthorities (a Sigstore trusted_root.json)"),
    ],
)
def test_unusable_trusted_root_is_located(
    tmp_path: Path, content: bytes | None, message: str
) -> None:
    if content is not None:
        (tmp_path / "bad.json").write_bytes(content)
    _rules(f"keyless: [{{issuer: {ISSUER}, subject: x}}]\ntrustedRoot: bad.json\n", path=tmp_path)
    errors = [str(e) for e in loader.lint(tmp_path / "rules.yaml")]
    assert any(
        "rules.yaml:10:22: rules[0].require.signatures.trustedRoot: " in e and message in e
        for e in errors
    ), errors


def test_keyless_without_a_trusted_root_uses_the_shipped_public_good_root() -> None:
    ruleset = loader.load_rules_text(
        _rules(f"keyless: [{{issuer: {ISSUER}, subject: x}}]\n"), "rules.yaml"
    )
    (check,) = ruleset.rules[0].checks
    assert isinstance(check.setting, signing.SignaturePolicy)
    assert check.setting.roots == (signing.RootFile.of(signing.public_good_root()),)
    assert b"https://rekor.sigstore.dev" in check.setting.roots[0].data


def test_needs_name_trusted_roots_by_digest_and_caches_do_not_charge_them() -> None:
    from policy.cache import entry_size

    ruleset = loader.load_rules_text(
        _rules(f"keyless: [{{issuer: {ISSUER}, subject: x}}]\n"), "rules.yaml"
    )
    need = needs(ruleset, parse("r.example/app:1"), Context(now=NOW))
    (root,) = need.roots
    assert root == signing.RootFile(root.digest, b"")  # compared by digest only
    assert len(root.data) > 5000
    key = (parse("r.example/app:1"), need)
    assert entry_size(key, None, opaque=(signing.RootFile,)) < entry_size(key, None) - 5000


def _keyless_facts(subject: str, *, tlog: bool = True) -> SignatureFacts:
    return SignatureFacts(
        "cosign",
        True,
        signer=f"keyless {subject} (issuer {ISSUER})",
        issuer=ISSUER,
        subject=subject,
        tlog=tlog,
    )


def test_keyless_judge_counts_matching_identities_and_names_the_others(tmp_path: Path) -> None:
    ruleset = loader.load_rules(
        _keyless_rules(
            tmp_path, f"- {{issuer: {ISSUER}, subject: 'https://github.com/acme/app/*'}}\n"
        )
    )
    assert _judge(ruleset, (_keyless_facts(RELEASE),)) == []
    stranger = "https://github.com/evil/app/.github/workflows/x.yml@refs/heads/main"
    (message,) = _judge(ruleset, (_keyless_facts(stranger),))
    assert message == (
        "r.example/app:1: 1 signature for sha256:111111111111…, none by a configured signer "
        f"(cosign signature by keyless {stranger} (issuer {ISSUER}) (not an identity of this "
        "rule)); rule signed requires a signature by keyless https://github.com/acme/app/* "
        f"(issuer {ISSUER})"
    )


def test_require_tlog_counts_only_logged_keyed_signatures() -> None:
    ruleset = loader.load_rules_text(
        _rules(f"keys:\n  - {_inline(KEY_A)}requireTlog: true\n"), "rules.yaml"
    )
    logged = SignatureFacts("cosign", True, key=KEY_A.fingerprint, signer="k", tlog=True)
    unlogged = SignatureFacts("cosign", True, key=KEY_A.fingerprint, signer="k", tlog=False)
    assert _judge(ruleset, (logged,)) == []
    (message,) = _judge(ruleset, (unlogged,))
    assert (
        f"(cosign signature by key {signing.short(KEY_A.fingerprint)}, without a verified "
        "transparency-log entry)"
    ) in message
    assert "requires a signature with a transparency-log entry by the configured key" in message
