"""The webhook end to end: `image-policy serve` (real gunicorn, TLS verified with our CA)
judging images of the real distribution registry."""

from __future__ import annotations

import base64
import http.client
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.e2e.conftest import CA, HangingRegistry, Seeded, Webhook, rules_text, start_webhook

pytestmark = pytest.mark.registry

V1 = "admission.k8s.io/v1"
V1BETA1 = "admission.k8s.io/v1beta1"


def review(
    obj: dict[str, Any],
    *,
    uid: str = "uid-1",
    kind: str = "Pod",
    group: str = "",
    operation: str = "CREATE",
    namespace: str = "dev",
    old: dict[str, Any] | None = None,
    sub: str | None = None,
    api: str = V1,
) -> dict[str, Any]:
    request: dict[str, Any] = {
        "uid": uid,
        "kind": {"group": group, "version": "v1", "kind": kind},
        "resource": {"group": group, "version": "v1", "resource": kind.lower() + "s"},
        "namespace": namespace,
        "operation": operation,
        "userInfo": {"username": "system:serviceaccount:ci:deployer"},
        "object": obj,
        "oldObject": old,
    }
    if sub:
        request["subResource"] = sub
    return {"apiVersion": api, "kind": "AdmissionReview", "request": request}


def spec(*images: str, **extra: Any) -> dict[str, Any]:
    return {"containers": [{"name": f"c{i}", "image": im} for i, im in enumerate(images)], **extra}


def answer(hook: Webhook, doc: dict[str, Any], path: str = "/validate") -> dict[str, Any]:
    body = hook.post(path, doc)
    assert body["apiVersion"] == doc["apiVersion"]
    response: dict[str, Any] = body["response"]
    assert response["uid"] == doc["request"]["uid"]
    return response


def test_pod_with_init_and_ephemeral_containers(webhook: Webhook, registry: Seeded) -> None:
    pod = {
        "kind": "Pod",
        "metadata": {"name": "web"},
        "spec": spec(
            registry.ref("team/app"),
            initContainers=[{"name": "setup", "image": registry.ref("team/tools")}],
            ephemeralContainers=[{"name": "debug", "image": registry.ref("team/big")}],
        ),
    }
    response = answer(webhook, review(pod))
    assert response["allowed"] is False
    message = response["status"]["message"]
    assert response["status"]["code"] == 403
    assert f'ephemeral container "debug" image "{registry.ref("team/big")}": rule few-layers' in (
        message
    )
    assert "has 8 layers" in message
    assert "team/app" not in message and "team/tools" not in message


def test_cronjob_is_allowed_and_pinned(webhook: Webhook, registry: Seeded) -> None:
    cronjob = {
        "kind": "CronJob",
        "spec": {"jobTemplate": {"spec": {"template": {"spec": spec(registry.ref("team/app"))}}}},
    }
    doc = review(cronjob, kind="CronJob", group="batch")
    assert answer(webhook, doc) == {"uid": "uid-1", "allowed": True}
    mutated = answer(webhook, doc, "/mutate")
    patch = json.loads(base64.b64decode(mutated["patch"]))
    assert patch == [
        {
            "op": "replace",
            "path": "/spec/jobTemplate/spec/template/spec/containers/0/image",
            "value": f"{registry.ref('team/app')}@{registry.small.digest}",
        }
    ]


def test_index_is_pinned_to_the_index_digest(webhook: Webhook, registry: Seeded) -> None:
    doc = review({"kind": "Pod", "spec": spec(registry.ref("team/multi"))})
    mutated = answer(webhook, doc, "/mutate")
    patch = json.loads(base64.b64decode(mutated["patch"]))
    assert patch[0]["value"] == f"{registry.ref('team/multi')}@{registry.multi.digest}"


