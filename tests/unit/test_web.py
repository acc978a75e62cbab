"""policy.web with the Flask test client and an in-memory resolver: every endpoint, every
kind of review, bad requests (400, never 500), metrics, logs and live rule reloads."""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policy import loader, web
from policy import resolver as resolver_mod
from policy.bulkhead import NEW, PROVEN
from policy.deadline import Deadline
from policy.facts import ImageFacts, Needs, PlatformFacts
from policy.k8s import admission
from policy.reference import Reference, parse
from policy.settings import Settings, load_settings
from tests.support.reviews import workload

DIGEST = "sha256:" + "ab" * 32
OTHER = "sha256:" + "cd" * 32
NOW = datetime(2026, 6, 1, tzinfo=UTC)

RULES = """\
apiVersion: image-policy/v1
kind: RuleSet
metadata: {name: web-test}
defaults: {action: deny, onResolveError: deny, unmatched: deny, platforms: ["linux/amd64"]}
rules:
  - id: trusted-registries
    match: {images: ["**"]}
    require: {registries: ["docker.io", "registry.example"]}
  - id: few-layers
    match: {images: ["**"]}
    require: {maxLayers: 5}
  - id: no-latest
    match: {images: ["**"]}
    require: {denyTags: ["latest"]}
    action: warn
  - id: shop-pinned
    match: {images: ["**"], namespaces: ["shop"]}
    require: {digest: true}
    action: audit
exceptions:
  - rules: [few-layers]
    images: ["registry.example/legacy"]
    reason: old app, ticket OPS-1
    expires: 2026-01-31
"""

# Layers per repository; a repository not listed is unknown to the registry.
LAYERS = {
    "docker.io/library/nginx": 3,
    "docker.io/library/redis": 4,
    "docker.io/library/busybox": 2,
    "registry.example/app": 1,
    "registry.example/big": 9,
    "registry.example/legacy": 9,
}


class FakeResolver:
    """Answers from LAYERS; records every batch asked for."""

    def __init__(self) -> None:
        self.calls: list[list[tuple[Reference, Needs]]] = []
        self.lock = threading.Lock()

    def resolve(
        self, items: Sequence[tuple[Reference, Needs]], *, deadline: Deadline
    ) -> list[ImageFacts]:
        with self.lock:
            self.calls.append(list(items))
        out = []
        for ref, _ in items:
            layers = LAYERS.get(ref.name)
            if layers is None:
                reason = f"{ref} not found in {ref.registry}"
                errors = dict.fromkeys(("digest", "platforms", "manifest", "config"), reason)
                out.append(ImageFacts(errors=MappingProxyType(errors)))
                continue
            digest = ref.digest or DIGEST
            platform = PlatformFacts("linux/amd64", digest, layers=layers, size=1000)
            out.append(ImageFacts(digest=digest, index=False, platforms=(platform,)))
        return out

    @property
    def asked(self) -> list[str]:
        return [str(ref) for batch in self.calls for ref, _ in batch]


@pytest.fixture
def resolver() -> FakeResolver:
    return FakeResolver()


def make_app(resolver: FakeResolver, **changes: Any) -> Flask:
    base = Settings(exclude_namespaces=("kube-system", "image-policy"), mutate_pin=True)
    return web.create_app(
        Settings(**{**base.__dict__, **changes}),
        rules=loader.load_rules_text(RULES),
        resolver=resolver,
        now=lambda: NOW,
    )


@pytest.fixture
def client(resolver: FakeResolver) -> FlaskClient:
    return make_app(resolver, break_glass=True).test_client()


def containers(*images: str) -> list[dict[str, str]]:
    return [{"name": f"c{i}", "image": image} for i, image in enumerate(images)]


def pod(*images: str, **extra: Any) -> dict[str, Any]:
    return {
        "kind": "Pod",
        "metadata": {"name": "web"},
        "spec": {"containers": containers(*images), **extra},
    }


def review(
    obj: dict[str, Any] | None,
    *,
    kind: str = "Pod",
    group: str = "",
    operation: str = "CREATE",
    namespace: str = "dev",
    old: dict[str, Any] | None = None,
    sub: str | None = None,
    api: str = admission.API_V1,
    dry_run: bool = False,
) -> dict[str, Any]:
    request: dict[str, Any] = {
        "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
        "kind": {"group": group, "version": "v1", "kind": kind},
        "resource": {"group": group, "version": "v1", "resource": kind.lower() + "s"},
        "namespace": namespace,
        "operation": operation,
        "userInfo": {"username": "alice", "extra": {"token": ["do-not-log-me"]}},
        "object": obj,
        "oldObject": old,
        "dryRun": dry_run,
    }
    if sub is not None:
        request["subResource"] = sub
    return {"apiVersion": api, "kind": "AdmissionReview", "request": request}


def post(client: FlaskClient, path: str, doc: object) -> dict[str, Any]:
    reply = client.post(path, json=doc)
    assert reply.status_code == 200, reply.get_data(as_text=True)
    body: dict[str, Any] = reply.get_json()
    return body


def respond(client: FlaskClient, doc: object, path: str = "/validate") -> dict[str, Any]:
    body = post(client, path, doc)
    assert body["kind"] == "AdmissionReview"
    response: dict[str, Any] = body["response"]
    assert response["uid"] == "705ab4f5-6393-11e8-b7cc-42010a800002"
    return response


