"""The AdmissionReview wire format (v1 and v1beta1), pure: no I/O, no clock.

The web layer reads a body (`reviewjson.load_json`), hands the parsed JSON to `parse_review`
(which raises `ReviewError` for a malformed request: HTTP 400), asks `plan` which image sites
need a verdict, has them judged by the one pipeline (`policy.service`), and builds the answer
here: `admission_response` (uid, allowed, a 403 status listing every denied image, warnings,
audit annotations, an optional JSONPatch) wrapped by `review_envelope` in the request's own
`apiVersion`.

A request that is well formed but whose object is malformed (a container without a string
`image`) is not a bad request: the object is denied, with the problems listed.

Its neighbours: `reviewjson` (the body parsed, fields checked), `findings` (each image's
verdict and the words for it), `imagereview` (the ImagePolicyWebhook's ImageReview). Their
names are re-exported here, where callers found them before the split.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal, NamedTuple, NotRequired, TypedDict

from policy import reference
from policy.errors import ReviewError
from policy.evaluate import ImageDecision
from policy.k8s import workloads
from policy.k8s.findings import MAX_MESSAGE_LINES as MAX_MESSAGE_LINES
from policy.k8s.findings import MAX_WARNING_CHARS as MAX_WARNING_CHARS
from policy.k8s.findings import Finding as Finding
from policy.k8s.findings import audit_annotations as audit_annotations
from policy.k8s.findings import audit_key as audit_key
from policy.k8s.findings import denial_lines as denial_lines
from policy.k8s.findings import denial_message as denial_message
from policy.k8s.findings import problems_message as problems_message
from policy.k8s.findings import site_label as site_label
from policy.k8s.findings import warnings_for as warnings_for
from policy.k8s.imagereview import BREAK_GLASS_PREFIX as BREAK_GLASS_PREFIX
from policy.k8s.imagereview import IMAGE_REVIEW_API as IMAGE_REVIEW_API
from policy.k8s.imagereview import ImageReview as ImageReview
from policy.k8s.imagereview import ImageReviewContainerSpec as ImageReviewContainerSpec
from policy.k8s.imagereview import ImageReviewRequest as ImageReviewRequest
from policy.k8s.imagereview import ImageReviewSpec as ImageReviewSpec
from policy.k8s.imagereview import ImageReviewStatus as ImageReviewStatus
from policy.k8s.imagereview import break_glass as break_glass
from policy.k8s.imagereview import break_glass_status as break_glass_status
from policy.k8s.imagereview import image_review as image_review
from policy.k8s.imagereview import image_review_status as image_review_status
from policy.k8s.imagereview import parse_image_review as parse_image_review
from policy.k8s.reviewjson import envelope, kind_name, mapping_field, string_field
from policy.k8s.reviewjson import load_json as load_json
from policy.k8s.workloads import MAPPING, ImageSite, Problem

API_V1 = "admission.k8s.io/v1"
API_V1BETA1 = "admission.k8s.io/v1beta1"
ADMISSION_VERSIONS = (API_V1, API_V1BETA1)

Operation = Literal["CREATE", "UPDATE", "DELETE", "CONNECT"]
OPERATIONS: tuple[Operation, ...] = ("CREATE", "UPDATE", "DELETE", "CONNECT")
_WRITES = ("CREATE", "UPDATE")

# The API groups each workload kind lives in; the same kind name in another group (a CRD)
# is not ours to judge.
_KIND_GROUPS: Mapping[str, frozenset[str]] = {
    "Pod": frozenset({""}),
    "PodTemplate": frozenset({""}),
    "ReplicationController": frozenset({""}),
    "Deployment": frozenset({"apps", "extensions"}),
    "ReplicaSet": frozenset({"apps", "extensions"}),
    "StatefulSet": frozenset({"apps"}),
    "DaemonSet": frozenset({"apps", "extensions"}),
    "Job": frozenset({"batch"}),
    "CronJob": frozenset({"batch"}),
    # Kubernetes 1.16-1.22 sent `pods/ephemeralcontainers` as this kind, its containers at the top.
    "EphemeralContainers": frozenset({""}),
}


# --- wire types -------------------------------------------------------------------------


class GroupVersionKind(TypedDict):
    group: str
    version: str
    kind: str


class GroupVersionResource(TypedDict):
    group: str
    version: str
    resource: str


class UserInfo(TypedDict, total=False):
    username: str
    uid: str
    groups: list[str]
    extra: dict[str, list[str]]


class AdmissionRequest(TypedDict):
    uid: str
    kind: GroupVersionKind
    resource: NotRequired[GroupVersionResource]
    subResource: NotRequired[str]
    requestKind: NotRequired[GroupVersionKind]
    requestResource: NotRequired[GroupVersionResource]
    requestSubResource: NotRequired[str]
    name: NotRequired[str]
    namespace: NotRequired[str]
    operation: Operation
    userInfo: NotRequired[UserInfo]
    object: NotRequired[dict[str, object] | None]
    oldObject: NotRequired[dict[str, object] | None]
    dryRun: NotRequired[bool]
    options: NotRequired[dict[str, object] | None]


class Status(TypedDict):
    status: Literal["Failure"]
    code: int
    reason: str
    message: str


class AdmissionResponse(TypedDict):
    uid: str
    allowed: bool
    status: NotRequired[Status]
    warnings: NotRequired[list[str]]
    auditAnnotations: NotRequired[dict[str, str]]
    patchType: NotRequired[Literal["JSONPatch"]]
    patch: NotRequired[str]


class AdmissionReview(TypedDict):
    apiVersion: str
    kind: Literal["AdmissionReview"]
    request: NotRequired[AdmissionRequest]
    response: NotRequired[AdmissionResponse]


class PatchOperation(TypedDict):
    op: Literal["replace"]
    path: str
    value: str


# --- parsing ----------------------------------------------------------------------------


class Request(NamedTuple):
    """The parts of an AdmissionReview request the decision reads, checked and typed.

    A named tuple, not a frozen dataclass (so are `Plan` and `findings.Finding`, also made
    per review): the three save ~2.5% of a warm review (1b)."""

    api_version: str
    uid: str
    operation: Operation
    kind: str
    group: str = ""
    version: str = ""
    resource: str = ""
    sub_resource: str = ""
    namespace: str | None = None
    name: str = ""
    user: str = ""
    obj: Mapping[str, object] | None = None
    old_object: Mapping[str, object] | None = None
    dry_run: bool = False

    @property
    def subject(self) -> str:
        """How people name the object: `Deployment shop/web`, `Pod shop/w (ephemeralcontainers)`."""
        if self.namespace and self.name:
            text = f"{self.kind} {self.namespace}/{self.name}"
        elif self.namespace:
            text = f"{self.kind} in namespace {self.namespace}"
        else:
            text = f"{self.kind} {self.name}".rstrip()
        return f"{text} ({self.sub_resource})" if self.sub_resource else text


def parse_review(document: object) -> Request:
    """Check an AdmissionReview (v1 or v1beta1) and return its request; ReviewError says
    precisely what is malformed (missing `request` or `uid`, wrong kind or version, ...).
    The fields are checked in the order they are read below; the first problem is reported."""
    api_version, request = _review_request(document)
    uid = string_field(request, "uid", "request", required=True)
    if not uid:
        raise ReviewError("request.uid is empty")
    operation = _operation(request.get("operation"))
    gvk = mapping_field(request.get("kind"), "request.kind", required=True)
    assert gvk is not None
    kind = string_field(gvk, "kind", "request.kind", required=True)
    group = string_field(gvk, "group", "request.kind")
    version = string_field(gvk, "version", "request.kind")
    gvr = mapping_field(request.get("resource"), "request.resource") or {}
    resource = string_field(gvr, "resource", "request.resource")
    sub_resource = string_field(request, "subResource", "request")
    given_namespace = string_field(request, "namespace", "request")
    given_name = string_field(request, "name", "request")
    user_info = mapping_field(request.get("userInfo"), "request.userInfo") or {}
    user = string_field(user_info, "username", "request.userInfo")
    obj = mapping_field(request.get("object"), "request.object", required=operation in _WRITES)
    old = request.get("oldObject")
    # Only UPDATE reads it, to skip unchanged images; anything but an object (recorded
    # samples send `"oldObject": ""` on CREATE) means "no old object": every image is judged.
    old = old if isinstance(old, MAPPING) else None
    dry_run = _dry_run(request.get("dryRun"))
    namespace, name = _named(obj, given_namespace, given_name)
    return Request(
        api_version,
        uid,
        operation,
        kind,
        group,
        version,
        resource,
        sub_resource,
        namespace,
        name,
        user,
        obj,
        old,
        dry_run,
    )


def _review_request(document: object) -> tuple[str, Mapping[str, object]]:
    """An AdmissionReview's apiVersion and its `request` object, both checked."""
    doc = envelope(document, "request")
    kind = doc.get("kind")
    if kind != "AdmissionReview":
        raise ReviewError(f"kind is {kind_name(kind)}; expected AdmissionReview")
    api_version = doc.get("apiVersion")
    if not isinstance(api_version, str) or api_version not in ADMISSION_VERSIONS:
        raise ReviewError(
            f"apiVersion {kind_name(api_version)} is not supported; expected "
            f"{' or '.join(ADMISSION_VERSIONS)}"
        )
    request = mapping_field(doc.get("request"), "request", required=True)
    assert request is not None
    return api_version, request


