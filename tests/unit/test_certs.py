"""`policy.certs` and `image-policy certs`: what the certificates contain, how they are stored,
how the webhook configurations get their caBundle, and what `--check` reports."""

from __future__ import annotations

import base64
import io
import ipaddress
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from policy import certs
from policy.cli import main
from policy.errors import InputError

ROOT = Path(__file__).resolve().parents[2]
BASE_WEBHOOK = ROOT / "deploy/kubernetes/base/validatingwebhookconfiguration.yaml"
MUTATING_WEBHOOK = ROOT / "deploy/kubernetes/overlays/mutating/mutatingwebhookconfiguration.yaml"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
NAMES = (
    "image-policy",
    "image-policy.image-policy",
    "image-policy.image-policy.svc",
    "image-policy.image-policy.svc.cluster.local",
)


def _bundle(days: int = 365, extra: tuple[str, ...] = ()) -> certs.Bundle:
    return certs.issue("image-policy", "image-policy", now=NOW, days=days, extra_names=extra)


def _cert(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def test_serving_certificate_names_the_service_for_every_in_cluster_name() -> None:
    cert = _cert(_bundle().cert_pem)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert tuple(san.get_values_for_type(x509.DNSName)) == NAMES
    assert san.get_values_for_type(x509.IPAddress) == []


@pytest.mark.parametrize(
    ("extra", "dns", "ips"),
    [
        (("localhost",), [*NAMES, "localhost"], []),
        (("127.0.0.1", "::1"), list(NAMES), ["127.0.0.1", "::1"]),
        (("image-policy", "10.96.0.50"), list(NAMES), ["10.96.0.50"]),  # no duplicate
    ],
)
def test_extra_names_become_dns_or_ip_entries(
    extra: tuple[str, ...], dns: list[str], ips: list[str]
) -> None:
    san = (
        _cert(_bundle(extra=extra).cert_pem)
        .extensions.get_extension_for_class(x509.SubjectAlternativeName)
        .value
    )
    assert san.get_values_for_type(x509.DNSName) == dns
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address(i) for i in ips]


def test_serving_certificate_is_a_p256_server_leaf_signed_by_the_ca() -> None:
    bundle = _bundle()
    ca, cert = _cert(bundle.ca_pem), _cert(bundle.cert_pem)
    cert.verify_directly_issued_by(ca)
    for c in (ca, cert):
        key = c.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey)
        assert key.curve.name == "secp256r1"
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]
    leaf = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert leaf.critical and leaf.value.ca is False
    root = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert root.critical and root.value.ca is True and root.value.path_length == 0
    assert ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    assert not cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign


@pytest.mark.parametrize("days", [1, 10, 365, 3650])
def test_validity_starts_slightly_before_now_and_lasts_the_days_asked(days: int) -> None:
    bundle = _bundle(days=days)
    for pem in (bundle.ca_pem, bundle.cert_pem):
        cert = _cert(pem)
        assert cert.not_valid_before_utc == NOW - certs.CLOCK_SKEW
        assert cert.not_valid_after_utc == NOW + timedelta(days=days)


def test_each_issue_makes_new_keys() -> None:
    first, second = _bundle(), _bundle()
    assert first.key_pem != second.key_pem
    assert first.ca_pem != second.ca_pem


@pytest.mark.parametrize(
    ("service", "namespace", "days", "match"),
    [
        ("", "image-policy", 365, "must not be empty"),
        ("image-policy", "", 365, "must not be empty"),
        ("image-policy", "image-policy", 0, "at least 1"),
    ],
)
def test_issue_refuses_bad_input(service: str, namespace: str, days: int, match: str) -> None:
    with pytest.raises(InputError, match=match):
        certs.issue(service, namespace, now=NOW, days=days)


def test_write_stores_the_key_owner_only(tmp_path: Path) -> None:
    out = tmp_path / "new" / "certs"
    paths = certs.write(_bundle(), out)
    assert [p.name for p in paths] == ["ca.crt", "tls.crt", "tls.key"]
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in paths}
    assert modes == {"ca.crt": 0o644, "tls.crt": 0o644, "tls.key": 0o600}


def test_write_over_a_world_readable_key_makes_it_owner_only(tmp_path: Path) -> None:
    key = tmp_path / "tls.key"
    key.write_text("old")
    key.chmod(0o644)
    bundle = _bundle()
    certs.write(bundle, tmp_path)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.read_bytes() == bundle.key_pem