def apply_patch(obj: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    """Apply the response's JSONPatch (replace operations) as the API server would."""
    assert response["patchType"] == "JSONPatch"
    out = json.loads(json.dumps(obj))
    for op in json.loads(base64.b64decode(response["patch"])):
        assert op["op"] == "replace"
        steps = op["path"].split("/")[1:]
        target: Any = out
        for step in steps[:-1]:
            target = target[int(step)] if isinstance(target, list) else target[step]
        assert steps[-1] in target
        target[steps[-1]] = op["value"]
    return out


# --- AdmissionReview ---------------------------------------------------------------------


KINDS = [
    ("Pod", ""),
    ("Deployment", "apps"),
    ("ReplicaSet", "apps"),
    ("StatefulSet", "apps"),
    ("DaemonSet", "apps"),
    ("Job", "batch"),
    ("CronJob", "batch"),
    ("ReplicationController", ""),
    ("PodTemplate", ""),
]


@pytest.mark.parametrize(("kind", "group"), KINDS)
@pytest.mark.parametrize("api", [admission.API_V1, admission.API_V1BETA1])
def test_every_kind_is_denied_for_an_untrusted_image(
    client: FlaskClient, kind: str, group: str, api: str
) -> None:
    doc = review(
        workload(kind, "nginx:1.25", "quay.io/evil/miner:1"), kind=kind, group=group, api=api
    )
    body = post(client, "/validate", doc)
    assert body["apiVersion"] == api
    response = body["response"]
    assert response["allowed"] is False
    assert response["status"]["code"] == 403
    message = response["status"]["message"]
    assert f"not allowed in {kind} in namespace dev:" in message
    assert 'container "c1" image "quay.io/evil/miner:1": rule trusted-registries:' in message
    assert "nginx" not in message


@pytest.mark.parametrize(("kind", "group"), KINDS)
def test_every_kind_is_allowed_when_its_images_pass(
    client: FlaskClient, kind: str, group: str
) -> None:
    response = respond(client, review(workload(kind, "nginx:1.25"), kind=kind, group=group))
    assert response == {"uid": response["uid"], "allowed": True}


def test_init_ephemeral_and_volume_images_are_checked(
    client: FlaskClient, resolver: FakeResolver
) -> None:
    obj = pod(
        "nginx:1.25",
        initContainers=[{"name": "setup", "image": "registry.example/big:1"}],
        ephemeralContainers=[{"name": "debug", "image": "busybox:1.36"}],
        volumes=[{"name": "models", "image": {"reference": "quay.io/m/models:3"}}],
    )
    response = respond(client, review(obj))
    message = response["status"]["message"]
    assert 'init container "setup" image "registry.example/big:1": rule few-layers:' in message
    assert 'image volume "models" image "quay.io/m/models:3": rule trusted-registries' in message
    assert "busybox" not in message
    # The untrusted registry is never contacted: nothing is asked of it.
    needs = {str(ref): need for batch in resolver.calls for ref, need in batch}
    assert needs["quay.io/m/models:3"].registry is False
    assert all(needs[r].registry for r in needs if not r.startswith("quay.io"))
    assert len(needs) == 4


def test_update_skips_images_the_old_object_had(
    client: FlaskClient, resolver: FakeResolver
) -> None:
    old = workload("Deployment", "registry.example/big:1")
    new = workload("Deployment", "registry.example/big:1", "nginx:1.25")
    doc = review(new, kind="Deployment", group="apps", operation="UPDATE", old=old)
    assert respond(client, doc)["allowed"] is True
    assert resolver.asked == ["docker.io/library/nginx:1.25"]


def test_update_rechecks_unchanged_images_when_configured(resolver: FakeResolver) -> None:
    client = make_app(resolver, recheck_unchanged=True).test_client()
    old = workload("Deployment", "registry.example/big:1")
    doc = review(old, kind="Deployment", group="apps", operation="UPDATE", old=old)
    assert respond(client, doc)["allowed"] is False


def test_scaling_an_old_workload_needs_no_lookup(
    client: FlaskClient, resolver: FakeResolver
) -> None:
    old = workload("Deployment", "quay.io/evil/miner:1")
    doc = review(old, kind="Deployment", group="apps", operation="UPDATE", old=old)
    assert respond(client, doc) == {"uid": doc["request"]["uid"], "allowed": True}
    assert resolver.calls == []


def test_ephemeral_containers_subresource(client: FlaskClient) -> None:
    old = pod("nginx:1.25")
    new = pod("nginx:1.25", ephemeralContainers=[{"name": "debug", "image": "quay.io/x/dbg:1"}])
    doc = review(new, operation="UPDATE", old=old, sub="ephemeralcontainers")
    response = respond(client, doc)
    assert response["allowed"] is False
    assert 'ephemeral container "debug" image "quay.io/x/dbg:1"' in response["status"]["message"]
    assert "(ephemeralcontainers)" in response["status"]["message"]


@pytest.mark.parametrize(
    ("operation", "kind", "sub"),
    [
        ("DELETE", "Pod", None),
        ("CONNECT", "Pod", "exec"),
        ("UPDATE", "Pod", "status"),
        ("CREATE", "Service", None),
        ("CREATE", "ConfigMap", None),
    ],
)
def test_other_operations_kinds_and_subresources_are_allowed_untouched(
    client: FlaskClient, resolver: FakeResolver, operation: str, kind: str, sub: str | None
) -> None:
    doc = review(pod("quay.io/evil/miner:1"), operation=operation, kind=kind, sub=sub)
    response = respond(client, doc, "/mutate")
    assert response == {"uid": doc["request"]["uid"], "allowed": True}
    assert resolver.calls == []


@pytest.mark.parametrize("namespace", ["kube-system", "image-policy"])
def test_excluded_namespaces_are_allowed_without_lookups(
    client: FlaskClient, resolver: FakeResolver, namespace: str
) -> None:
    response = respond(client, review(pod("quay.io/evil/miner:1"), namespace=namespace))
    assert response["allowed"] is True
    assert resolver.calls == []


def test_warnings_and_audit_annotations(client: FlaskClient) -> None:
    obj = pod("nginx:latest", "registry.example/legacy:2")
    response = respond(client, review(obj, namespace="shop"))
    assert response["allowed"] is False  # the legacy exception expired
    assert response["warnings"] == [
        "nginx:latest: no-latest: docker.io/library/nginx:latest uses tag 'latest'; "
        "rule no-latest denies tags latest",
        "registry.example/legacy:2: exception for rule few-layers on registry.example/legacy "
        "expired on 2026-01-31 (old app, ticket OPS-1); the rule applies again",
    ]
    assert set(response["auditAnnotations"]) == {"shop-pinned"}
    audit = response["auditAnnotations"]["shop-pinned"]
    assert audit.startswith("nginx:latest: ") and "; registry.example/legacy:2: " in audit


def test_namespace_is_the_rule_context(client: FlaskClient) -> None:
    response = respond(client, review(pod("nginx:1.25"), namespace="dev"))
    assert "auditAnnotations" not in response


def test_dry_run_is_answered_the_same(client: FlaskClient) -> None:
    wet = respond(client, review(pod("quay.io/evil/miner:1")))
    dry = respond(client, review(pod("quay.io/evil/miner:1"), dry_run=True))
    assert wet == dry


def test_invalid_reference_is_denied_with_the_reason(client: FlaskClient) -> None:
    response = respond(client, review(pod("nginx:1.25", "Nginx:Bad Tag")))
    assert response["allowed"] is False
    assert "invalid image reference 'Nginx:Bad Tag'" in response["status"]["message"]


def test_a_malformed_object_is_denied_not_a_bad_request(client: FlaskClient) -> None:
    obj = {"kind": "Pod", "spec": {"containers": [{"name": "a", "image": 42}]}}
    response = respond(client, review(obj))
    assert response["allowed"] is False
    assert response["status"]["message"] == (
        "image-policy: Pod in namespace dev is malformed, so its images cannot all be checked:\n"
        "- spec.containers[0].image: expected a string, got 42"
    )


def test_unresolvable_image_is_decided_by_on_resolve_error(client: FlaskClient) -> None:
    response = respond(client, review(pod("registry.example/missing:1")))
    assert response["allowed"] is False
    assert (
        "(registry.example/missing:1 not found in registry.example); onResolveError is deny"
        in response["status"]["message"]
    )


# --- /mutate -----------------------------------------------------------------------------


def test_mutate_pins_allowed_tags_and_is_idempotent(client: FlaskClient) -> None:
    obj = pod(
        "nginx:1.25",
        f"redis:7@{OTHER}",
        initContainers=[{"name": "setup", "image": "busybox"}],
    )
    response = respond(client, review(obj), "/mutate")
    assert response["allowed"] is True
    patched = apply_patch(obj, response)
    assert [c["image"] for c in patched["spec"]["containers"]] == [
        f"nginx:1.25@{DIGEST}",
        f"redis:7@{OTHER}",
    ]
    assert patched["spec"]["initContainers"][0]["image"] == f"busybox:latest@{DIGEST}"
    again = respond(client, review(patched, operation="UPDATE", old=obj), "/mutate")
    assert again["allowed"] is True and "patch" not in again
    reinvoked = respond(client, review(patched), "/mutate")
    assert "patch" not in reinvoked and reinvoked["allowed"] is True


def test_mutate_never_patches_a_denied_review(client: FlaskClient) -> None:
    response = respond(client, review(pod("nginx:1.25", "quay.io/evil/miner:1")), "/mutate")
    assert response["allowed"] is False
    assert "patch" not in response and "patchType" not in response


def test_mutate_without_pinning_enabled_gives_no_patch(resolver: FakeResolver) -> None:
    client = make_app(resolver, mutate_pin=False).test_client()
    response = respond(client, review(pod("nginx:1.25")), "/mutate")
    assert response == {"uid": response["uid"], "allowed": True}


def test_mutate_asks_for_the_digest_even_when_no_rule_needs_it(resolver: FakeResolver) -> None:
    rules = loader.load_rules_text(
        "apiVersion: image-policy/v1\nkind: RuleSet\nmetadata: {name: t}\n"
        "rules:\n  - id: r\n    match: {images: ['**']}\n    require: {registries: ['docker.io']}\n"
    )
    app = web.create_app(Settings(mutate_pin=True), rules=rules, resolver=resolver)
    response = respond(app.test_client(), review(pod("nginx:1.25")), "/mutate")
    # The tag is resolved to its digest, then the pinned reference is judged.
    assert resolver.calls[-2][0] == (parse("nginx:1.25"), Needs(digest=True))
    assert resolver.calls[-1][0][0] == parse(f"nginx:1.25@{DIGEST}")
    assert apply_patch(pod("nginx:1.25"), response)["spec"]["containers"][0]["image"] == (
        f"nginx:1.25@{DIGEST}"
    )
    respond(app.test_client(), review(pod("nginx:1.25")), "/validate")
    assert resolver.calls[-1][0][1].digest is False


# --- ImageReview -------------------------------------------------------------------------


def image_review(*images: str, namespace: str = "dev", **annotations: str) -> dict[str, Any]:
    return {
        "apiVersion": "imagepolicy.k8s.io/v1alpha1",
        "kind": "ImageReview",
        "spec": {
            "containers": [{"image": i} for i in images],
            "namespace": namespace,
            "annotations": annotations,
        },
    }


def test_image_review_allows_and_denies(client: FlaskClient) -> None:
    ok = post(client, "/imagereview", image_review("nginx:1.25"))
    assert ok == {
        "apiVersion": "imagepolicy.k8s.io/v1alpha1",
        "kind": "ImageReview",
        "status": {"allowed": True},
    }
    bad = post(client, "/imagereview", image_review("nginx:1.25", "quay.io/evil/miner:1"))
    status = bad["status"]
    assert status["allowed"] is False
    assert 'container 1 image "quay.io/evil/miner:1": rule trusted-registries' in status["reason"]


def test_image_review_audits(client: FlaskClient) -> None:
    status = post(client, "/imagereview", image_review("nginx:1.25", namespace="shop"))["status"]
    assert status["allowed"] is True
    assert set(status["auditAnnotations"]) == {"shop-pinned"}


def test_break_glass_allows_and_audits_without_lookups(
    client: FlaskClient, resolver: FakeResolver
) -> None:
    doc = image_review("quay.io/evil/miner:1", **{"break-glass.image-policy.k8s.io/why": "INC-7"})
    status = post(client, "/imagereview", doc)["status"]
    assert status["allowed"] is True
    assert status["auditAnnotations"] == {
        "break-glass": "break-glass.image-policy.k8s.io/why allowed quay.io/evil/miner:1"
    }
    assert resolver.calls == []


def test_break_glass_is_ignored_unless_enabled(resolver: FakeResolver) -> None:
    client = make_app(resolver, break_glass=False).test_client()
    doc = image_review("quay.io/evil/miner:1", **{"break-glass.image-policy.k8s.io/why": "INC-7"})
    assert post(client, "/imagereview", doc)["status"]["allowed"] is False


# --- bad requests ------------------------------------------------------------------------

GOOD = review(pod("nginx:1.25"))


def padded(doc: object, size: int) -> bytes:
    """`doc` as JSON, padded with trailing blanks (still valid JSON) to exactly `size` bytes."""
    text = json.dumps(doc).encode()
    assert len(text) <= size
    return text + b" " * (size - len(text))


def post_body(client: FlaskClient, body: bytes, *, chunked: bool) -> Any:
    """POST /validate with a Content-Length, or without one as gunicorn hands on a chunked
    body (decoded, `wsgi.input_terminated` set)."""
    headers = {"Content-Type": "application/json"}
    if not chunked:
        return client.post("/validate", data=body, headers=headers)
    return client.post(
        "/validate",
        data=body,
        headers={**headers, "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize(
    ("extra", "status"), [(0, 200), (1, 413), (1024, 413)], ids=["at-cap", "one-over", "1k-over"]
)
def test_the_body_cap_is_the_same_with_and_without_a_content_length(
    client: FlaskClient, chunked: bool, extra: int, status: int
) -> None:
    body = padded(review(pod("nginx:1.25")), web.MAX_BODY) + b"x" * extra
    reply = post_body(client, body, chunked=chunked)
    assert reply.status_code == status
    if status == 413:
        assert reply.get_json() == {"error": "request body is larger than 3 MiB", "code": 413}
    else:
        assert reply.get_json()["response"]["allowed"] is True


def test_a_chunked_body_with_a_valid_3_mib_prefix_and_garbage_is_refused_not_judged(
    client: FlaskClient, resolver: FakeResolver
) -> None:
    body = padded(review(pod("nginx:1.25")), web.MAX_BODY) + b"garbage}" * 4096
    reply = post_body(client, body, chunked=True)
    assert reply.status_code == 413
    assert resolver.calls == []  # nothing was judged


@pytest.mark.parametrize(
    ("path", "body", "content_type", "status", "message"),
    [
        ("/validate", b"{", "application/json", 400, "not JSON"),
        ("/validate", b"", "application/json", 400, "empty"),
        ("/validate", json.dumps(GOOD).encode(), "text/plain", 400, "Content-Type is text/plain"),
        ("/validate", json.dumps(GOOD).encode(), None, 400, "Content-Type is none"),
        ("/validate", b"[]", "application/json", 400, "expected a JSON object"),
        (
            "/validate",
            b'{"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1"}',
            "application/json",
            400,
            "request is missing",
        ),
        (
            "/validate",
            json.dumps({**GOOD, "kind": "ImageReview"}).encode(),
            "application/json",
            400,
            "expected AdmissionReview",
        ),
        (
            "/mutate",
            json.dumps({**GOOD, "apiVersion": "v1"}).encode(),
            "application/json",
            400,
            'apiVersion "v1" is not supported',
        ),
        (
            "/validate",
            json.dumps({**GOOD, "request": {**GOOD["request"], "uid": None}}).encode(),
            "application/json",
            400,
            "request.uid is missing",
        ),
        (
            "/imagereview",
            json.dumps(GOOD).encode(),
            "application/json",
            400,
            "expected ImageReview",
        ),
        ("/validate", b"[" * 50_000 + b"]" * 50_000, "application/json", 400, "nested too deeply"),
        ("/validate", b" " * (3 * 1024 * 1024 + 1), "application/json", 413, "larger than 3 MiB"),
        ("/healthz", b"{}", "application/json", 405, "method is not allowed"),
        ("/nope", b"{}", "application/json", 404, "not found"),
    ],
)
def test_malformed_requests_get_a_clear_error(
    client: FlaskClient, path: str, body: bytes, content_type: str | None, status: int, message: str
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    reply = client.post(path, data=body, headers=headers)
    assert reply.status_code == status
    error = reply.get_json()
    assert error["code"] == status
    assert message.lower() in error["error"].lower()


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
KEYS = [
    "uid",
    "kind",
    "operation",
    "object",
    "oldObject",
    "namespace",
    "dryRun",
    "subResource",
    "userInfo",
    "name",
    "resource",
]


@settings(
    max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None
)
@given(
    path=st.sampled_from(["/validate", "/mutate", "/imagereview"]),
    request_fields=st.dictionaries(st.sampled_from(KEYS), JSON, max_size=6),
    envelope=st.sampled_from(
        [
            {"apiVersion": admission.API_V1, "kind": "AdmissionReview"},
            {"apiVersion": admission.API_V1BETA1, "kind": "AdmissionReview"},
            {"apiVersion": "imagepolicy.k8s.io/v1alpha1", "kind": "ImageReview"},
        ]
    ),
    spec=JSON,
)
def test_fuzzed_reviews_never_reach_the_error_handler(
    client: FlaskClient,
    path: str,
    request_fields: dict[str, Any],
    envelope: dict[str, str],
    spec: Any,
) -> None:
    doc = {**envelope, "request": {**GOOD["request"], **request_fields}, "spec": spec}
    reply = client.post(path, json=doc)
    assert reply.status_code in (200, 400), reply.get_data(as_text=True)


@settings(
    max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None
)
@given(obj=JSON, old=JSON)
def test_fuzzed_objects_are_answered(client: FlaskClient, obj: Any, old: Any) -> None:
    doc = review(None, operation="UPDATE")
    doc["request"]["object"] = {"kind": "Pod", "spec": obj}
    doc["request"]["oldObject"] = {"kind": "Pod", "spec": old}
    reply = client.post("/validate", json=doc)
    assert reply.status_code == 200, reply.get_data(as_text=True)


@settings(
    max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None
)
@given(body=st.binary(max_size=200))
def test_fuzzed_bytes_are_bad_requests(client: FlaskClient, body: bytes) -> None:
    reply = client.post("/validate", data=body, headers={"Content-Type": "application/json"})
    assert reply.status_code == 400


def test_a_bug_is_a_logged_500(caplog: pytest.LogCaptureFixture) -> None:
    class Broken(FakeResolver):
        def resolve(
            self, items: Sequence[tuple[Reference, Needs]], *, deadline: Deadline
        ) -> list[ImageFacts]:
            raise RuntimeError("bug in the resolver")

    client = web.create_app(
        Settings(), rules=loader.load_rules_text(RULES), resolver=Broken()
    ).test_client()
    with caplog.at_level(logging.ERROR, logger=web.LOGGER):
        reply = client.post("/validate", json=review(pod("nginx:1.25")))
    assert reply.status_code == 500
    assert reply.get_json()["error"] == "internal error; see the webhook's log"
    assert any("bug in the resolver" in (r.exc_text or "") for r in caplog.records)


# --- health, readiness, metrics, logs ------------------------------------------------------


def test_health_and_readiness(client: FlaskClient) -> None:
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json()["rules"] == "web-test"
    assert ready.get_json()["ruleCount"] == 4


def metric(client: FlaskClient, line_start: str) -> float:
    text = client.get("/metrics").get_data(as_text=True)
    for line in text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{line_start} not in metrics:\n{text}")


def test_metrics_count_reviews_outcomes_and_latency(client: FlaskClient) -> None:
    respond(client, review(pod("nginx:1.25")))
    respond(client, review(pod("quay.io/evil/miner:1")))
    respond(client, review(pod("quay.io/evil/miner:1"), namespace="kube-system"))
    client.post("/validate", data=b"{")
    post(client, "/imagereview", image_review("nginx:1.25"))
    assert metric(client, 'image_policy_reviews_total{endpoint="validate",outcome="allowed"}') == 1
    assert metric(client, 'image_policy_reviews_total{endpoint="validate",outcome="denied"}') == 1
    assert metric(client, 'image_policy_reviews_total{endpoint="validate",outcome="excluded"}') == 1
    assert (
        metric(client, 'image_policy_reviews_total{endpoint="validate",outcome="bad_request"}') == 1
    )
    assert (
        metric(client, 'image_policy_reviews_total{endpoint="imagereview",outcome="allowed"}') == 1
    )
    assert metric(client, 'image_policy_decision_seconds_count{endpoint="validate"}') == 3
    assert metric(client, 'image_policy_images_total{endpoint="validate",verdict="denied"}') == 1


def test_each_app_has_its_own_metrics(resolver: FakeResolver) -> None:
    first, second = make_app(resolver).test_client(), make_app(resolver).test_client()
    respond(first, review(pod("nginx:1.25")))
    assert metric(first, 'image_policy_reviews_total{endpoint="validate",outcome="allowed"}') == 1
    assert 'outcome="allowed"' not in second.get("/metrics").get_data(as_text=True)


NAMING_RULES = """\
apiVersion: image-policy/v1
kind: RuleSet
rules:
  - id: a
    match: {images: ["ghcr.io/acme/**", "Quay.io/x"], excludeImages: ["registry.k8s.io/pause"]}
    require: {registries: ["gcr.io", "*.corp.example", "localhost:5000", "index.docker.io"]}
  - id: b
    match: {images: ["**"]}
    require: {maxLayers: 9}
  - id: c
    match: {images: ["*.mirror.example/**", "nginx"]}
    require: {maxLayers: 9}
exceptions:
  - rules: [a]
    images: ["public.ecr.aws/team/app"]
    reason: tested
"""


@pytest.mark.parametrize(
    ("settings_yaml", "rules_text", "expected"),
    [
        ("", None, {"docker.io"}),
        (
            "registries: {registry.corp.example: {insecure: true}, 'LOCALHOST:5001': {}}\n"
            "tiers: {official: ['harbor.example/library/**', '**.example/x']}\n",
            None,
            {"docker.io", "registry.corp.example", "localhost:5001", "harbor.example"},
        ),
        (
            "",
            NAMING_RULES,
            {
                "docker.io",
                "ghcr.io",
                "quay.io",
                "registry.k8s.io",
                "gcr.io",
                "localhost:5000",
                "public.ecr.aws",
            },
        ),
    ],
    ids=["defaults", "settings", "rules"],
)
def test_named_registries_are_the_hosts_written_out_in_settings_and_rules(
    tmp_path: Path, settings_yaml: str, rules_text: str | None, expected: set[str]
) -> None:
    config = tmp_path / "settings.yaml"
    config.write_text(settings_yaml)
    parsed = load_settings(config)
    ruleset = loader.load_rules_text(rules_text) if rules_text else None
    assert web.named_registries(parsed, ruleset) == expected


def test_registry_labels_are_bounded_by_the_named_registries() -> None:
    metrics = web.Metrics(web.CollectorRegistry())
    metrics.named_registries = lambda: frozenset({"ghcr.io", "docker.io"})
    assert metrics.registry_label("ghcr.io") == "ghcr.io"
    assert metrics.registry_label("GHCR.IO") == "ghcr.io"  # case cannot mint new series
    assert metrics.registry_label("ghcr.io.evil.example") == "other"
    assert metrics.registry_label("10.0.0.1:5000") == "other"


def test_one_json_log_line_per_decision_without_credentials(
    resolver: FakeResolver, caplog: pytest.LogCaptureFixture
) -> None:
    # A logger of its own: other tests' apps write their batched lines on their own schedule.
    logger = logging.getLogger(f"{web.LOGGER}.one-line")
    client = web.create_app(
        Settings(), rules=loader.load_rules_text(RULES), resolver=resolver, logger=logger
    ).test_client()
    with caplog.at_level(logging.INFO, logger=logger.name):
        respond(client, review(pod("nginx:1.25", "quay.io/evil/miner:1"), namespace="shop"))
        client.application.extensions["image_policy_log"].flush()  # written by its own thread
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == logger.name]
    assert len(lines) == 1
    line = lines[0]
    assert line["event"] == "decision"
    assert (line["uid"], line["operation"], line["namespace"], line["kind"], line["user"]) == (
        "705ab4f5-6393-11e8-b7cc-42010a800002",
        "CREATE",
        "shop",
        "Pod",
        "alice",
    )
    assert line["name"] == "web"
    assert line["allowed"] is False
    assert [(i["image"], i["digest"], i["allowed"]) for i in line["images"]] == [
        ("nginx:1.25", DIGEST, True),
        ("quay.io/evil/miner:1", None, False),
    ]
    assert line["images"][1]["violations"][0]["rule"] == "trusted-registries"
    assert isinstance(line["latencyMs"], float)
    assert "do-not-log-me" not in caplog.text


# --- live reload -------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


OTHER_RULES = RULES.replace(
    'registries: ["docker.io", "registry.example"]', 'registries: ["quay.io"]'
)


def test_rules_reload_and_a_broken_file_keeps_the_old_rules(
    tmp_path: Path, resolver: FakeResolver, caplog: pytest.LogCaptureFixture
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    clock = Clock()
    app = web.create_app(Settings(), rules=[rules], resolver=resolver, clock=clock, now=lambda: NOW)
    client = app.test_client()
    assert respond(client, review(pod("nginx:1.25")))["allowed"] is True

    rules.write_text("rules: [oops\n")
    clock.now += 0.5  # not yet checked again
    assert respond(client, review(pod("nginx:1.25")))["allowed"] is True
    clock.now += 1.0
    with caplog.at_level(logging.ERROR, logger=web.LOGGER):
        assert respond(client, review(pod("nginx:1.25")))["allowed"] is True
    assert any(
        '"event": "reload"' in r.getMessage() and "rules.yaml" in r.getMessage()
        for r in caplog.records
    )
    ready = client.get("/readyz")
    assert ready.status_code == 200  # old rules still serve
    assert "rules.yaml" in ready.get_json()["rulesError"]
    assert metric(client, 'image_policy_config_reloads_total{file="rules",result="error"}') == 1

    rules.write_text(OTHER_RULES)
    clock.now += 1.0
    assert respond(client, review(pod("nginx:1.25")))["allowed"] is False
    assert client.get("/readyz").get_json()["rulesError"] is None
    assert metric(client, 'image_policy_config_reloads_total{file="rules",result="ok"}') == 1


def test_a_reload_refused_as_an_alias_bomb_keeps_the_old_rules_and_is_quick(
    tmp_path: Path, resolver: FakeResolver
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    clock = Clock()
    app = web.create_app(Settings(), rules=[rules], resolver=resolver, clock=clock, now=lambda: NOW)
    client = app.test_client()
    assert respond(client, review(pod("nginx:1.25")))["allowed"] is True

    # Nine levels of nine aliases each: 9**9 values once expanded, from a 0.5 KB file.
    laughs = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    laughs += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, 10)]
    rules.write_text(OTHER_RULES + "x-laughs:\n" + "".join(f"  {line}\n" for line in laughs))
    clock.now += 2
    started = time.perf_counter()
    assert respond(client, review(pod("nginx:1.25")))["allowed"] is True  # the old rules
    assert time.perf_counter() - started < 0.5
    ready = client.get("/readyz")
    assert ready.status_code == 200
    line = OTHER_RULES.count("\n") + 6
    assert ready.get_json()["rulesError"] == (
        f"{rules}:{line}:12: too many aliases: *l3 here expands to 7381 values, past the budget "
        "of 10000 values made by aliases in one file (an alias bomb?)"
    )
    assert metric(client, 'image_policy_config_reloads_total{file="rules",result="error"}') == 1


def test_broken_rules_at_start_mean_not_ready(tmp_path: Path, resolver: FakeResolver) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "a.yaml").write_text("rules: [oops\n")
    clock = Clock()
    client = web.create_app(Settings(), rules=[rules], resolver=resolver, clock=clock).test_client()
    assert client.get("/readyz").status_code == 503
    reply = client.post("/validate", json=review(pod("nginx:1.25")))
    assert reply.status_code == 503
    # The API server may show this body to whoever applied the object: the rules error (its
    # file path, the rule text) is the operator's, in /readyz and the log.
    assert reply.get_json()["error"] == (
        "no valid rules are loaded; see /readyz or the webhook's log"
    )
    assert str(tmp_path) not in reply.get_data(as_text=True)
    assert str(rules / "a.yaml") in client.get("/readyz").get_json()["rulesError"]
    (rules / "a.yaml").write_text(RULES)
    clock.now += 2
    assert client.get("/readyz").status_code == 200


def test_settings_reload(tmp_path: Path, resolver: FakeResolver) -> None:
    config = tmp_path / "settings.yaml"
    config.write_text("excludeNamespaces: [kube-system]\n")
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    clock = Clock()
    env = {"IMAGE_POLICY_CONFIG": str(config), "IMAGE_POLICY_RULES": str(rules)}
    client = web.create_app(env=env, resolver=resolver, clock=clock).test_client()
    evil = review(pod("quay.io/evil/miner:1"), namespace="dev")
    assert respond(client, evil)["allowed"] is False
    config.write_text("excludeNamespaces: [kube-system, dev]\n")
    clock.now += 2
    assert respond(client, evil)["allowed"] is True
    config.write_text("excludeNamespaces: 5\n")
    clock.now += 2
    assert respond(client, evil)["allowed"] is True  # the old settings keep serving
    assert "excludeNamespaces" in client.get("/readyz").get_json()["settingsError"]


def test_a_settings_reload_whose_resolver_cannot_be_built_keeps_the_old_settings(
    tmp_path: Path,
) -> None:
    """A reloaded settings file naming a docker config that is not one: refused like a broken
    settings file (old settings serve, /readyz says why without quoting the file), no 500."""
    config = tmp_path / "settings.yaml"
    config.write_text("excludeNamespaces: [kube-system]\n")
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    clock = Clock()
    env = {"IMAGE_POLICY_CONFIG": str(config), "IMAGE_POLICY_RULES": str(rules)}
    app = web.create_app(env=env, clock=clock)
    client = app.test_client()
    broken = tmp_path / "config.json"
    broken.write_text('{"auths": {"ghcr.io": {"auth": "c2VjcmV0OnNlY3JldA=="')
    config.write_text(f"dockerConfig: {broken}\nexcludeNamespaces: [kube-system, dev]\n")
    clock.now += 2
    empty = {"kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": []}}
    reply = client.post("/validate", json=review(empty, namespace="dev"))
    assert reply.status_code == 200
    holder = app.extensions["image_policy"]
    assert holder.current.settings.exclude_namespaces == ("kube-system",)
    error = client.get("/readyz").get_json()["settingsError"]
    assert str(broken) in error and "not valid JSON" in error
    assert "c2VjcmV0" not in error


