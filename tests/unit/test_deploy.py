"""The deployment files agree with the code: every manifest parses and builds with kustomize,
the webhook configurations call what the server serves for exactly the kinds the extractor
reads, never review the namespaces the settings exempt, and the Dockerfile passes our own
default rules."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import io
import ipaddress
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from policy import certs, loader, reference, server
from policy import settings as settings_mod
from policy.cli import build_parser, main
from policy.k8s.workloads import WORKLOAD_KINDS
from policy.scanners import dockerfile

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUSTOMIZE = DEPLOY / "kubernetes"
BASE = KUSTOMIZE / "base"
OVERLAYS = ("mutating", "cert-manager", "self-managed", "mtls")
MTLS = KUSTOMIZE / "overlays" / "mtls"
CONTROL_PLANE_PLACEHOLDER = "192.0.2.0/24"  # TEST-NET-1: matches nothing until set
DOCKERFILE = DEPLOY / "Dockerfile"
BASE_FACTS = ROOT / "tests" / "data" / "deploy" / "base-image-facts.yaml"
HEX64 = re.compile(r"sha256:[0-9a-f]{64}")

# Resource names in webhook rules → the kind of object the API server sends for them.
RESOURCE_KINDS = {
    ("", "pods"): "Pod",
    ("", "replicationcontrollers"): "ReplicationController",
    ("", "podtemplates"): "PodTemplate",
    ("apps", "deployments"): "Deployment",
    ("apps", "replicasets"): "ReplicaSet",
    ("apps", "statefulsets"): "StatefulSet",
    ("apps", "daemonsets"): "DaemonSet",
    ("batch", "jobs"): "Job",
    ("batch", "cronjobs"): "CronJob",
}


KUBECTL_MIN_MINOR = 24  # kustomize v4.5: `labels:`, `patches:` with targets, `replacements:`


def _kubectl_problem(found: str | None) -> str | None:
    """Why this kubectl cannot build the overlays (None: it can)."""
    if found is None:
        return "kubectl not installed: kustomize builds are NOT checked"
    done = subprocess.run(
        [found, "version", "--client", "-o", "json"], capture_output=True, text=True, timeout=60
    )
    try:
        minor = int(json.loads(done.stdout)["clientVersion"]["minor"].rstrip("+"))
    except (ValueError, KeyError, TypeError):
        return f"cannot tell the version of {found}: {done.stderr.strip()[:200]}"
    if minor < KUBECTL_MIN_MINOR:
        return (
            f"{found} is kubectl 1.{minor}; the overlays need kubectl 1.{KUBECTL_MIN_MINOR}+ "
            "(its kustomize reads labels:, patches: with targets and replacements:); "
            "Debian's kubernetes-client is too old"
        )
    return None


def _kubectl() -> str:
    found = shutil.which("kubectl")
    problem = _kubectl_problem(found)
    if problem is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(problem)
        pytest.skip(problem)
    assert found is not None
    return found


def test_an_old_kubectl_is_refused_with_the_reason(tmp_path: Path) -> None:
    """Debian's kubectl 1.20 (kustomize v2) once failed 8 tests and errored 12: it is now
    named as the reason instead."""
    fake = tmp_path / "kubectl"
    fake.write_text('#!/bin/sh\necho \'{"clientVersion": {"major": "1", "minor": "20"}}\'\n')
    fake.chmod(0o755)
    problem = _kubectl_problem(str(fake))
    assert problem is not None and "is kubectl 1.20; the overlays need kubectl 1.24+" in problem
    assert _kubectl_problem(None) == "kubectl not installed: kustomize builds are NOT checked"
    assert _kubectl_problem(shutil.which("kubectl")) is None or not os.environ.get("CI")


def _build(path: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize path`, parsed."""
    done = subprocess.run(
        [_kubectl(), "kustomize", str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d is not None]


def _one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"{len(found)} {kind} objects"
    return found[0]


def _kinds(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


@pytest.fixture(scope="module")
def certs_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of deploy/kubernetes with certificates made by `image-policy certs` in the
    self-managed overlay, as its kustomization tells an operator to do."""
    root = tmp_path_factory.mktemp("kustomize") / "kubernetes"
    shutil.copytree(KUSTOMIZE, root)
    out = io.StringIO()
    code = main(
        [
            "certs",
            "--service=image-policy",
            "--namespace=image-policy",
            f"--out={root / 'overlays/self-managed/certs'}",
            f"--webhooks={BASE / 'validatingwebhookconfiguration.yaml'}",
        ],
        out=out,
        err=out,
    )
    assert code == 0, out.getvalue()
    return root


@pytest.fixture(scope="module")
def base() -> list[dict[str, Any]]:
    return _build(BASE)


@pytest.fixture(scope="module")
def routes() -> dict[str, set[str]]:
    """The webhook app's routes: path → HTTP methods."""
    from policy import web

    app = web.create_app(settings_mod.Settings(), rules=[ROOT / "rules" / "default.yaml"])
    out: dict[str, set[str]] = {}
    for rule in app.url_map.iter_rules():
        out.setdefault(rule.rule, set()).update(rule.methods or ())
    return out


def _yaml_files() -> Iterator[Path]:
    yield from sorted(DEPLOY.rglob("*.yaml"))


# --- every file parses, every kustomization builds -------------------------------------------


@pytest.mark.parametrize("path", list(_yaml_files()), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_yaml_file_under_deploy_parses(path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs and all(isinstance(d, dict) for d in docs)


@pytest.mark.parametrize("overlay", ["base", "overlays/mutating", "overlays/cert-manager"])
def test_kustomization_builds(overlay: str) -> None:
    docs = _build(KUSTOMIZE / overlay)
    assert _one(docs, "Deployment", "image-policy")
    for doc in docs:
        if doc["kind"] not in (
            "Namespace",
            "ValidatingWebhookConfiguration",
            "MutatingWebhookConfiguration",
        ):
            assert doc["metadata"]["namespace"] == "image-policy", doc["metadata"]


def test_self_managed_overlay_builds_with_certs_and_fills_ca_bundle(certs_tree: Path) -> None:
    docs = _build(certs_tree / "overlays" / "self-managed")
    certs_dir = certs_tree / "overlays" / "self-managed" / "certs"
    secret = _one(docs, "Secret", "image-policy-tls")
    assert secret["type"] == "kubernetes.io/tls"
    for key in ("tls.crt", "tls.key", "ca.crt"):
        assert base64.b64decode(secret["data"][key]) == (certs_dir / key).read_bytes()
    webhook = _one(docs, "ValidatingWebhookConfiguration")
    for hook in webhook["webhooks"]:
        assert (
            base64.b64decode(hook["clientConfig"]["caBundle"])
            == (certs_dir / "ca.crt").read_bytes()
        )


def test_self_managed_overlay_without_certs_does_not_build() -> None:
    done = subprocess.run(
        [_kubectl(), "kustomize", str(KUSTOMIZE / "overlays" / "self-managed")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if (KUSTOMIZE / "overlays/self-managed/certs/tls.crt").exists():
        pytest.skip("a checkout with certificates made in it")
    assert done.returncode != 0
    assert "tls.crt" in done.stderr


@pytest.mark.parametrize("overlay", ["cert-manager", "self-managed"])
def test_certificate_overlays_cover_the_mutating_webhook_too(
    certs_tree: Path, overlay: str
) -> None:
    """Pointed at ../mutating (as their comments say), both webhooks get their CA."""
    kustomization = certs_tree / "overlays" / overlay / "kustomization.yaml"
    text = kustomization.read_text()
    assert "  - ../../base\n" in text
    kustomization.write_text(text.replace("  - ../../base\n", "  - ../mutating\n"))
    try:
        docs = _build(certs_tree / "overlays" / overlay)
    finally:
        kustomization.write_text(text)
    configs = _kinds(docs, "ValidatingWebhookConfiguration") + _kinds(
        docs, "MutatingWebhookConfiguration"
    )
    assert len(configs) == 2
    for config in configs:
        if overlay == "cert-manager":
            annotations = config["metadata"]["annotations"]
            assert (
                annotations["cert-manager.io/inject-ca-from"] == "image-policy/image-policy-serving"
            )
        else:
            ca = (certs_tree / "overlays/self-managed/certs/ca.crt").read_bytes()
            for hook in config["webhooks"]:
                assert base64.b64decode(hook["clientConfig"]["caBundle"]) == ca


def test_base_rules_are_the_default_rules() -> None:
    assert (BASE / "rules.yaml").read_bytes() == (ROOT / "rules" / "default.yaml").read_bytes()


# --- the webhook configurations call what the server serves ---------------------------------


def _webhooks(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (config["kind"], hook)
        for config in docs
        if config["kind"].endswith("WebhookConfiguration")
        for hook in config["webhooks"]
    ]


@pytest.fixture(scope="module")
def mutating() -> list[dict[str, Any]]:
    return _build(KUSTOMIZE / "overlays" / "mutating")


def test_webhook_paths_ports_and_service_match_the_server(
    mutating: list[dict[str, Any]], routes: dict[str, set[str]]
) -> None:
    service = _one(mutating, "Service", "image-policy")
    (port,) = service["spec"]["ports"]
    hooks = _webhooks(mutating)
    assert {kind: hook["clientConfig"]["service"]["path"] for kind, hook in hooks} == {
        "ValidatingWebhookConfiguration": "/validate",
        "MutatingWebhookConfiguration": "/mutate",
    }
    for _, hook in hooks:
        target = hook["clientConfig"]["service"]
        assert "POST" in routes[target["path"]]
        assert target["port"] == port["port"] == 443
        assert (target["namespace"], target["name"]) == (
            service["metadata"]["namespace"],
            service["metadata"]["name"],
        )
    container = _one(mutating, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert named[port["targetPort"]] == server.TLS_PORT
    assert f"--port={server.TLS_PORT}" in container["args"]


@pytest.mark.parametrize(
    ("probe", "path"),
    [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")],
)
def test_probes_ask_the_server_over_https(
    base: list[dict[str, Any]], routes: dict[str, set[str]], probe: str, path: str
) -> None:
    container = _one(base, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    get = container[probe]["httpGet"]
    assert (get["path"], get["scheme"], get["port"]) == (path, "HTTPS", "https")
    assert "GET" in routes[path]


def test_webhook_rules_cover_exactly_the_kinds_the_extractor_reads(
    mutating: list[dict[str, Any]],
) -> None:
    for kind, hook in _webhooks(mutating):
        kinds: set[str] = set()
        subresources: set[str] = set()
        for rule in hook["rules"]:
            assert rule["operations"] == ["CREATE", "UPDATE"], kind
            assert rule["apiVersions"] == ["v1"] and rule["scope"] == "Namespaced"
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    if "/" in resource:
                        subresources.add(resource)
                        continue
                    kinds.add(RESOURCE_KINDS[(group, resource)])
        assert kinds == set(WORKLOAD_KINDS), kind
        assert subresources == {"pods/ephemeralcontainers"}, kind


def test_webhook_settings_fail_closed_within_the_api_servers_timeout(
    mutating: list[dict[str, Any]],
) -> None:
    for kind, hook in _webhooks(mutating):
        assert hook["failurePolicy"] == "Fail"
        assert hook["timeoutSeconds"] == 10
        assert hook["sideEffects"] == "None"
        assert hook["admissionReviewVersions"] == ["v1"]
        assert hook["matchPolicy"] == "Equivalent"
        assert ("reinvocationPolicy" in hook) is (kind == "MutatingWebhookConfiguration")
        if kind == "MutatingWebhookConfiguration":
            assert hook["reinvocationPolicy"] == "IfNeeded"
    settings = settings_mod.load_settings(BASE / "settings.yaml", env={})
    assert settings.decision_timeout < 10


def test_excluded_namespaces_match_the_settings_defaults(mutating: list[dict[str, Any]]) -> None:
    namespace = yaml.safe_load((BASE / "kustomization.yaml").read_text())["namespace"]
    assert namespace == settings_mod.DEFAULT_OWN_NAMESPACE
    expected = set(settings_mod.Settings().exclude_namespaces)
    # In the pod, POD_NAMESPACE (from the downward API) names the namespace it runs in.
    shipped = settings_mod.load_settings(BASE / "settings.yaml", env={"POD_NAMESPACE": namespace})
    assert set(shipped.exclude_namespaces) == expected == {"kube-system", namespace}
    for kind, hook in _webhooks(mutating):
        (expression,) = hook["namespaceSelector"]["matchExpressions"]
        assert expression["key"] == "kubernetes.io/metadata.name", kind
        assert expression["operator"] == "NotIn", kind
        assert set(expression["values"]) == expected, kind
    env = _one(mutating, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {
        "name": "POD_NAMESPACE",
        "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
    } in env


def test_settings_files_load_and_only_the_mutating_overlay_pins() -> None:
    shipped = settings_mod.load_settings(BASE / "settings.yaml", env={})
    pinning = settings_mod.load_settings(KUSTOMIZE / "overlays/mutating/settings.yaml", env={})
    assert (shipped.mutate_pin, pinning.mutate_pin) == (False, True)
    assert dataclasses.replace(pinning, mutate_pin=False, source=shipped.source) == shipped


def test_mutating_overlay_replaces_the_settings_in_the_configmap(
    mutating: list[dict[str, Any]],
) -> None:
    configs = [
        d
        for d in _kinds(mutating, "ConfigMap")
        if d["metadata"]["name"].startswith("image-policy-config")
    ]
    assert len(configs) == 1
    settings = yaml.safe_load(configs[0]["data"]["settings.yaml"])
    assert settings["mutate"] == {"pin": True}


# --- the Deployment ----------------------------------------------------------------------


def test_deployment_is_spread_budgeted_and_sized(base: list[dict[str, Any]]) -> None:
    deployment = _one(base, "Deployment")
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"]["labels"]
    assert spec["replicas"] == 3
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    spread = {c["topologyKey"]: c for c in pod["topologySpreadConstraints"]}
    assert (
        spread["kubernetes.io/hostname"]["labelSelector"]["matchLabels"].items() <= labels.items()
    )
    anti = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert anti[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    pdb = _one(base, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["maxUnavailable"] == 1
    service = _one(base, "Service")
    assert service["spec"]["selector"].items() <= labels.items()
    (container,) = pod["containers"]
    for kind in ("requests", "limits"):
        assert set(container["resources"][kind]) == {"cpu", "memory"}


def test_deployment_meets_the_restricted_pod_security_standard(
    base: list[dict[str, Any]],
) -> None:
    namespace = _one(base, "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    pod = _one(base, "Deployment")["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    context = container["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["runAsNonRoot"] is True
    assert isinstance(context["runAsUser"], int) and context["runAsUser"] > 0
    assert _dockerfile_user() == f"{context['runAsUser']}:{context['runAsGroup']}"


def test_deployment_mounts_what_its_arguments_name(base: list[dict[str, Any]]) -> None:
    pod = _one(base, "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    args = build_parser().parse_args(["serve", *container["args"]])
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
    configmaps = {d["metadata"]["name"]: d for d in _kinds(base, "ConfigMap")}

    def source(path: str) -> tuple[dict[str, Any], str]:
        directory, _, file = path.rpartition("/")
        return mounts[directory], file

    (rules_path,) = args.rules
    for path in (rules_path, args.config):
        volume, file = source(path)
        assert file in configmaps[volume["configMap"]["name"]]["data"]
    for path in (args.tls_cert, args.tls_key):
        volume, file = source(path)
        assert volume["secret"]["secretName"] == "image-policy-tls"
        assert file in ("tls.crt", "tls.key")
    assert mounts["/dev/shm"]["emptyDir"]["medium"] == "Memory"
    assert mounts["/tmp"]["emptyDir"] is not None
    rules = configmaps[source(rules_path)[0]["configMap"]["name"]]["data"]["rules.yaml"]
    assert loader.load_rules([str(BASE / "rules.yaml")]).rules
    assert rules == (BASE / "rules.yaml").read_text()


def _peers(rule: dict[str, Any], key: str) -> list[dict[str, Any]]:
    peers: list[dict[str, Any]] = rule.get(key, [])
    return peers


def _admitted(peer: dict[str, Any], address: str) -> bool:
    """Whether an ipBlock peer admits `address`."""
    block = peer["ipBlock"]
    ip = ipaddress.ip_address(address)
    network = ipaddress.ip_network(block["cidr"])
    if ip.version != network.version or ip not in network:
        return False
    return not any(ip in ipaddress.ip_network(e) for e in block.get("except", []))


def test_network_policy_admits_the_webhook_port_only_from_the_control_plane_and_prometheus(
    base: list[dict[str, Any]],
) -> None:
    policy = _one(base, "NetworkPolicy")["spec"]
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    labels = _one(base, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= labels.items()
    control_plane, prometheus = policy["ingress"]
    for rule in policy["ingress"]:
        assert rule["ports"] == [{"port": server.TLS_PORT, "protocol": "TCP"}]
        assert _peers(rule, "from"), "a rule without `from` admits every source"
        for peer in _peers(rule, "from"):
            if "ipBlock" in peer:  # never "anywhere": a pod must not drive the resolver
                assert not _admitted(peer, "10.244.1.7") and not _admitted(peer, "8.8.8.8")
            else:  # a pod selector is always scoped to one namespace
                assert set(peer) == {"namespaceSelector", "podSelector"}, peer
    blocks = [p["ipBlock"]["cidr"] for p in _peers(control_plane, "from") if "ipBlock" in p]
    assert blocks == [CONTROL_PLANE_PLACEHOLDER]
    (konnectivity,) = [p for p in _peers(control_plane, "from") if "podSelector" in p]
    assert konnectivity["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "kube-system"
    }
    assert konnectivity["podSelector"]["matchLabels"] == {"k8s-app": "konnectivity-agent"}
    (scraper,) = _peers(prometheus, "from")
    assert scraper["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "prometheus"}
    text = (BASE / "networkpolicy.yaml").read_text()
    assert text.count("SET ME") == 2 and f"{CONTROL_PLANE_PLACEHOLDER}}}" in text
    docs = (ROOT / "docs" / "operations.md").read_text()
    for distribution in ("kubeadm", "EKS", "GKE", "AKS", "k3s"):
        assert distribution in docs
    assert CONTROL_PLANE_PLACEHOLDER in docs


def test_network_policy_egress_is_dns_and_https_never_the_metadata_services(
    base: list[dict[str, Any]],
) -> None:
    policy = _one(base, "NetworkPolicy")["spec"]
    egress = {(p["port"], p["protocol"]) for rule in policy["egress"] for p in rule["ports"]}
    assert egress == {(53, "UDP"), (53, "TCP"), (443, "TCP")}
    dns, https = policy["egress"]
    (resolver,) = _peers(dns, "to")
    assert resolver["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}
    assert resolver["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "kube-system"
    }
    blocks = _peers(https, "to")
    assert all(set(peer) == {"ipBlock"} for peer in blocks)

    def reachable(address: str) -> bool:
        return any(_admitted(peer, address) for peer in blocks)

    for address in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254", "fe80::a9fe:a9fe"):
        assert not reachable(address), address
    for address in ("10.0.0.7", "52.1.2.3", "2600:1f18::1"):  # registries: anywhere else
        assert reachable(address), address


def test_certificate_names_and_secret_match_the_service_and_deployment() -> None:
    docs = _build(KUSTOMIZE / "overlays" / "cert-manager")
    serving = _one(docs, "Certificate", "image-policy-serving")
    assert tuple(serving["spec"]["dnsNames"]) == certs.service_names("image-policy", "image-policy")
    assert serving["spec"]["privateKey"]["algorithm"] == "ECDSA"
    assert serving["spec"]["issuerRef"]["name"] == "image-policy-ca"
    ca = _one(docs, "Certificate", "image-policy-ca")
    assert ca["spec"]["isCA"] is True
    pod = _one(docs, "Deployment")["spec"]["template"]["spec"]
    secrets = {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    assert secrets == {serving["spec"]["secretName"]}
    namespace = serving["metadata"]["namespace"]
    webhook = _one(docs, "ValidatingWebhookConfiguration")
    assert webhook["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == (
        f"{namespace}/{serving['metadata']['name']}"
    )


# --- mutual TLS: the mtls overlay and the API server's side -----------------------------------


@pytest.fixture(scope="module")
def mtls_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of deploy/kubernetes with a client CA in the mtls overlay, as its comment tells
    an operator to put one (here one made by policy.certs)."""
    root = tmp_path_factory.mktemp("kustomize-mtls") / "kubernetes"
    shutil.copytree(KUSTOMIZE, root)
    bundle = certs.issue("kube-apiserver", "clients", now=dt.datetime.now(dt.UTC))
    (root / "overlays/mtls/client-ca/ca.crt").write_bytes(bundle.ca_pem)
    return root


@pytest.fixture(scope="module")
def mtls(mtls_tree: Path) -> list[dict[str, Any]]:
    return _build(mtls_tree / "overlays" / "mtls")


def test_mtls_overlay_requires_client_certificates_of_the_client_ca(
    mtls: list[dict[str, Any]], mtls_tree: Path
) -> None:
    secret = _one(mtls, "Secret", "image-policy-client-ca")
    ca_file = mtls_tree / "overlays/mtls/client-ca/ca.crt"
    assert set(secret["data"]) == {"ca.crt"}  # a certificate, never a key
    assert base64.b64decode(secret["data"]["ca.crt"]) == ca_file.read_bytes()
    pod = _one(mtls, "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    args = build_parser().parse_args(["serve", *container["args"]])
    assert args.client_ca == "/etc/image-policy/client-ca/ca.crt"
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
    directory, _, file = args.client_ca.rpartition("/")
    assert mounts[directory]["secret"]["secretName"] == "image-policy-client-ca"
    assert file in secret["data"]
    # What the server makes of those arguments: gunicorn requires a client certificate
    # signed by that file's CA (tests/e2e/test_exposure.py shows the handshakes).
    options = server.ServeOptions(
        tls_cert=args.tls_cert, tls_key=args.tls_key, client_ca=args.client_ca
    )
    settings = server.gunicorn_settings(options)
    assert (settings["ca_certs"], settings["cert_reqs"]) == (args.client_ca, ssl.CERT_REQUIRED)
    # The kubelet presents no client certificate: an HTTPS probe would fail every time.
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["tcpSocket"] == {"port": "https"}, probe
        assert "httpGet" not in container[probe]
    # Everything else is the cert-manager overlay's, unchanged.
    assert _one(mtls, "Certificate", "image-policy-serving")
    assert _one(mtls, "NetworkPolicy") == _one(
        _build(KUSTOMIZE / "overlays/cert-manager"), "NetworkPolicy"
    )


def test_mtls_overlay_without_a_client_ca_does_not_build() -> None:
    if (MTLS / "client-ca" / "ca.crt").exists():
        pytest.skip("a checkout with a client CA put in it")
    done = subprocess.run(
        [_kubectl(), "kustomize", str(MTLS)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert "client-ca/ca.crt" in done.stderr


def test_apiserver_presents_its_client_certificate_to_the_webhook_service(
    mtls: list[dict[str, Any]],
) -> None:
    """The API server's side: its AdmissionConfiguration gives both webhook plugins a
    kubeconfig whose user entry is named for the Service the webhook configurations call."""
    directory = MTLS / "apiserver"
    config = yaml.safe_load((directory / "admission-configuration.yaml").read_text())
    assert (config["apiVersion"], config["kind"]) == (
        "apiserver.config.k8s.io/v1",
        "AdmissionConfiguration",
    )
    plugins = {p["name"]: p["configuration"] for p in config["plugins"]}
    assert set(plugins) == {"ValidatingAdmissionWebhook", "MutatingAdmissionWebhook"}
    for configuration in plugins.values():
        assert configuration["kind"] == "WebhookAdmissionConfiguration"
        assert Path(configuration["kubeConfigFile"]).name == "kubeconfig.yaml"
    kubeconfig = yaml.safe_load((directory / "kubeconfig.yaml").read_text())
    users = {u["name"]: u["user"] for u in kubeconfig["users"]}
    for _, hook in _webhooks(mtls):
        service = hook["clientConfig"]["service"]
        name = f"{service['name']}.{service['namespace']}.svc"
        if service.get("port", 443) != 443:
            name += f":{service['port']}"
        assert set(users[name]) == {"client-certificate", "client-key"}, name


# --- ImagePolicyWebhook --------------------------------------------------------------------


def test_image_policy_webhook_config_points_at_imagereview(routes: dict[str, set[str]]) -> None:
    directory = DEPLOY / "imagepolicywebhook"
    config = yaml.safe_load((directory / "admission-configuration.yaml").read_text())
    assert config["kind"] == "AdmissionConfiguration"
    assert config["apiVersion"] == "apiserver.config.k8s.io/v1"
    (plugin,) = config["plugins"]
    assert plugin["name"] == "ImagePolicyWebhook"
    policy = plugin["configuration"]["imagePolicy"]
    assert 1 <= policy["allowTTL"] <= 1800 and 1 <= policy["denyTTL"] <= 1800
    assert policy["denyTTL"] <= policy["allowTTL"]
    assert 1 <= policy["retryBackoff"] <= 300_000
    assert policy["defaultAllow"] is False
    assert Path(policy["kubeConfigFile"]).name == "kubeconfig.yaml"
    kubeconfig = yaml.safe_load((directory / "kubeconfig.yaml").read_text())
    (cluster,) = kubeconfig["clusters"]
    url = urlsplit(cluster["cluster"]["server"])
    assert url.scheme == "https" and url.path == "/imagereview"
    assert "POST" in routes[url.path]
    assert url.hostname in certs.service_names("image-policy", "image-policy")
    assert kubeconfig["current-context"] == kubeconfig["contexts"][0]["name"]
    readme = (directory / "README.md").read_text()
    for field in ("allowTTL", "denyTTL", "retryBackoff", "defaultAllow"):
        assert field in readme


# --- the local compose stack -----------------------------------------------------------------


def test_compose_stack_is_pinned_local_and_read_only(tmp_path: Path) -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"registry", "seed", "certs", "redis-password", "redis", "webhook"}
    registry = reference.parse(services["registry"]["image"])
    assert registry.name == "docker.io/library/registry" and registry.digest is not None
    assert HEX64.fullmatch(registry.digest)
    for name, service in services.items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), name
    webhook = services["webhook"]
    assert (DEPLOY / webhook["build"]["context"] / webhook["build"]["dockerfile"]).resolve() == (
        DOCKERFILE
    )
    assert webhook["read_only"] is True
    args = build_parser().parse_args(["serve", *webhook["command"]])
    mounts = {m.split(":")[1]: m.split(":")[0] for m in webhook["volumes"]}
    assert loader.load_rules([str(DEPLOY / mounts[args.rules[0]])]).rules
    # The redis password is made when the stack starts (the redis-password service).
    password = tmp_path / "password"
    password.write_text("made-at-start\n")
    text = (DEPLOY / mounts[args.config]).read_text()
    text = text.replace("/run/secrets/redis/password", str(password))
    settings = settings_mod.parse_settings(text, "settings.yaml", env={})
    assert settings.registries
    assert settings.shared_cache is not None and settings.shared_cache.password == "made-at-start"
    seed = services["seed"]
    script = seed["volumes"][0].split(":")[0]
    assert (DEPLOY / script).is_file()
    certs_args = build_parser().parse_args(["certs", *services["certs"]["command"]])
    assert Path(args.tls_cert).parent == Path(certs_args.out)


# --- the Dockerfile ------------------------------------------------------------------------


def _instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction: continuations joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        if line.lstrip().startswith("#"):  # comment lines, also inside continuations
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        pending += line
        if pending.strip():
            keyword, _, rest = pending.strip().partition(" ")
            out.append((keyword.upper(), rest.strip()))
        pending = ""
    return out


def _final_stage() -> list[tuple[str, str]]:
    instructions = _instructions(DOCKERFILE.read_text())
    last_from = max(i for i, (k, _) in enumerate(instructions) if k == "FROM")
    return instructions[last_from:]


def _dockerfile_user() -> str:
    users = [args for keyword, args in _final_stage() if keyword == "USER"]
    return users[-1]


def test_dockerfile_structure() -> None:
    instructions = _instructions(DOCKERFILE.read_text())
    froms = [args for keyword, args in instructions if keyword == "FROM"]
    assert len(froms) == 2 and froms[0].endswith(" AS build")  # multi-stage
    final = _final_stage()
    user = _dockerfile_user()
    assert re.fullmatch(r"[1-9][0-9]*:[1-9][0-9]*", user)  # numeric, not root
    assert [k for k, _ in final].index("USER") > max(
        i for i, (k, _) in enumerate(final) if k == "RUN"
    )
    assert ("ENTRYPOINT", '["image-policy", "serve"]') in final
    labels = " ".join(args for keyword, args in final if keyword == "LABEL")
    for key, value in (
        ("org.opencontainers.image.source", "${SOURCE}"),
        ("org.opencontainers.image.version", "${VERSION}"),
        ("org.opencontainers.image.revision", "${REVISION}"),
    ):
        assert f'{key}="{value}"' in labels
    declared = {args.split("=")[0] for keyword, args in final if keyword == "ARG"}
    assert {"SOURCE", "VERSION", "REVISION"} <= declared
    for keyword, args in instructions:
        if keyword == "RUN" and re.search(r"\bpip (install|wheel)\b", args):
            assert args.count("--no-cache-dir") == len(
                re.findall(r"\bpip (?:install|wheel)\b", args)
            )
    # The runtime stage adds one layer, and needs nothing from the build context but files
    # the .dockerignore lets in.
    assert [k for k, _ in final if k in ("RUN", "COPY", "ADD")] == ["RUN"]


def test_dockerignore_lets_in_exactly_what_the_dockerfile_uses() -> None:
    allowed = {
        line[1:].rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    used: set[str] = set()
    for keyword, args in _instructions(DOCKERFILE.read_text()):
        words = args.split()
        if keyword == "COPY" and not any(w.startswith("--from") for w in words):
            used.update(w.rstrip("/") for w in words[:-1] if not w.startswith("--"))
        for mount in re.findall(r"--mount=(\S+)", args):
            fields = dict(part.split("=", 1) for part in mount.split(","))
            if "from" not in fields and "source" in fields:
                used.add(fields["source"].rstrip("/"))
    assert used == allowed
    for path in used:
        assert (ROOT / path).exists()


def test_dockerfile_base_images_are_pinned_by_digest() -> None:
    found = dockerfile.scan(DOCKERFILE.read_text(), str(DOCKERFILE))
    assert [f.name for f in found] == ["build", ""]
    for image in found:
        ref = reference.parse(image.image)
        assert ref.name == "docker.io/library/python" and ref.tag == "3.11-slim"
        assert ref.digest is not None and HEX64.fullmatch(ref.digest)


def _check(*argv: str) -> tuple[int, dict[str, Any]]:
    out, err = io.StringIO(), io.StringIO()
    code = main(
        [
            "check",
            "--rules",
            str(ROOT / "rules" / "default.yaml"),
            "--format=json",
            "--no-cache",
            *argv,
        ],
        out=out,
        err=err,
    )
    assert code in (0, 1), err.getvalue()
    report: dict[str, Any] = json.loads(out.getvalue())
    return code, report


def _denied_rules(report: dict[str, Any]) -> set[str]:
    return {v["rule"] for r in report["results"] for v in r["violations"] if v["action"] == "deny"}


def test_dockerfile_base_images_pass_the_default_rules_but_for_their_root_user() -> None:
    """`image-policy check` on the images the Dockerfile builds from: trusted tier, pinned,
    not latest, few layers; the base runs as root, which the runtime stage's USER fixes
    (the next test checks the image we build)."""
    found = dockerfile.scan(DOCKERFILE.read_text(), str(DOCKERFILE))
    images = [f.image for f in found]
    code, report = _check("--facts", str(BASE_FACTS), str(DOCKERFILE))
    assert code == 1
    assert [(r["image"], r["source"]) for r in report["results"]] == [
        (f.image, f.location) for f in found
    ]
    assert _denied_rules(report) == {"non-root"}
    # The same check fails the `pinned` rule for the base as a tag: the test can fail.
    tagged = images[0].split("@")[0]
    _, report = _check("--facts", str(BASE_FACTS), f"--image={tagged}")
    assert "pinned" in _denied_rules(report)


def test_the_image_we_build_passes_the_default_rules(tmp_path: Path) -> None:
    """Facts for our image, derived from the Dockerfile and its base's facts: the base's
    layers plus the runtime stage's layers, and the runtime stage's USER."""
    base_facts = yaml.safe_load(BASE_FACTS.read_text())["images"]
    (base_entry,) = base_facts.values()
    added = sum(1 for keyword, _ in _final_stage() if keyword in ("RUN", "COPY", "ADD"))
    digest = "sha256:" + "1" * 64  # not built here; the digest only has to be present
    ours = f"ghcr.io/image-policy/image-policy:0.1.0@{digest}"
    facts = {
        "images": {
            ours: {
                "digest": digest,
                "platforms": {
                    platform: {
                        "layers": entry["layers"] + added,
                        "user": _dockerfile_user(),
                        "created": "2026-01-01T00:00:00Z",
                    }
                    for platform, entry in base_entry["platforms"].items()
                },
            }
        }
    }
    path = tmp_path / "facts.yaml"
    path.write_text(yaml.safe_dump(facts))
    code, report = _check("--facts", str(path), f"--image={ours}")
    assert _denied_rules(report) == set()
    assert code == 0


def test_the_docker_build_context_builds_the_wheel(tmp_path: Path) -> None:
    """The files .dockerignore lets in are enough for the build stage's `pip wheel .`; the
    wheel has the `image-policy` command and the modules the image runs."""
    context = tmp_path / "context"
    context.mkdir()
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        if not line.startswith("!"):
            continue
        source = ROOT / line[1:].rstrip("/")
        target = context / line[1:].rstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, target)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(context),
            "-w",
            str(tmp_path / "wheels"),
            "--no-deps",
            "--no-cache-dir",
            # Offline: the venv's setuptools (a test extra) instead of an isolated download.
            "--no-build-isolation",
            "--no-index",
            "-q",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    (wheel,) = (tmp_path / "wheels").glob("image_policy-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        assert "image-policy = policy.cli:main" in archive.read(entry_points).decode()
    for module in ("policy/web/app.py", "policy/server.py", "policy/certs.py", "policy/py.typed"):
        assert module in names


# Custom resources registered by overlays/custom-resources → a sample object of that kind.
CUSTOM_SAMPLES = {
    ("argoproj.io", "rollouts"): "rollout.yaml",
    ("argoproj.io", "workflows"): "argo-workflow.yaml",
    ("serving.knative.dev", "services"): "knative-service.yaml",
    ("apps.kruise.io", "clonesets"): "cloneset.yaml",
    ("tekton.dev", "tasks"): "tekton-task.yaml",
}
CUSTOM_KINDS_WITHOUT_SAMPLE = {
    ("argoproj.io", "workflowtemplates"): "WorkflowTemplate",
    ("argoproj.io", "cronworkflows"): "CronWorkflow",
    ("tekton.dev", "taskruns"): "TaskRun",
    ("tekton.dev", "pipelines"): "Pipeline",
    ("tekton.dev", "pipelineruns"): "PipelineRun",
}


def test_custom_resources_overlay_registers_kinds_the_webhook_reads() -> None:
    """Every kind the overlay registers beyond the base is one whose images the webhook finds:
    its sample (tests/data/realworld) has images by shape or by the built-in table, and the
    rest are built-in table entries; the overlay's settings load, with its example kind."""
    from policy.k8s import admission, workloads

    docs = _build(KUSTOMIZE / "overlays" / "custom-resources")
    hook = _one(docs, "ValidatingWebhookConfiguration")["webhooks"][0]
    custom = [r for r in hook["rules"] if r["apiGroups"] not in ([""], ["apps"], ["batch"])]
    registered = {(g, res) for r in custom for g in r["apiGroups"] for res in r["resources"]}
    assert registered == set(CUSTOM_SAMPLES) | set(CUSTOM_KINDS_WITHOUT_SAMPLE)
    samples = ROOT / "tests" / "data" / "realworld" / "deploy" / "crds"
    for (group, _), name in CUSTOM_SAMPLES.items():
        obj = yaml.safe_load((samples / name).read_text())
        request = admission.parse_review(
            {
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "request": {
                    "uid": "u",
                    "kind": {"group": group, "version": "v1", "kind": obj["kind"]},
                    "operation": "CREATE",
                    "object": obj,
                },
            }
        )
        assert admission.plan(request).check, name
    for (group, _), kind in CUSTOM_KINDS_WITHOUT_SAMPLE.items():
        assert (group, kind) in workloads.BUILTIN_TABLE
    settings = settings_mod.load_settings(
        KUSTOMIZE / "overlays" / "custom-resources" / "settings.yaml", env={}
    )
    assert ("batch.example.com", "Runner") in settings.workload_table
    assert settings.decision_timeout < 10