@pytest.mark.parametrize("path", [BASE_WEBHOOK, MUTATING_WEBHOOK], ids=lambda p: p.name)
def test_fill_ca_bundle_sets_every_webhooks_ca(path: Path) -> None:
    bundle = _bundle()
    docs = certs.fill_ca_bundle(
        path.read_text(), str(path), bundle.ca_pem, service="image-policy", namespace="image-policy"
    )
    assert len(docs) == 1
    hooks = docs[0]["webhooks"]
    assert hooks
    for hook in hooks:
        assert base64.b64decode(hook["clientConfig"]["caBundle"]) == bundle.ca_pem
    # The rest of the document is what the file says.
    original = yaml.safe_load(path.read_text())
    for hook in hooks:
        del hook["clientConfig"]["caBundle"]
    assert docs[0] == original


def test_fill_ca_bundle_keeps_only_webhook_configurations() -> None:
    text = "kind: Service\nmetadata: {name: x}\n---\n" + BASE_WEBHOOK.read_text() + "---\n"
    docs = certs.fill_ca_bundle(
        text, "all.yaml", b"PEM", service="image-policy", namespace="image-policy"
    )
    assert [d["kind"] for d in docs] == ["ValidatingWebhookConfiguration"]
    rendered = list(yaml.safe_load_all(certs.render(docs)))
    assert rendered == docs


@pytest.mark.parametrize(
    ("text", "service", "namespace", "match"),
    [
        (BASE_WEBHOOK.read_text(), "image-policy", "other", "calls service image-policy/image"),
        (BASE_WEBHOOK.read_text(), "webhook", "image-policy", "certificate is for image-policy/w"),
        ("kind: Service\n", "image-policy", "image-policy", "no ValidatingWebhookConfiguration"),
        ("kind: [unclosed\n", "image-policy", "image-policy", "not valid YAML"),
        (
            "kind: ValidatingWebhookConfiguration\nmetadata: {name: v}\nwebhooks: []\n",
            "image-policy",
            "image-policy",
            "has no webhooks",
        ),
        (
            "kind: MutatingWebhookConfiguration\nmetadata: {name: m}\nwebhooks: [{name: a}]\n",
            "image-policy",
            "image-policy",
            r"webhooks\[0\]: has no clientConfig",
        ),
    ],
)
def test_fill_ca_bundle_refuses(text: str, service: str, namespace: str, match: str) -> None:
    with pytest.raises(InputError, match=match):
        certs.fill_ca_bundle(text, "w.yaml", b"PEM", service=service, namespace=namespace)


def test_fill_ca_bundle_accepts_url_webhooks() -> None:
    text = (
        "kind: ValidatingWebhookConfiguration\nmetadata: {name: v}\n"
        "webhooks: [{name: a, clientConfig: {url: 'https://example.com/validate'}}]\n"
    )
    docs = certs.fill_ca_bundle(text, "w.yaml", b"PEM", service="s", namespace="n")
    assert docs[0]["webhooks"][0]["clientConfig"]["caBundle"] == base64.b64encode(b"PEM").decode()


# --- check ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("days", "at", "ok", "days_left", "problem"),
    [
        (365, NOW, True, 365, None),
        (365, NOW + timedelta(days=335) - timedelta(hours=1), True, 30, None),
        (365, NOW + timedelta(days=336), False, 29, "only 29 days left"),
        (10, NOW, False, 10, "only 10 days left (renew at 30)"),
        (10, NOW + timedelta(days=11), False, 0, "expired on 2026-03-11"),
        (30, NOW - timedelta(hours=1), False, 30, "not valid before 2026-03-01"),
    ],
)
def test_check_reports_validity_and_days_left(
    tmp_path: Path, days: int, at: datetime, ok: bool, days_left: int, problem: str | None
) -> None:
    certs.write(_bundle(days=days), tmp_path)
    status = certs.check(tmp_path, now=at)
    assert status.ok is ok
    assert status.days_left == days_left
    assert status.names == NAMES
    assert status.subject == "CN=image-policy.image-policy.svc"
    if problem is None:
        assert status.problems == ()
    else:
        assert any(problem in p for p in status.problems), status.problems


@pytest.mark.parametrize(
    ("swap", "problem"),
    [
        ("tls.key", "tls.key is not the serving certificate's key"),
        ("ca.crt", "the serving certificate is not signed by ca.crt"),
    ],
)
def test_check_finds_a_mismatched_pair(tmp_path: Path, swap: str, problem: str) -> None:
    certs.write(_bundle(), tmp_path / "a")
    certs.write(_bundle(), tmp_path / "b")
    (tmp_path / "a" / swap).write_bytes((tmp_path / "b" / swap).read_bytes())
    status = certs.check(tmp_path / "a", now=NOW)
    assert problem in status.problems