def test_create_app_needs_rules() -> None:
    with pytest.raises(web.PolicyError, match="IMAGE_POLICY_RULES"):
        web.create_app(Settings(), env={})


def test_decision_log_lines_keep_their_order_across_threads(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import threading

    decisions = web.DecisionLog(logging.getLogger("policy.web.test-order"))
    with caplog.at_level(logging.INFO, logger="policy.web.test-order"):

        def burst(name: str) -> None:
            for i in range(200):
                decisions.log(logging.INFO, "decision", thread=name, n=i)

        threads = [threading.Thread(target=burst, args=(str(t),)) for t in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        decisions.flush()
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name.endswith("test-order")]
    assert len(lines) == 800
    for name in map(str, range(4)):
        assert [line["n"] for line in lines if line["thread"] == name] == list(range(200))


def test_decision_log_writes_in_batches_not_per_line(caplog: pytest.LogCaptureFixture) -> None:
    """A request only appends to a buffer; the writer wakes on its interval or a full batch."""
    import time as time_mod

    decisions = web.DecisionLog(logging.getLogger("policy.web.test-batch"), interval=60, batch=5)

    def mine() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.name.endswith("test-batch")]

    with caplog.at_level(logging.INFO, logger="policy.web.test-batch"):
        for i in range(4):
            decisions.log(logging.INFO, "decision", n=i)
        time_mod.sleep(0.2)
        assert mine() == []  # below the batch size: waiting for the interval
        decisions.log(logging.INFO, "decision", n=4)  # the fifth line wakes the writer
        end = time_mod.monotonic() + 5
        while len(mine()) < 5 and time_mod.monotonic() < end:
            time_mod.sleep(0.01)
        assert [json.loads(r.getMessage())["n"] for r in mine()] == [0, 1, 2, 3, 4]
        decisions.log(logging.INFO, "decision", n=5)
        decisions.flush()
        assert json.loads(mine()[-1].getMessage()) == {"event": "decision", "n": 5}