def _operation(value: object) -> Operation:
    if value not in OPERATIONS:
        raise ReviewError(
            f"request.operation is {kind_name(value)}; expected one of {', '.join(OPERATIONS)}"
        )
    return value


def _dry_run(value: object) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ReviewError(f"request.dryRun must be true or false, got {kind_name(value)}")
    return value


def _named(obj: Mapping[str, object] | None, namespace: str, name: str) -> tuple[str | None, str]:
    """The request's namespace and name, else the object's own (`generateName*` for a name
    still to be generated); no namespace is None."""
    metadata = mapping_field((obj or {}).get("metadata"), "request.object.metadata") or {}
    if not namespace:
        meta_ns = metadata.get("namespace")
        namespace = meta_ns if isinstance(meta_ns, str) and meta_ns else ""
    if not name:
        meta_name = metadata.get("name")
        generate = metadata.get("generateName")
        if isinstance(meta_name, str) and meta_name:
            name = meta_name
        elif isinstance(generate, str) and generate:
            name = generate + "*"
    return namespace or None, name


# --- which images ----------------------------------------------------------------------


class Plan(NamedTuple):
    """What to judge for one request.

    `check` are the image sites needing a verdict; `unchanged` those skipped on UPDATE
    because the old object has the same image; `problems` make the object malformed (deny);
    `skip_reason` says why nothing at all is judged (another kind, DELETE, a subresource).
    A named tuple: see `Request`.
    """

    check: tuple[ImageSite, ...] = ()
    unchanged: tuple[ImageSite, ...] = ()
    problems: tuple[Problem, ...] = ()
    skip_reason: str | None = None