@pytest.mark.parametrize(
    ("missing_or_broken", "content", "match"),
    [
        ("ca.crt", None, "ca.crt: cannot read"),
        ("tls.crt", b"not pem", "tls.crt: not a PEM certificate"),
        ("tls.key", b"not pem", "tls.key: not an unencrypted PEM private key"),
    ],
)
def test_check_refuses_missing_or_broken_files(
    tmp_path: Path, missing_or_broken: str, content: bytes | None, match: str
) -> None:
    certs.write(_bundle(), tmp_path)
    target = tmp_path / missing_or_broken
    if content is None:
        target.unlink()
    else:
        target.write_bytes(content)
    with pytest.raises(InputError, match=match):
        certs.check(tmp_path, now=NOW)


# --- the command line ------------------------------------------------------------------------


def _run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_cli_writes_certificates_and_filled_webhook_configurations(tmp_path: Path) -> None:
    code, out, err = _run(
        "certs",
        "--service=image-policy",
        "--namespace=image-policy",
        f"--out={tmp_path}",
        f"--webhooks={BASE_WEBHOOK}",
        f"--webhooks={MUTATING_WEBHOOK}",
        "--days=90",
    )
    assert (code, err) == (0, "")
    assert "valid 90 days" in out
    docs = list(yaml.safe_load_all((tmp_path / "webhooks.yaml").read_text()))
    assert [d["kind"] for d in docs] == [
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
    ]
    ca = (tmp_path / "ca.crt").read_bytes()
    for doc in docs:
        for hook in doc["webhooks"]:
            assert base64.b64decode(hook["clientConfig"]["caBundle"]) == ca
    assert certs.check(tmp_path, now=datetime.now(UTC)).days_left == 89


def test_cli_fills_the_checkouts_webhooks_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)  # the defaults are relative to a checkout
    code, _, err = _run(
        "certs", "--service=image-policy", "--namespace=image-policy", f"--out={tmp_path}"
    )
    assert (code, err) == (0, "")
    kinds = [d["kind"] for d in yaml.safe_load_all((tmp_path / "webhooks.yaml").read_text())]
    assert kinds == ["ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"]


def test_cli_outside_a_checkout_writes_certificates_and_says_how_to_fill(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = _run("certs", "--service=s", "--namespace=n", "--out=out")
    assert code == 0
    assert "no webhook configurations to fill" in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["ca.crt", "tls.crt", "tls.key"]


def test_cli_writes_nothing_when_a_webhook_file_does_not_match(tmp_path: Path) -> None:
    code, _, err = _run(
        "certs",
        "--service=other",
        "--namespace=image-policy",
        f"--out={tmp_path / 'o'}",
        f"--webhooks={BASE_WEBHOOK}",
    )
    assert code == 2
    assert "certificate is for image-policy/other" in err
    assert not (tmp_path / "o").exists()


def test_cli_skips_the_checkouts_webhooks_when_they_call_another_service(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    code, _, err = _run("certs", "--service=a", "--namespace=b", f"--out={tmp_path}")
    assert code == 0
    assert err.count("not filled:") == 2
    assert "certificate is for b/a" in err
    assert not (tmp_path / "webhooks.yaml").exists()


@pytest.mark.parametrize(("days", "code"), [(365, 0), (31, 0), (10, 1)])
def test_cli_check_exit_codes(tmp_path: Path, days: int, code: int) -> None:
    out_dir = tmp_path / "certs"
    made = _run("certs", "--service=a", "--namespace=b", f"--out={out_dir}", f"--days={days}")
    assert made[0] == 0
    got, out, _ = _run("certs", f"--check={out_dir}")
    assert got == code
    assert f"{days - 1} days left" in out
    assert ("only" in out) is (code == 1)


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["certs", "--service=a", "--namespace=b"], "give --out"),
        (["certs", "--out=x"], "give --service, --namespace"),
        (["certs", "--check=x", "--out=y"], "--check DIR takes no"),
        (["certs", "--service=a", "--namespace=b", "--out=x", "--days=0"], "positive integer"),
        (["certs", "--check=/nonexistent/dir"], "cannot read"),
    ],
)
def test_cli_usage_errors(argv: list[str], match: str) -> None:
    code, _, err = _run(*argv)
    assert code == 2
    assert match in err