def test_decision_log_survives_a_line_it_cannot_encode(caplog: pytest.LogCaptureFixture) -> None:
    class Loop(dict[str, object]):
        pass

    loop = Loop()
    loop["self"] = loop  # circular: json.dumps raises ValueError
    decisions = web.DecisionLog(logging.getLogger("policy.web.test-bad"))
    with caplog.at_level(logging.INFO):
        decisions.log(logging.INFO, "decision", bad=loop)
        decisions.log(logging.INFO, "decision", n=1)
        decisions.flush()
    messages = [r.getMessage() for r in caplog.records if r.name == web.LOGGER]
    assert "cannot write a decision log line" in messages
    lines = [r.getMessage() for r in caplog.records if r.name.endswith("test-bad")]
    assert [json.loads(line) for line in lines] == [{"event": "decision", "n": 1}]


def test_a_replaced_resolver_is_closed_after_the_reviews_using_it(tmp_path: Path) -> None:
    import time as time_mod

    config = tmp_path / "settings.yaml"
    config.write_text("timeouts: {decision: 100ms}\n")
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    clock = Clock()
    env = {"IMAGE_POLICY_CONFIG": str(config), "IMAGE_POLICY_RULES": str(rules)}
    app = web.create_app(env=env, clock=clock)
    holder = app.extensions["image_policy"]
    old = holder.policy.resolver
    config.write_text("timeouts: {decision: 100ms}\ncache: {tagTTL: 1m}\n")
    clock.now += 2
    new = holder.policy.resolver
    assert new is not old
    assert not old.closed  # reviews that started with it may still be running
    deadline = time_mod.monotonic() + 5
    while not old.closed and time_mod.monotonic() < deadline:
        time_mod.sleep(0.05)
    assert old.closed and not new.closed