def _extract(
    obj: Mapping[str, object], request: Request, table: workloads.Table | None
) -> workloads.Extraction:
    kind = request.kind
    if kind == "EphemeralContainers":
        return workloads.extract_pod_spec(obj)
    groups = _KIND_GROUPS.get(kind)
    if groups is not None and request.group in groups:
        return workloads.extract(obj, kind=kind)
    return workloads.extract_custom(obj, request.group, kind, table)


def plan(
    request: Request, *, recheck_unchanged: bool = False, table: workloads.Table | None = None
) -> Plan:
    """Which image sites of the request's object need a verdict.

    Pods (CREATE/UPDATE), `pods/ephemeralcontainers`, the pod templates of the workload
    kinds, and any other kind's pod templates and `table` paths (`workloads.extract_custom`;
    default: the built-in table) are judged; other subresources and DELETE/CONNECT are not.
    On UPDATE an image string the old object already holds is not re-checked unless
    `recheck_unchanged`.
    """
    if request.operation not in _WRITES:
        return Plan(skip_reason=f"{request.operation} is not checked")
    groups = _KIND_GROUPS.get(request.kind)
    builtin = groups is not None and request.group in groups
    shown = f"{request.group}/{request.kind}" if request.group else request.kind
    if (
        not builtin
        and workloads.is_builtin_group(request.group)
        and (request.group, request.kind) not in (table or workloads.BUILTIN_TABLE)
    ):
        return Plan(skip_reason=f"kind {shown} holds no images we check")
    if request.sub_resource and not (
        request.kind in ("Pod", "EphemeralContainers")
        and request.sub_resource == "ephemeralcontainers"
    ):
        return Plan(skip_reason=f"subresource {request.sub_resource} adds no images")
    assert request.obj is not None  # parse_review requires it for CREATE and UPDATE
    extraction = _extract(request.obj, request, table)
    if extraction.problems:
        return Plan(problems=extraction.problems)
    if not builtin and not extraction.sites:
        return Plan(skip_reason=f"kind {shown} holds no images we check")
    if request.operation != "UPDATE" or recheck_unchanged or request.old_object is None:
        return Plan(check=extraction.sites)
    before = {site.image for site in _extract(request.old_object, request, table).sites}
    return Plan(
        check=tuple(s for s in extraction.sites if s.image not in before),
        unchanged=tuple(s for s in extraction.sites if s.image in before),
    )