def test_update_of_an_old_workload_is_not_rechecked(webhook: Webhook, registry: Seeded) -> None:
    def deployment(*images: str) -> dict[str, Any]:
        return {"kind": "Deployment", "spec": {"replicas": 3, "template": {"spec": spec(*images)}}}

    old = deployment(registry.ref("team/big"))
    scaled = review(old, kind="Deployment", group="apps", operation="UPDATE", old=old)
    assert answer(webhook, scaled)["allowed"] is True
    changed = review(
        deployment(registry.ref("team/big"), "quay.io/evil/miner:1"),
        kind="Deployment",
        group="apps",
        operation="UPDATE",
        old=old,
    )
    response = answer(webhook, changed)
    assert response["allowed"] is False
    assert "quay.io/evil/miner:1" in response["status"]["message"]
    assert "team/big" not in response["status"]["message"]


def test_ephemeral_containers_subresource_v1beta1(webhook: Webhook, registry: Seeded) -> None:
    old = {"kind": "Pod", "spec": spec(registry.ref("team/app"))}
    new = {
        "kind": "Pod",
        "spec": spec(
            registry.ref("team/app"),
            ephemeralContainers=[{"name": "debugger", "image": registry.ref("team/tools", "nope")}],
        ),
    }
    doc = review(new, operation="UPDATE", old=old, sub="ephemeralcontainers", api=V1BETA1)
    response = answer(webhook, doc)
    assert response["allowed"] is False
    assert "manifest" in response["status"]["message"]
    assert "onResolveError is deny" in response["status"]["message"]


def test_warnings_and_audit_annotations(webhook: Webhook, registry: Seeded) -> None:
    doc = review({"kind": "Pod", "spec": spec(registry.ref("team/app", "1.0"))}, namespace="prod")
    response = answer(webhook, doc)
    assert response["allowed"] is True
    assert set(response["auditAnnotations"]) == {"prod-pinned"}


def test_image_review_and_break_glass(webhook: Webhook, registry: Seeded) -> None:
    def image_review(*images: str, **annotations: str) -> dict[str, Any]:
        return {
            "apiVersion": "imagepolicy.k8s.io/v1alpha1",
            "kind": "ImageReview",
            "spec": {
                "containers": [{"image": i} for i in images],
                "namespace": "dev",
                "annotations": annotations,
            },
        }

    ok = webhook.post("/imagereview", image_review(registry.ref("team/app")))
    assert ok["status"] == {"allowed": True}
    denied = webhook.post("/imagereview", image_review(registry.ref("team/big")))
    assert denied["status"]["allowed"] is False
    assert "rule few-layers" in denied["status"]["reason"]
    glass = webhook.post(
        "/imagereview",
        image_review(registry.ref("team/big"), **{"break-glass.image-policy.k8s.io/inc": "42"}),
    )
    assert glass["status"]["allowed"] is True
    assert "break-glass" in glass["status"]["auditAnnotations"]


def test_bad_requests_are_400_over_tls(webhook: Webhook) -> None:
    with webhook.session() as s:
        bad = s.post(f"{webhook.url}/validate", data=b"{not json", timeout=5)
        assert bad.status_code == 400
    # An oversized body is refused from its Content-Length, before it is read.
    host, port = webhook.url.removeprefix("https://").split(":")
    context = ssl.create_default_context(cafile=str(webhook.ca.path))
    connection = http.client.HTTPSConnection(host, int(port), context=context, timeout=5)
    try:
        connection.putrequest("POST", "/validate")
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Content-Length", str(4 * 1024 * 1024))
        connection.endheaders()
        reply = connection.getresponse()
        assert reply.status == 413
        assert "larger than 3 MiB" in json.loads(reply.read())["error"]
    finally:
        connection.close()
    with webhook.session() as s:
        assert s.get(f"{webhook.url}/healthz", timeout=5).status_code == 200