def test_the_apps_own_handler_gets_each_batch_in_one_write() -> None:
    import io

    writes: list[str] = []

    class Stream(io.StringIO):
        def write(self, text: str) -> int:
            writes.append(text)
            return len(text)

    logger = logging.getLogger("policy.web.test-direct")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = web._LinesHandler()
    handler.setStream(Stream())
    logger.addHandler(handler)
    try:
        decisions = web.DecisionLog(logger, interval=60)
        for i in range(3):
            decisions.log(logging.INFO, "decision", n=i)
        decisions.log(logging.DEBUG, "decision", n="not at this level")
        decisions.flush()
        assert len(writes) == 1
        assert [json.loads(line) for line in writes[0].splitlines()] == [
            {"event": "decision", "n": i} for i in range(3)
        ]
        # a filter somewhere means records, one per line, as logging would make them
        seen: list[str] = []
        logger.addFilter(lambda record: seen.append(record.getMessage()) or True)
        decisions.log(logging.INFO, "decision", n=3)
        decisions.log(logging.INFO, "decision", n=4)
        decisions.flush()
        assert [json.loads(m)["n"] for m in seen] == [3, 4]
        assert len(writes) == 3 and json.loads(writes[2]) == {"event": "decision", "n": 4}
    finally:
        logger.removeHandler(handler)
        logger.filters.clear()
        logger.propagate = True