# --- the answer -------------------------------------------------------------------------


def pinned_image(image: str, decision: ImageDecision) -> str | None:
    """`image` as written, pinned to the digest that was judged (`name:tag@sha256:…`), or None
    when it already names a digest, was denied, or its digest is not known. The pinning
    service judges the pinned reference itself, so its decision carries the digest."""
    digest = decision.reference.digest or decision.facts.digest
    if "@" in image or not decision.allowed or digest is None:
        return None  # a valid reference holds "@" only before its digest
    tagged = image if reference.parse(image).tag is not None else f"{image}:latest"
    return f"{tagged}@{digest}"


def pin_patch(findings: Iterable[Finding]) -> list[PatchOperation]:
    """JSONPatch `replace` operations pinning each allowed tag-only image; empty when nothing
    changes (so a re-invocation on the patched object gives no patch)."""
    ops: list[PatchOperation] = []
    for f in findings:
        if f.pointer is None or f.decision is None:
            continue
        pinned = pinned_image(f.image, f.decision)
        if pinned is not None and pinned != f.image:
            ops.append({"op": "replace", "path": f.pointer, "value": pinned})
    return ops


def allow(uid: str, *, warnings: Sequence[str] = ()) -> AdmissionResponse:
    """An allowing response with nothing else to say."""
    response: AdmissionResponse = {"uid": uid, "allowed": True}
    if warnings:
        response["warnings"] = list(warnings)
    return response


def deny(uid: str, message: str) -> AdmissionResponse:
    """A denial: HTTP-like status 403 with `message`."""
    return {
        "uid": uid,
        "allowed": False,
        "status": {"status": "Failure", "code": 403, "reason": "Forbidden", "message": message},
    }


def admission_response(
    request: Request,
    findings: Sequence[Finding],
    *,
    patch: Sequence[PatchOperation] = (),
) -> AdmissionResponse:
    """The answer to a judged request: allowed unless an image is denied; warnings and audit
    annotations in both cases; the patch only when allowed and non-empty."""
    allowed = all(f.allowed for f in findings)
    response = (
        allow(request.uid)
        if allowed
        else deny(request.uid, denial_message(request.subject, findings))
    )
    warnings = warnings_for(findings)
    if warnings:
        response["warnings"] = warnings
    annotations = audit_annotations(findings)
    if annotations:
        response["auditAnnotations"] = annotations
    if allowed and patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = encode_patch(patch)
    return response


def encode_patch(patch: Sequence[PatchOperation]) -> str:
    """A JSONPatch as the base64 of its JSON, as AdmissionResponse.patch wants it."""
    return base64.b64encode(json.dumps(list(patch), separators=(",", ":")).encode()).decode()


def review_envelope(request: Request, response: AdmissionResponse) -> AdmissionReview:
    """Wrap a response in an AdmissionReview of the request's own apiVersion."""
    return {"apiVersion": request.api_version, "kind": "AdmissionReview", "response": response}