def chunks(body: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    """The body in pieces: requests sends a generator with `Transfer-Encoding: chunked`."""
    for start in range(0, len(body), size):
        yield body[start : start + size]


def test_chunked_bodies_are_capped_like_content_length_ones(
    webhook: Webhook, registry: Seeded
) -> None:
    doc = review({"kind": "Pod", "spec": spec(registry.ref("team/app"))})
    text = json.dumps(doc).encode()
    cap = 3 * 1024 * 1024
    at_cap = text + b" " * (cap - len(text))  # valid JSON of exactly 3 MiB
    with webhook.session() as s:
        headers = {"Content-Type": "application/json"}
        # Sent chunked and within the cap, the review is judged as usual ...
        judged = s.post(f"{webhook.url}/validate", data=chunks(at_cap), headers=headers, timeout=20)
        assert judged.status_code == 200, judged.text
        assert judged.request.headers["Transfer-Encoding"] == "chunked"
        assert judged.json()["response"]["allowed"] is True
        # ... and with garbage after that valid 3 MiB prefix, it is refused as too large.
        over = at_cap + b"garbage}" * 4096
        refused = s.post(f"{webhook.url}/validate", data=chunks(over), headers=headers, timeout=20)
        assert refused.status_code == 413, refused.text
        assert refused.json() == {"error": "request body is larger than 3 MiB", "code": 413}
    # Declared with a Content-Length, the same size gets the same answer (before any is sent).
    host, port = webhook.url.removeprefix("https://").split(":")
    context = ssl.create_default_context(cafile=str(webhook.ca.path))
    connection = http.client.HTTPSConnection(host, int(port), context=context, timeout=5)
    try:
        connection.putrequest("POST", "/validate")
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Content-Length", str(len(over)))
        connection.endheaders()
        reply = connection.getresponse()
        assert reply.status == 413
        assert json.loads(reply.read()) == refused.json()
    finally:
        connection.close()
    with webhook.session() as s:
        assert s.get(f"{webhook.url}/healthz", timeout=5).status_code == 200


def test_100_concurrent_reviews_are_all_answered_correctly(
    webhook: Webhook, registry: Seeded
) -> None:
    def one(i: int) -> tuple[int, bool]:
        image = registry.ref("team/big") if i % 3 == 0 else registry.ref("team/app")
        doc = review({"kind": "Pod", "spec": spec(image)}, uid=f"uid-{i}")
        with webhook.session() as s:
            body = webhook.post("/validate", doc, session=s)
        assert body["response"]["uid"] == f"uid-{i}"
        return i, body["response"]["allowed"]

    with ThreadPoolExecutor(max_workers=100) as pool:
        results = list(pool.map(one, range(100)))
    assert results == [(i, i % 3 != 0) for i in range(100)]
    with webhook.session() as s:
        metrics = s.get(f"{webhook.url}/metrics", timeout=5).text
    assert "image_policy_registry_requests_total" in metrics
    assert "image_policy_cache_lookups_total" in metrics


def test_a_hanging_registry_is_decided_within_the_deadline(
    tmp_path: Path, ca: CA, registry: Seeded, hanging_registry: HangingRegistry
) -> None:
    rules = rules_text(registry.host).replace(
        f'registries: ["{registry.host}"]',
        f'registries: ["{registry.host}", "{hanging_registry.host}"]',
    )
    hook = start_webhook(
        tmp_path / "hang",
        ca,
        rules,
        settings="timeouts: {decision: 1.5s, request: 5s}\n",
        workers=1,
    )
    try:
        doc = review({"kind": "Pod", "spec": spec(f"{hanging_registry.host}/team/app:1.0")})
        started = time.monotonic()
        response = answer(hook, doc)
        elapsed = time.monotonic() - started
        assert elapsed < 4.0
        assert response["allowed"] is False
        message = response["status"]["message"]
        assert "could not be fetched (registry unreachable); onResolveError is deny" in message
        # What happened is the operator's to read, in the decision log line of the review.
        line = hook.decision_line(response["uid"])
        (violation,) = line["images"][0]["violations"]
        assert violation["message"] in message
        # The transport cuts the exchange at the deadline ("timed out"), or the resolver stops
        # waiting for it first ("no answer … within the decision deadline").
        host = hanging_registry.host
        assert (
            f"no answer from {host} within the decision deadline" in violation["detail"]
            or f"cannot reach {host}: timed out" in violation["detail"]
        ), violation["detail"]
    finally:
        hook.stop()


def _served_certificate(url: str, ca_path: Path) -> bytes:
    host, port = url.removeprefix("https://").split(":")
    context = ssl.create_default_context(cafile=str(ca_path))
    with (
        socket.create_connection((host, int(port)), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def test_certificate_rotation_while_serving(tmp_path: Path, ca: CA, registry: Seeded) -> None:
    hook = start_webhook(tmp_path / "rotate", ca, rules_text(registry.host), workers=1, threads=8)
    stop = threading.Event()
    failures: list[str] = []
    answered = 0

    def traffic() -> None:
        nonlocal answered
        doc = review({"kind": "Pod", "spec": spec(registry.ref("team/app"))})
        while not stop.is_set():
            try:
                with hook.session() as s:  # a new connection (and handshake) every time
                    body = hook.post("/validate", doc, session=s)
                assert body["response"]["allowed"] is True
                answered += 1
            except (requests.RequestException, AssertionError) as exc:
                failures.append(repr(exc))

    try:
        first = _served_certificate(hook.url, ca.path)
        runners = [threading.Thread(target=traffic) for _ in range(4)]
        for runner in runners:
            runner.start()
        time.sleep(0.3)
        new = ca.issue("image-policy.test.svc")
        # Like a careless rotation: the certificate lands first, the key a moment later.
        (hook.directory / "tls.crt.new").write_bytes(new.cert)
        (hook.directory / "tls.crt.new").replace(hook.cert)
        time.sleep(0.3)
        (hook.directory / "tls.key.new").write_bytes(new.key)
        (hook.directory / "tls.key.new").replace(hook.key)
        end = time.monotonic() + 5
        served = first
        while time.monotonic() < end and served != new.der:
            served = _served_certificate(hook.url, ca.path)
            time.sleep(0.05)
        time.sleep(0.3)
        stop.set()
        for runner in runners:
            runner.join(timeout=10)
        assert served == new.der != first
        assert failures == []
        # Connections made while only the certificate was new kept the previous pair.
        assert "do not load yet" in hook.log()
        assert answered > 10
    finally:
        stop.set()
        hook.stop()


def test_broken_rules_reload_keeps_the_old_rules_serving(
    tmp_path: Path, ca: CA, registry: Seeded
) -> None:
    hook = start_webhook(tmp_path / "reload", ca, rules_text(registry.host), workers=1)
    try:
        big = review({"kind": "Pod", "spec": spec(registry.ref("team/big"))})
        assert answer(hook, big)["allowed"] is False
        hook.rules.write_text("rules: [this is not\n")
        time.sleep(1.2)
        assert answer(hook, big)["allowed"] is False  # old rules still judge
        with hook.session() as s:
            ready = s.get(f"{hook.url}/readyz", timeout=5)
            assert ready.status_code == 200
            assert "rules.yaml" in ready.json()["rulesError"]
            metrics = s.get(f"{hook.url}/metrics", timeout=5).text
        assert 'image_policy_config_reloads_total{file="rules",result="error"} 1.0' in metrics
        assert '"event": "reload"' in hook.log()
        hook.rules.write_text(rules_text(registry.host, max_layers=10, name="relaxed"))
        time.sleep(1.2)
        assert answer(hook, big)["allowed"] is True
    finally:
        hook.stop()


def test_client_certificates_are_required_with_a_client_ca(
    tmp_path: Path, ca: CA, registry: Seeded
) -> None:
    hook = start_webhook(
        tmp_path / "mtls", ca, rules_text(registry.host), workers=1, client_ca=ca.path
    )
    try:
        doc = review({"kind": "Pod", "spec": spec(registry.ref("team/app"))})
        assert hook.post("/validate", doc)["response"]["allowed"] is True
        with requests.Session() as anonymous:
            anonymous.trust_env = False
            anonymous.verify = str(ca.path)
            with pytest.raises(requests.exceptions.ConnectionError):
                anonymous.post(f"{hook.url}/validate", json=doc, timeout=5)
    finally:
        hook.stop()