def test_log_lines_hold_each_finding_even_when_its_encoding_is_reused(
    resolver: FakeResolver, caplog: pytest.LogCaptureFixture
) -> None:
    logger = logging.getLogger(f"{web.LOGGER}.reused")
    app = web.create_app(
        Settings(exclude_namespaces=("kube-system",)),
        rules=loader.load_rules_text(RULES),
        resolver=resolver,
        logger=logger,
    )
    client = app.test_client()
    with caplog.at_level(logging.INFO, logger=logger.name):
        for _ in range(2):  # the second review reuses the decisions, and their encoding
            respond(client, review(pod("nginx:1.25", "quay.io/evil/miner:1"), namespace="shop"))
        post(client, "/imagereview", image_review("nginx:1.25", "bad image!"))
        post(client, "/imagereview", image_review("nginx:1.25", namespace="kube-system"))
        app.extensions["image_policy_log"].flush()
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == logger.name]
    assert len(lines) == 4
    assert lines[0]["images"] == lines[1]["images"]
    assert [(i["image"], i["allowed"]) for i in lines[1]["images"]] == [
        ("nginx:1.25", True),
        ("quay.io/evil/miner:1", False),
    ]
    assert lines[1]["uid"] and lines[1]["namespace"] == "shop"  # the other fields are intact
    assert [i["image"] for i in lines[2]["images"]] == ["nginx:1.25", "bad image!"]
    assert lines[2]["images"][1]["violations"][0]["rule"] == "(reference)"
    assert lines[3]["images"] == ["nginx:1.25"] and lines[3]["outcome"] == "excluded"


