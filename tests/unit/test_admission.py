"""policy.k8s.admission: request parsing, which images to judge, and the answers built."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from policy.errors import ReviewError
from policy.evaluate import ImageDecision, Violation
from policy.facts import ImageFacts
from policy.k8s import admission
from policy.k8s.admission import Finding
from policy.reference import parse
from tests.support.reviews import workload

DIGEST = "sha256:" + "ab" * 32
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def pod_spec(*images: str) -> dict[str, Any]:
    return {"containers": [{"name": f"c{i}", "image": img} for i, img in enumerate(images)]}


def review(
    obj: dict[str, Any] | None,
    *,
    kind: str = "Pod",
    group: str = "",
    operation: str = "CREATE",
    old: dict[str, Any] | None = None,
    sub: str | None = None,
    api: str = admission.API_V1,
    namespace: str | None = "shop",
) -> dict[str, Any]:
    request: dict[str, Any] = {
        "uid": "u-1",
        "kind": {"group": group, "version": "v1", "kind": kind},
        "resource": {"group": group, "version": "v1", "resource": kind.lower() + "s"},
        "operation": operation,
        "name": "web",
        "userInfo": {"username": "alice", "extra": {"token": ["secret"]}},
        "object": obj,
        "oldObject": old,
    }
    if namespace is not None:
        request["namespace"] = namespace
    if sub is not None:
        request["subResource"] = sub
    return {"apiVersion": api, "kind": "AdmissionReview", "request": request}


def planned(doc: dict[str, Any], *, recheck: bool = False) -> admission.Plan:
    return admission.plan(admission.parse_review(doc), recheck_unchanged=recheck)


# --- parsing -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "empty"),
        (b"   ", "empty"),
        (b"{", "not JSON"),
        (b"\xff\xfe", "not UTF-8"),
        (b"[1, NaN]", "NaN is not a JSON number"),
        (b"Infinity", "Infinity is not a JSON number"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b"1" * 5000, "usable JSON"),
    ],
)
def test_load_json_refuses_bad_bodies(body: bytes, message: str) -> None:
    with pytest.raises(ReviewError, match=message):
        admission.load_json(body)


def test_load_json_reads_utf8_json() -> None:
    assert admission.load_json('{"a": "é"}'.encode()) == {"a": "é"}


def _without(doc: dict[str, Any], *path: str) -> dict[str, Any]:
    copy = json.loads(json.dumps(doc))
    target = copy
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return copy


def _with(doc: dict[str, Any], value: object, *path: str) -> dict[str, Any]:
    copy = json.loads(json.dumps(doc))
    target = copy
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return copy


GOOD = review(workload("Pod", "nginx:1.25"))


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([], "expected a JSON object with apiVersion, kind and request, got a list"),
        ("text", 'got "text"'),
        (_with(GOOD, "Pod", "kind"), 'kind is "Pod"; expected AdmissionReview'),
        (_without(GOOD, "kind"), "kind is missing; expected AdmissionReview"),
        (_with(GOOD, "admission.k8s.io/v2", "apiVersion"), "apiVersion .* is not supported"),
        (_without(GOOD, "apiVersion"), "apiVersion missing is not supported"),
        (_without(GOOD, "request"), "request is missing"),
        (_with(GOOD, [], "request"), "request must be an object, got a list"),
        (_without(GOOD, "request", "uid"), "request.uid is missing"),
        (_with(GOOD, "", "request", "uid"), "request.uid is empty"),
        (_with(GOOD, 7, "request", "uid"), "request.uid must be a string, got 7"),
        (_with(GOOD, "PATCH", "request", "operation"), 'request.operation is "PATCH"'),
        (_without(GOOD, "request", "kind"), "request.kind is missing"),
        (_with(GOOD, {"group": ""}, "request", "kind"), "request.kind.kind is missing"),
        (_without(GOOD, "request", "object"), "request.object is missing"),
        (_with(GOOD, [1], "request", "object"), "request.object must be an object"),
        (_with(GOOD, "yes", "request", "dryRun"), "request.dryRun must be true or false"),
        (_with(GOOD, 5, "request", "namespace"), "request.namespace must be a string"),
        (_with(GOOD, [], "request", "userInfo"), "request.userInfo must be an object"),
        (_with(GOOD, [], "request", "object", "metadata"), "metadata must be an object"),
    ],
)
def test_parse_review_refuses_malformed_requests(doc: object, message: str) -> None:
    with pytest.raises(ReviewError, match=message):
        admission.parse_review(doc)


def test_parse_review_reads_the_request() -> None:
    doc = _with(GOOD, True, "request", "dryRun")
    req = admission.parse_review(doc)
    assert (req.uid, req.operation, req.kind, req.namespace, req.name, req.user, req.dry_run) == (
        "u-1",
        "CREATE",
        "Pod",
        "shop",
        "web",
        "alice",
        True,
    )
    assert req.subject == "Pod shop/web"


def test_parse_review_takes_namespace_and_generate_name_from_metadata() -> None:
    obj = {"metadata": {"namespace": "dev", "generateName": "web-"}, "spec": pod_spec("a")}
    doc = _without(_without(review(obj, namespace=None), "request", "name"), "request", "kind")
    doc["request"]["kind"] = {"group": "", "version": "v1", "kind": "Pod"}
    req = admission.parse_review(doc)
    assert (req.namespace, req.name, req.subject) == ("dev", "web-*", "Pod dev/web-*")


def test_delete_needs_no_object() -> None:
    req = admission.parse_review(review(None, operation="DELETE"))
    assert req.obj is None
    assert admission.plan(req).skip_reason == "DELETE is not checked"


# --- what is judged ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "group"),
    [
        ("Pod", ""),
        ("Deployment", "apps"),
        ("Deployment", "extensions"),
        ("ReplicaSet", "apps"),
        ("StatefulSet", "apps"),
        ("DaemonSet", "apps"),
        ("Job", "batch"),
        ("CronJob", "batch"),
        ("ReplicationController", ""),
        ("PodTemplate", ""),
    ],
)
@pytest.mark.parametrize("operation", ["CREATE", "UPDATE"])
def test_every_workload_kind_is_judged(kind: str, group: str, operation: str) -> None:
    doc = review(workload(kind, "nginx:1.25", "redis:7"), kind=kind, group=group)
    doc["request"]["operation"] = operation
    plan = planned(doc)
    assert [s.image for s in plan.check] == ["nginx:1.25", "redis:7"]
    assert plan.skip_reason is None


@pytest.mark.parametrize(
    ("kind", "group", "operation", "sub", "reason"),
    [
        ("Service", "", "CREATE", None, "kind Service holds no images we check"),
        ("Job", "batch.volcano.sh", "CREATE", None, "kind batch.volcano.sh/Job holds no"),
        ("Deployment", "", "CREATE", None, "kind Deployment holds no images"),
        ("Pod", "", "DELETE", None, "DELETE is not checked"),
        ("Pod", "", "CONNECT", "exec", "CONNECT is not checked"),
        ("Pod", "", "UPDATE", "status", "subresource status adds no images"),
        ("Deployment", "apps", "UPDATE", "scale", "subresource scale adds no images"),
    ],
)
def test_other_kinds_operations_and_subresources_are_not_judged(
    kind: str, group: str, operation: str, sub: str | None, reason: str
) -> None:
    doc = review(workload("Pod", "evil:1"), kind=kind, group=group, operation=operation, sub=sub)
    plan = planned(doc)
    assert plan.check == ()
    assert plan.skip_reason is not None and plan.skip_reason.startswith(reason)


def test_all_image_fields_of_a_pod_are_judged_with_their_pointers() -> None:
    spec = {
        "containers": [{"name": "app", "image": "app:1"}],
        "initContainers": [{"name": "setup", "image": "setup:1"}],
        "ephemeralContainers": [{"name": "debug", "image": "busybox:1"}],
        "volumes": [{"name": "models", "image": {"reference": "models:3"}}, {"name": "tmp"}],
    }
    plan = planned(review({"spec": spec}))
    assert [(s.image, s.pointer, admission.site_label(s)) for s in plan.check] == [
        ("app:1", "/spec/containers/0/image", 'container "app"'),
        ("setup:1", "/spec/initContainers/0/image", 'init container "setup"'),
        ("busybox:1", "/spec/ephemeralContainers/0/image", 'ephemeral container "debug"'),
        ("models:3", "/spec/volumes/0/image/reference", 'image volume "models"'),
    ]


def test_ephemeral_containers_subresource_checks_only_the_new_debug_container() -> None:
    old = {"spec": pod_spec("app:1")}
    new = {"spec": {**pod_spec("app:1"), "ephemeralContainers": [{"name": "d", "image": "bb:1"}]}}
    plan = planned(review(new, operation="UPDATE", old=old, sub="ephemeralcontainers"))
    assert [s.image for s in plan.check] == ["bb:1"]
    assert [s.image for s in plan.unchanged] == ["app:1"]


def test_old_ephemeral_containers_kind_is_read() -> None:
    obj = {"kind": "EphemeralContainers", "ephemeralContainers": [{"name": "d", "image": "bb:1"}]}
    plan = planned(
        review(obj, kind="EphemeralContainers", operation="UPDATE", sub="ephemeralcontainers")
    )
    assert [(s.image, s.pointer) for s in plan.check] == [("bb:1", "/ephemeralContainers/0/image")]


@pytest.mark.parametrize(
    ("recheck", "checked", "unchanged"),
    [(False, ["new:2"], ["old:1", "old:1"]), (True, ["old:1", "new:2", "old:1"], [])],
)
def test_update_skips_images_the_old_object_had(
    recheck: bool, checked: list[str], unchanged: list[str]
) -> None:
    old = workload("Deployment", "old:1")
    new = workload("Deployment", "old:1", "new:2", "old:1")
    doc = review(new, kind="Deployment", group="apps", operation="UPDATE", old=old)
    plan = planned(doc, recheck=recheck)
    assert [s.image for s in plan.check] == checked
    assert [s.image for s in plan.unchanged] == unchanged


def test_a_malformed_object_gives_problems_not_sites() -> None:
    obj = {"spec": {"containers": [{"name": "a", "image": None}, "oops"]}}
    plan = planned(review(obj))
    assert [str(p) for p in plan.problems] == [
        "spec.containers[0].image: expected a string, got null",
        'spec.containers[1]: expected a mapping, got "oops"',
    ]
    assert plan.check == ()


# --- answers -----------------------------------------------------------------------------


def decision(image: str, *violations: Violation, digest: str | None = DIGEST) -> ImageDecision:
    return ImageDecision(parse(image), ImageFacts(digest=digest), tuple(violations))


DENY = Violation("trusted", "registries", "deny", "quay.io is not a trusted registry")
WARN = Violation("no-latest", "denyTags", "warn", "tag latest is not allowed")
AUDIT = Violation("pinned", "digest", "audit", "not pinned by digest")
REQ = admission.parse_review(GOOD)


def test_denial_lists_every_denied_image_with_rule_and_reason() -> None:
    findings = [
        Finding("quay.io/a:1", 'container "a"', decision("quay.io/a:1", DENY)),
        Finding("nginx:1", 'container "b"', decision("nginx:1")),
        Finding("Bad:Ref", 'init container "c"', invalid="invalid image reference 'Bad:Ref': x"),
    ]
    response = admission.admission_response(REQ, findings)
    assert response["allowed"] is False
    assert response["uid"] == "u-1"
    status = response["status"]
    assert status["code"] == 403
    assert status["message"] == (
        "image-policy: 2 of 3 images are not allowed in Pod shop/web:\n"
        '- container "a" image "quay.io/a:1": rule trusted: quay.io is not a trusted registry\n'
        '- init container "c" image "Bad:Ref": invalid image reference \'Bad:Ref\': x'
    )
    assert "patch" not in response


def test_warnings_one_per_finding_and_audit_annotations_by_rule() -> None:
    long = Violation("big", "maxLayers", "warn", "x" * 400)
    expired = ImageDecision(
        parse("nginx:latest"), ImageFacts(), (WARN, AUDIT), ("exception for rule r expired",)
    )
    findings = [
        Finding("nginx:latest", 'container "a"', expired),
        Finding("nginx:latest", 'container "b"', expired),
        Finding("redis:7", 'container "c"', decision("redis:7", long, AUDIT)),
    ]
    response = admission.admission_response(REQ, findings)
    assert response["allowed"] is True
    assert "status" not in response
    warnings = response["warnings"]
    assert warnings[:2] == [
        "nginx:latest: no-latest: tag latest is not allowed",
        "nginx:latest: exception for rule r expired",
    ]
    assert len(warnings) == 3
    assert len(warnings[2]) == admission.MAX_WARNING_CHARS and warnings[2].endswith("…")
    assert response["auditAnnotations"] == {
        "pinned": "nginx:latest: not pinned by digest; redis:7: not pinned by digest"
    }


@pytest.mark.parametrize(
    ("rule", "key"),
    [("pinned", "pinned"), ("(unmatched)", "unmatched"), ("a/b c", "a-b-c"), ("x" * 80, "x" * 63)],
)
def test_audit_keys_are_qualified_names(rule: str, key: str) -> None:
    assert admission.audit_key(rule) == key


def apply_patch(obj: dict[str, Any], patch: list[dict[str, Any]]) -> dict[str, Any]:
    """Apply JSONPatch `replace` operations (what the API server does with our patches)."""
    out = json.loads(json.dumps(obj))
    for op in patch:
        assert op["op"] == "replace"
        steps = [s.replace("~1", "/").replace("~0", "~") for s in op["path"].split("/")[1:]]
        target: Any = out
        for step in steps[:-1]:
            target = target[int(step)] if isinstance(target, list) else target[step]
        assert steps[-1] in target  # replace needs the value to exist
        target[steps[-1]] = op["value"]
    return out


@pytest.mark.parametrize(
    ("image", "pinned"),
    [
        ("nginx:1.25", f"nginx:1.25@{DIGEST}"),
        ("nginx", f"nginx:latest@{DIGEST}"),
        ("ghcr.io/o/app:v1", f"ghcr.io/o/app:v1@{DIGEST}"),
        (f"nginx:1.25@{DIGEST}", None),
        (f"nginx@{DIGEST}", None),
    ],
)
def test_pinned_image(image: str, pinned: str | None) -> None:
    assert admission.pinned_image(image, decision(image)) == pinned


def test_pinning_skips_denied_and_unknown_digests() -> None:
    assert admission.pinned_image("quay.io/a:1", decision("quay.io/a:1", DENY)) is None
    assert admission.pinned_image("nginx:1", decision("nginx:1", digest=None)) is None


def test_patch_pins_allowed_images_and_reapplying_gives_no_patch() -> None:
    obj = review(workload("Pod", "nginx:1.25", "quay.io/a:1"))["request"]["object"]
    plan = admission.plan(admission.parse_review(review(obj)))
    findings = [
        Finding(s.image, admission.site_label(s), decision(s.image), pointer=s.pointer)
        for s in plan.check
    ]
    response = admission.admission_response(REQ, findings, patch=admission.pin_patch(findings))
    assert response["patchType"] == "JSONPatch"
    patch = json.loads(base64.b64decode(response["patch"]))
    patched = apply_patch(obj, patch)
    assert [c["image"] for c in patched["spec"]["containers"]] == [
        f"nginx:1.25@{DIGEST}",
        f"quay.io/a:1@{DIGEST}",
    ]
    again = admission.plan(admission.parse_review(review(patched)))
    findings = [Finding(s.image, "", decision(s.image), pointer=s.pointer) for s in again.check]
    assert admission.pin_patch(findings) == []


def test_no_patch_on_a_denied_review() -> None:
    findings = [
        Finding("nginx:1", "c", decision("nginx:1"), pointer="/spec/containers/0/image"),
        Finding(
            "quay.io/a:1", "c", decision("quay.io/a:1", DENY), pointer="/spec/containers/1/image"
        ),
    ]
    patch = admission.pin_patch(findings)
    assert [op["path"] for op in patch] == ["/spec/containers/0/image"]
    response = admission.admission_response(REQ, findings, patch=patch)
    assert response["allowed"] is False and "patch" not in response


@pytest.mark.parametrize("api", [admission.API_V1, admission.API_V1BETA1])
def test_envelope_answers_in_the_request_version(api: str) -> None:
    req = admission.parse_review(review(workload("Pod", "a:1"), api=api))
    envelope = admission.review_envelope(req, admission.allow(req.uid))
    assert envelope == {
        "apiVersion": api,
        "kind": "AdmissionReview",
        "response": {"uid": "u-1", "allowed": True},
    }


def test_problems_message_lists_each_problem() -> None:
    plan = planned(review({"spec": {"containers": [{"name": "a"}]}}))
    assert admission.problems_message("Pod shop/web", plan.problems) == (
        "image-policy: Pod shop/web is malformed, so its images cannot all be checked:\n"
        "- spec.containers[0].image: expected a string, got nothing"
    )


def test_long_denials_are_summarized() -> None:
    findings = [Finding(f"quay.io/a:{i}", "c", decision(f"quay.io/a:{i}", DENY)) for i in range(60)]
    message = admission.denial_message("Pod x", findings)
    assert message.count("\n- ") == admission.MAX_MESSAGE_LINES + 1
    assert message.endswith("- ... and 10 more")


# --- ImageReview -------------------------------------------------------------------------


def image_review(**spec: object) -> dict[str, Any]:
    return {"apiVersion": admission.IMAGE_REVIEW_API, "kind": "ImageReview", "spec": spec}


def test_parse_image_review() -> None:
    req = admission.parse_image_review(
        image_review(
            containers=[{"image": "nginx:1"}, {"image": "redis:7"}],
            namespace="shop",
            annotations={"break-glass.image-policy.k8s.io/why": "incident 42", "other": "x"},
        )
    )
    assert req.images == ("nginx:1", "redis:7")
    assert req.namespace == "shop"
    assert admission.break_glass(req.annotations) == {
        "break-glass.image-policy.k8s.io/why": "incident 42"
    }


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"apiVersion": admission.IMAGE_REVIEW_API, "kind": "Pod"}, 'kind is "Pod"'),
        ({"apiVersion": "v1", "kind": "ImageReview", "spec": {}}, 'apiVersion "v1"'),
        ({"apiVersion": admission.IMAGE_REVIEW_API, "kind": "ImageReview"}, "spec is missing"),
        (image_review(containers={}), "spec.containers must be a list"),
        (image_review(containers=["x"]), r"spec.containers\[0\] must be an object"),
        (image_review(containers=[{}]), r"spec.containers\[0\].image is missing"),
        (image_review(containers=[{"image": 1}]), r"image must be a string"),
        (image_review(annotations={"a": 1}), r"spec.annotations\['a'\] must be a string"),
        (image_review(namespace=[]), "spec.namespace must be a string"),
    ],
)
def test_parse_image_review_refuses_malformed(doc: object, message: str) -> None:
    with pytest.raises(ReviewError, match=message):
        admission.parse_image_review(doc)


def test_image_review_status() -> None:
    findings = [
        Finding("quay.io/a:1", "container 0", decision("quay.io/a:1", DENY, AUDIT)),
        Finding("nginx:1", "container 1", decision("nginx:1", WARN)),
    ]
    status = admission.image_review_status(findings, subject="a pod in namespace shop")
    assert status == {
        "allowed": False,
        "reason": (
            "image-policy: 1 of 2 images is not allowed in a pod in namespace shop:\n"
            '- container 0 image "quay.io/a:1": rule trusted: quay.io is not a trusted registry'
        ),
        "auditAnnotations": {"pinned": "quay.io/a:1: not pinned by digest"},
    }
    assert admission.image_review(status)["kind"] == "ImageReview"


def test_break_glass_status_allows_and_audits() -> None:
    req = admission.ImageReviewRequest(("quay.io/a:1",), "shop", {})
    status = admission.break_glass_status(req, {"break-glass.image-policy.k8s.io/x": "y"})
    assert status["allowed"] is True
    assert status["auditAnnotations"] == {
        "break-glass": "break-glass.image-policy.k8s.io/x allowed quay.io/a:1"
    }


@pytest.mark.parametrize("old", ["", "x", 0, [], False])
def test_an_old_object_that_is_not_an_object_is_no_old_object(old: object) -> None:
    """Recorded samples of a widely used project send `"oldObject": ""` on CREATE: the review
    is judged (not a 400); on UPDATE every image is then re-checked (fail closed)."""
    create = review(workload("Pod", "nginx:1.25"))
    create["request"]["oldObject"] = old
    assert [s.image for s in planned(create).check] == ["nginx:1.25"]
    update = review(workload("Deployment", "nginx:1.25"), kind="Deployment", group="apps")
    update["request"]["operation"] = "UPDATE"
    update["request"]["oldObject"] = old
    plan = planned(update)
    assert ([s.image for s in plan.check], plan.unchanged) == (["nginx:1.25"], ())
