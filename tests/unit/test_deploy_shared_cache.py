"""The shared-cache overlay (deploy/kubernetes/overlays/shared-cache) agrees with the code and
keeps Redis private: it builds, its settings load and name the Service it adds, the webhook
mounts the password where the settings read it and may reach Redis, only the webhook may,
and Redis meets the restricted Pod Security Standard."""

from __future__ import annotations

import ipaddress
import re
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from policy import settings as settings_mod
from policy import units
from tests.unit.test_deploy import KUSTOMIZE, _kubectl

OVERLAY = KUSTOMIZE / "overlays" / "shared-cache"


@pytest.fixture(scope="module")
def built() -> list[dict[str, Any]]:
    result = subprocess.run(
        [_kubectl(), "kustomize", str(OVERLAY)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    """The one `kind` named `name` (a generated ConfigMap: `name` plus kustomize's hash)."""
    named = re.compile(re.escape(name) + (r"-[a-z0-9]{10}" if kind == "ConfigMap" else ""))
    [found] = [d for d in docs if d["kind"] == kind and named.fullmatch(d["metadata"]["name"])]
    return found


def test_settings_name_the_service_and_read_the_mounted_password(
    built: list[dict[str, Any]], tmp_path: Path
) -> None:
    text = one(built, "ConfigMap", "image-policy-config")["data"]["settings.yaml"]
    declared = yaml.safe_load(text)["cache"]["shared"]
    password = tmp_path / "password"
    password.write_text("from-the-secret\n")
    shipped = settings_mod.parse_settings(
        text.replace(declared["passwordFile"], str(password)), "settings.yaml", env={}
    )
    shared = shipped.shared_cache
    assert shared is not None and shared.password == "from-the-secret"
    url = urlsplit(shared.url)
    service = one(built, "Service", "image-policy-redis")
    assert url.hostname == service["metadata"]["name"]
    assert url.port == service["spec"]["ports"][0]["port"] == 6379
    base = settings_mod.load_settings(KUSTOMIZE / "base" / "settings.yaml", env={})
    assert shipped.cache_max_bytes == base.cache_max_bytes and shipped.tag_ttl == base.tag_ttl

    webhook = one(built, "Deployment", "image-policy")["spec"]["template"]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in webhook["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in webhook["volumes"]}
    secret = volumes["redis-password"]["secret"]
    assert secret["secretName"] == "image-policy-redis"
    [item] = secret["items"]
    assert Path(mounts["redis-password"]) / item["path"] == Path(declared["passwordFile"])


def labels_match(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def test_only_the_webhook_reaches_redis_and_redis_reaches_nothing(
    built: list[dict[str, Any]],
) -> None:
    redis_pod = one(built, "Deployment", "image-policy-redis")["spec"]["template"]
    webhook_pod = one(built, "Deployment", "image-policy")["spec"]["template"]
    policy = one(built, "NetworkPolicy", "image-policy-redis")["spec"]
    assert labels_match(policy["podSelector"], redis_pod["metadata"]["labels"])
    assert not labels_match(policy["podSelector"], webhook_pod["metadata"]["labels"])
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"} and policy["egress"] == []
    [rule] = policy["ingress"]
    [peer] = rule["from"]
    assert set(peer) == {"podSelector"}  # this namespace only: no namespaceSelector, no ipBlock
    assert labels_match(peer["podSelector"], webhook_pod["metadata"]["labels"])
    assert rule["ports"] == [{"port": 6379, "protocol": "TCP"}]

    webhook_policy = one(built, "NetworkPolicy", "image-policy")["spec"]
    to_redis = [
        r
        for r in webhook_policy["egress"]
        if any(
            "podSelector" in p and labels_match(p["podSelector"], redis_pod["metadata"]["labels"])
            for p in r["to"]
        )
    ]
    assert [r["ports"] for r in to_redis] == [[{"port": 6379, "protocol": "TCP"}]]
    # ... and the base's other egress is unchanged: the metadata services stay refused.
    metadata = ipaddress.ip_address("169.254.169.254")
    for rule in webhook_policy["egress"]:
        for peer in rule["to"]:
            block = peer.get("ipBlock")
            if block and metadata in ipaddress.ip_network(block["cidr"]):
                assert any(metadata in ipaddress.ip_network(e) for e in block["except"])


def test_redis_is_restricted_bounded_and_keeps_its_password_out_of_argv(
    built: list[dict[str, Any]],
) -> None:
    pod = one(built, "Deployment", "image-policy-redis")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    [container] = pod["containers"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert "requirepass" not in " ".join(container["command"])
    script = " ".join(container["args"])
    assert "--requirepass" not in script and "$(REDIS_PASSWORD)" not in script
    assert not container.get("env")
    config = one(built, "ConfigMap", "image-policy-redis-config")["data"]["redis.conf"]
    lines = dict(
        line.split(None, 1) for line in config.splitlines() if line and not line.startswith("#")
    )
    assert lines["maxmemory-policy"] == "allkeys-lru"
    assert lines["save"] == '""' and lines["appendonly"] == "no"
    maxmemory = units.parse_size(lines["maxmemory"].upper().replace("MB", "MiB"))
    limit = units.parse_size(container["resources"]["limits"]["memory"] + "B")
    assert maxmemory + 64 * 1024 * 1024 <= limit  # room for Redis's own overhead
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/etc/redis" in mounts and "/run/redis" in mounts
    assert lines["include"].startswith("/run/redis/")


def test_compose_redis_is_private_and_its_password_reaches_the_webhook() -> None:
    compose = yaml.safe_load((KUSTOMIZE.parent / "compose.yaml").read_text())
    services = compose["services"]
    redis_service, webhook = services["redis"], services["webhook"]
    assert "ports" not in redis_service  # the stack's network only
    assert redis_service["read_only"] is True
    assert "--requirepass" not in " ".join(redis_service["command"])
    settings = yaml.safe_load((KUSTOMIZE.parent / "compose" / "settings.yaml").read_text())
    shared = settings["cache"]["shared"]
    assert urlsplit(shared["url"]).hostname == "redis"
    secret_mounts = {
        m.split(":")[1]: m.split(":")[0] for m in webhook["volumes"] if not m.startswith(".")
    }
    assert secret_mounts[str(Path(shared["passwordFile"]).parent)] == "redis-secret"
    assert webhook["depends_on"]["redis"] == {"condition": "service_started"}