# --- reuse of judged reviews ----------------------------------------------------------------


class CachingResolver(FakeResolver):
    """FakeResolver answering the same facts object for an image until `change` — as the
    registry resolver does from its caches."""

    def __init__(self) -> None:
        super().__init__()
        self.known: dict[tuple[Reference, Needs], ImageFacts] = {}
        self.asks = 0  # calls of `resolve`, known or not

    def resolve(
        self, items: Sequence[tuple[Reference, Needs]], *, deadline: Deadline
    ) -> list[ImageFacts]:
        self.asks += 1
        missing = [item for item in items if item not in self.known]
        if missing:
            # recorded in `calls`: only what was not known yet is "looked up"
            found = super().resolve(missing, deadline=deadline)
            self.known.update(zip(missing, found, strict=True))
        return [self.known[item] for item in items]

    def change(self, name: str, layers: int) -> None:
        """New facts for repository `name` (a pushed tag)."""
        for key in [k for k in self.known if k[0].name == name]:
            platform = PlatformFacts("linux/amd64", OTHER, layers=layers, size=1000)
            self.known[key] = ImageFacts(digest=OTHER, index=False, platforms=(platform,))


def raw(client: FlaskClient, doc: object, path: str = "/validate") -> bytes:
    reply = client.post(path, json=doc)
    assert reply.status_code == 200, reply.get_data(as_text=True)
    return reply.get_data()


def another(doc: dict[str, Any], uid: str, name: str, user: str = "bob") -> dict[str, Any]:
    """The same review for another object, from another request."""
    copy = json.loads(json.dumps(doc))
    copy["request"]["uid"] = uid
    copy["request"]["userInfo"]["username"] = user
    copy["request"]["object"]["metadata"]["name"] = name
    return copy


@pytest.mark.parametrize("path", ["/validate", "/mutate"])
@pytest.mark.parametrize(
    "images",
    [
        ("nginx:1.25", "redis:7", "registry.example/app:2"),  # allowed, pinned by /mutate
        ("nginx:latest", "registry.example/big:1"),  # a warning and a denial
        ("nginx:1.25", "Not A Reference"),  # an invalid reference
    ],
)
def test_a_repeated_review_is_answered_as_a_fresh_one_would_be(
    path: str, images: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    judged = []
    original = admission.admission_response

    def counting(*args: Any, **kwargs: Any) -> admission.AdmissionResponse:
        judged.append(args[0].uid)
        return original(*args, **kwargs)

    monkeypatch.setattr(admission, "admission_response", counting)
    reused = make_app(CachingResolver()).test_client()
    first = review(pod(*images), namespace="shop")
    raw(reused, first, path)
    for n in range(3):
        again = another(first, f"uid-{n}", name="web", user=f"user-{n}")
        fresh = make_app(CachingResolver()).test_client()
        assert raw(reused, again, path) == raw(fresh, again, path)
    # the reusing app judged its first review only; each fresh app judged its one review
    assert judged == [first["request"]["uid"], "uid-0", "uid-1", "uid-2"]
    assert metric(reused, f'image_policy_images_total{{endpoint="{path[1:]}",verdict="allowed"}}')


def test_a_repeated_review_is_judged_again_when_its_facts_change() -> None:
    resolver = CachingResolver()
    client = make_app(resolver).test_client()
    doc = review(pod("nginx:1.25", "registry.example/app:2"))
    assert respond(client, doc)["allowed"] is True
    assert respond(client, doc)["allowed"] is True
    resolver.change("registry.example/app", layers=9)  # the tag now names a fat image
    asks = resolver.asks
    denied = respond(client, doc)
    assert resolver.asks == asks + 1  # the resolver is asked once, not again to judge afresh
    assert denied["allowed"] is False
    assert "few-layers" in denied["status"]["message"]
    assert metric(client, 'image_policy_images_total{endpoint="validate",verdict="denied"}') == 1


def test_a_reused_denial_names_its_own_object() -> None:
    resolver = CachingResolver()
    client = make_app(resolver).test_client()
    doc = review(pod("registry.example/big:1"))
    assert "Pod dev/web" in respond(client, doc)["status"]["message"]
    reply = post(client, "/validate", another(doc, "uid-2", name="api"))["response"]
    assert resolver.asks == 2
    assert reply["allowed"] is False
    assert "Pod dev/api:" in reply["status"]["message"]
    assert "web" not in reply["status"]["message"]


def test_a_reused_answer_is_logged_in_full(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger(f"{web.LOGGER}.reused")
    app = web.create_app(
        Settings(),
        rules=loader.load_rules_text(RULES),
        resolver=CachingResolver(),
        logger=logger,
        now=lambda: NOW,
    )
    client = app.test_client()
    doc = review(pod("nginx:1.25", "registry.example/big:1"))
    with caplog.at_level(logging.INFO, logger=logger.name):
        respond(client, doc)
        post(client, "/validate", another(doc, "uid-2", name="api", user="carol"))
        app.extensions["image_policy_log"].flush()
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == logger.name]
    assert [(line["uid"], line["name"], line["user"]) for line in lines] == [
        ("705ab4f5-6393-11e8-b7cc-42010a800002", "web", "alice"),
        ("uid-2", "api", "carol"),
    ]
    assert lines[0]["images"] == lines[1]["images"]
    assert [i["allowed"] for i in lines[1]["images"]] == [True, False]
    assert lines[1]["outcome"] == "denied"


def test_the_review_metrics_expose_what_prometheus_client_would() -> None:
    """`_ReviewTally` against prometheus_client's own Counter and Histogram, fed the same."""
    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

    observations = [
        ("validate", "allowed", 0.0004, (("allowed", 3),)),
        ("validate", "denied", 0.005, (("allowed", 1), ("denied", 2))),  # on a bucket bound
        ("mutate", "allowed", 0.3, (("allowed", 1),)),
        ("validate", "allowed", 12.0, ()),  # past the last bound: +Inf only
        ("imagereview", "denied", 0.02, (("invalid", 1),)),
    ]
    ours = CollectorRegistry()
    tally = web._ReviewTally(web.LATENCY_BUCKETS)
    ours.register(tally)
    theirs = CollectorRegistry()
    reviews = Counter("image_policy_reviews", "x", ["endpoint", "outcome"], registry=theirs)
    images = Counter("image_policy_images", "x", ["endpoint", "verdict"], registry=theirs)
    latency = Histogram(
        "image_policy_decision_seconds",
        "x",
        ["endpoint"],
        buckets=web.LATENCY_BUCKETS,
        registry=theirs,
    )
    for endpoint, outcome, seconds, verdicts in observations:
        tally.review(endpoint, outcome, seconds, verdicts)
        reviews.labels(endpoint, outcome).inc()
        latency.labels(endpoint).observe(seconds)
        for verdict, n in verdicts:
            images.labels(endpoint, verdict).inc(n)
    tally.count("validate", "bad_request")
    reviews.labels("validate", "bad_request").inc()

    def samples(registry: CollectorRegistry) -> set[str]:
        text = generate_latest(registry).decode()
        return {line for line in text.splitlines() if line and not line.startswith("#")}

    expected = {line for line in samples(theirs) if "_created" not in line}
    assert samples(ours) == expected


def test_a_create_with_an_empty_string_old_object_is_judged_not_refused(
    client: FlaskClient,
) -> None:
    """Recorded samples of a widely used project carry `"oldObject": ""` on CREATE: a field
    the decision does not need must not turn the review into a 400."""
    doc = review(pod("nginx:1.25", "registry.example/big:1"))
    doc["request"]["oldObject"] = ""
    response = respond(client, doc)
    assert response["allowed"] is False
    assert "registry.example/big:1" in response["status"]["message"]


def test_a_custom_resource_is_judged_like_a_workload(resolver: FakeResolver) -> None:
    """An Argo Rollout sent to /validate: its pod template's images are judged (the same
    extraction as `image-policy check`), a settings workloads: kind too."""
    from policy.k8s import workloads as workloads_mod

    rollout = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "web"},
        "spec": {"template": {"spec": {"containers": containers("registry.example/big:1")}}},
    }
    client = make_app(resolver).test_client()
    response = respond(client, review(rollout, kind="Rollout", group="argoproj.io"))
    assert response["allowed"] is False
    assert "registry.example/big:1" in response["status"]["message"]
    runner = {
        "apiVersion": "ci.example.com/v1",
        "kind": "Runner",
        "spec": {"steps": [{"name": "s", "image": "registry.example/app:1"}]},
    }
    doc = review(runner, kind="Runner", group="ci.example.com")
    assert respond(client, doc)["allowed"] is True  # not in the table: no images
    before = len(resolver.asked)
    table = {
        **workloads_mod.BUILTIN_TABLE,
        ("ci.example.com", "Runner"): workloads_mod.KindImages(
            images=(workloads_mod.parse_path("spec.steps[*].image"),)
        ),
    }
    with_table = make_app(resolver, workload_table=table).test_client()
    assert respond(with_table, doc)["allowed"] is True  # judged: app has 1 layer
    assert "registry.example/app:1" in resolver.asked[before:]


# --- pressure: the review cap, byte-bounded memos, bulkheads in /metrics and /readyz ----------


@pytest.mark.parametrize(("sites", "allowed"), [(30, True), (31, False)])
def test_a_review_over_the_image_cap_is_denied_at_once_without_a_lookup(
    resolver: FakeResolver, sites: int, allowed: bool
) -> None:
    client = make_app(resolver, max_images=30).test_client()
    images = [f"registry.example/app:{i}" for i in range(sites)]
    response = respond(client, review(pod(*images)))
    assert response["allowed"] is allowed
    if allowed:
        assert len(resolver.asked) == sites
    else:
        assert resolver.asked == []
        assert response["status"]["message"] == (
            "image-policy: Pod dev/web has 31 image references, more than the 30 "
            "one review may have (review.maxImages); none was checked"
        )
    reply = post(client, "/imagereview", image_review(*images))
    assert reply["status"]["allowed"] is allowed
    if not allowed:
        assert resolver.asked == []
        assert "has 31 image references, more than the 30" in reply["status"]["reason"]


def test_judged_reviews_are_bounded_in_bytes(resolver: FakeResolver) -> None:
    app = make_app(resolver, memo_bytes=2 * 1024 * 1024)
    client = app.test_client()
    for i in range(40):
        images = [f"registry.example/app:{i}-{j}" for j in range(50)]
        assert respond(client, review(pod(*images)))["allowed"] is True
    holder = app.extensions["image_policy"]
    validate = holder.current.validate
    # half the budget for judged reviews, a quarter for each service
    assert validate._batches.max_bytes == 256 * 1024
    assert 0 < validate._batches.bytes <= 256 * 1024
    assert 0 < validate._decisions.bytes <= 128 * 1024
    assert 0 < validate._plans.bytes <= 128 * 1024
    judged = app.extensions["image_policy_judged"][0]
    assert judged.max_bytes == 1024 * 1024
    assert 0 < judged.bytes <= 1024 * 1024
    assert len(judged) < 40  # emptied when full
    # every review was judged, not answered from a stale memo
    assert len(resolver.asked) == 40 * 50


def test_reviews_judged_on_failed_facts_are_not_remembered(resolver: FakeResolver) -> None:
    """A failed fact is never handed out twice, so a review judged on one could never be
    answered from the memo: it is not measured into it (an attack naming hosts that never
    answer would pay that per review), and every such review is judged afresh."""
    app = make_app(resolver)
    client = app.test_client()
    images = [f"gone-{j}.example/app:1" for j in range(20)]
    for _ in range(3):
        assert respond(client, review(pod(*images)))["allowed"] is False
    assert len(app.extensions["image_policy_judged"][0]) == 0
    assert len(resolver.asked) == 3 * 20
    assert respond(client, review(pod("registry.example/app:1")))["allowed"] is True
    assert len(app.extensions["image_policy_judged"][0]) == 1


class PressuredResolver(FakeResolver):
    """FakeResolver reporting bulkhead pressure as the registry resolver does."""

    def __init__(self, pressure: resolver_mod.Pressure) -> None:
        super().__init__()
        self.now = pressure

    def pressure(self) -> resolver_mod.Pressure:
        return self.now


def test_bulkhead_pressure_in_metrics_and_readyz_with_bounded_labels() -> None:
    pressure = resolver_mod.Pressure(
        in_flight={"registry.example": 8, "made-up-1.example": 8, "made-up-2.example": 3},
        queued={"registry.example": 32, "made-up-1.example": 0},
        threads=64,
        busy=19,
        short_circuited=["made-up-2.example", "made-up-3.example", "registry.example"],
    )
    client = make_app(PressuredResolver(pressure)).test_client()  # type: ignore[arg-type]
    assert metric(client, 'image_policy_registry_in_flight{registry="registry.example"}') == 8
    assert metric(client, 'image_policy_registry_in_flight{registry="other"}') == 11
    assert metric(client, 'image_policy_registry_queued{registry="registry.example"}') == 32
    assert metric(client, 'image_policy_registry_short_circuited{registry="other"}') == 2
    assert metric(client, 'image_policy_resolver_threads{state="busy"}') == 19
    assert metric(client, 'image_policy_resolver_threads{state="idle"}') == 45
    text = client.get("/metrics").get_data(as_text=True)
    assert "made-up" not in text
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json()["ready"] is True
    assert ready.get_json()["degraded"] == {
        "shortCircuited": ["other", "registry.example"],
        "busy": ["registry.example"],
    }


def test_readyz_says_nothing_is_degraded_when_nothing_is(client: FlaskClient) -> None:
    assert client.get("/readyz").get_json()["degraded"] == {}


def test_registries_named_in_the_rules_and_settings_start_known_to_the_resolver() -> None:
    """The registries the operator named are trusted with threads from the start (not
    "never heard from", asked one lookup at a time, during an attack that begins before they
    first answer); a host written only in an image string is not."""
    real = resolver_mod.build(Settings())
    try:
        web.create_app(
            Settings(), rules=loader.load_rules_text(RULES), resolver=real, now=lambda: NOW
        )
        assert real._breakers.rank("registry.example") == PROVEN
        assert real._breakers.rank("docker.io") == PROVEN
        assert real._breakers.rank("made-up.example") == NEW
    finally:
        real.close()
