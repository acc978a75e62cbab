"""AdmissionReview and ImageReview wire formats, and what to answer (pure: no I/O, no clock).

The web layer reads a body, hands the parsed JSON to `parse_review` / `parse_image_review`
(which raise `ReviewError` for a malformed request: HTTP 400), asks `plan` which image sites
need a verdict, has them judged by the one pipeline (`policy.service`), and builds the answer
here: `admission_response` (uid, allowed, a 403 status listing every denied image, warnings,
audit annotations, an optional JSONPatch) wrapped by `review_envelope` in the request's own
`apiVersion`, or `image_review_status` for the ImagePolicyWebhook.

A request that is well formed but whose object is malformed (a container without a string
`image`) is not a bad request: the object is denied, with the problems listed.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple, NotRequired, TypedDict

from policy import reference
from policy.errors import ReviewError
from policy.evaluate import ImageDecision
from policy.k8s import workloads
from policy.k8s.workloads import MAPPING, ImageSite, Problem

API_V1 = "admission.k8s.io/v1"
API_V1BETA1 = "admission.k8s.io/v1beta1"
ADMISSION_VERSIONS = (API_V1, API_V1BETA1)
IMAGE_REVIEW_API = "imagepolicy.k8s.io/v1alpha1"
BREAK_GLASS_PREFIX = "break-glass.image-policy.k8s.io/"

MAX_WARNING_CHARS = 256
"""Kubernetes may truncate longer warnings; ours are short, one per finding."""
MAX_MESSAGE_LINES = 50
"""Lines of findings in a denial message before the rest is summarized."""

Operation = Literal["CREATE", "UPDATE", "DELETE", "CONNECT"]
OPERATIONS: tuple[Operation, ...] = ("CREATE", "UPDATE", "DELETE", "CONNECT")

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

_FIELD_LABELS: Mapping[workloads.SiteField, str] = {
    "container": "container",
    "initContainer": "init container",
    "ephemeralContainer": "ephemeral container",
    "volume": "image volume",
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


class ImageReviewContainerSpec(TypedDict):
    image: str


class ImageReviewSpec(TypedDict, total=False):
    containers: list[ImageReviewContainerSpec]
    annotations: dict[str, str]
    namespace: str


class ImageReviewStatus(TypedDict):
    allowed: bool
    reason: NotRequired[str]
    auditAnnotations: NotRequired[dict[str, str]]


class ImageReview(TypedDict):
    apiVersion: str
    kind: Literal["ImageReview"]
    spec: NotRequired[ImageReviewSpec]
    status: NotRequired[ImageReviewStatus]


# --- parsing ----------------------------------------------------------------------------


def load_json(body: bytes) -> object:
    """Parse a request body; ReviewError when it is not UTF-8 JSON (NaN/Infinity refused,
    nesting bounded by the interpreter's recursion limit)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ReviewError(
            f"request body is not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from None
    try:
        return _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        if not text.strip():
            raise ReviewError("request body is empty; expected a JSON object") from None
        raise ReviewError(
            f"request body is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise ReviewError("request body is not usable JSON: nested too deeply") from None
    except ValueError as exc:  # NaN/Infinity, integers too long to convert
        raise ReviewError(f"request body is not usable JSON: {exc}") from None


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not a JSON number")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _kind_name(value: object) -> str:
    return "missing" if value is None else workloads.describe(value)


# Request, Plan and Finding are named tuples, not frozen dataclasses: one of each is made per
# review (a Finding per image), and a frozen dataclass sets each field through
# `object.__setattr__`, which made building them a measurable share of a warm review.
class Request(NamedTuple):
    """The parts of an AdmissionReview request the decision reads, checked and typed."""

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


def _field(mapping: Mapping[str, object], key: str, path: str, *, required: bool = False) -> str:
    value = mapping.get(key)
    if value is None:
        if required:
            raise ReviewError(f"{path}.{key} is missing; expected a string")
        return ""
    if not isinstance(value, str):
        raise ReviewError(f"{path}.{key} must be a string, got {_kind_name(value)}")
    return value


def _mapping(value: object, path: str, *, required: bool = False) -> Mapping[str, object] | None:
    if value is None:
        if required:
            raise ReviewError(f"{path} is missing; expected an object")
        return None
    if not isinstance(value, MAPPING):
        raise ReviewError(f"{path} must be an object, got {_kind_name(value)}")
    return value


def _envelope(document: object, kinds: str) -> Mapping[str, object]:
    if not isinstance(document, MAPPING):
        raise ReviewError(
            f"expected a JSON object with apiVersion, kind and {kinds}, got {_kind_name(document)}"
        )
    return document


def parse_review(document: object) -> Request:
    """Check an AdmissionReview (v1 or v1beta1) and return its request; ReviewError says
    precisely what is malformed (missing `request` or `uid`, wrong kind or version, ...).

    Every review passes through here, so the usual case — each field a plain `str` or `dict`
    as JSON gives them — is checked inline, and anything else goes to `_field`/`_mapping`,
    which accept what is valid (`None` for an optional field) and word the errors.
    """
    doc = _envelope(document, "request")
    kind = doc.get("kind")
    if kind != "AdmissionReview":
        raise ReviewError(f"kind is {_kind_name(kind)}; expected AdmissionReview")
    api_version = doc.get("apiVersion")
    if not isinstance(api_version, str) or api_version not in ADMISSION_VERSIONS:
        raise ReviewError(
            f"apiVersion {_kind_name(api_version)} is not supported; expected "
            f"{' or '.join(ADMISSION_VERSIONS)}"
        )
    request = doc.get("request")
    if request.__class__ is not dict:
        request = _mapping(request, "request", required=True)
        assert request is not None
    get = request.get
    uid = get("uid")
    if uid.__class__ is not str:
        uid = _field(request, "uid", "request", required=True)
    if not uid:
        raise ReviewError("request.uid is empty")
    operation = get("operation")
    if operation not in OPERATIONS:
        raise ReviewError(
            f"request.operation is {_kind_name(operation)}; expected one of {', '.join(OPERATIONS)}"
        )
    gvk = get("kind")
    if gvk.__class__ is not dict:
        gvk = _mapping(gvk, "request.kind", required=True)
        assert gvk is not None
    kind_name = gvk.get("kind")
    if kind_name.__class__ is not str:
        kind_name = _field(gvk, "kind", "request.kind", required=True)
    group = gvk.get("group")
    if group.__class__ is not str:
        group = _field(gvk, "group", "request.kind")
    version = gvk.get("version")
    if version.__class__ is not str:
        version = _field(gvk, "version", "request.kind")
    gvr = get("resource")
    if gvr.__class__ is not dict:
        gvr = _mapping(gvr, "request.resource") or {}
    resource = gvr.get("resource")
    if resource.__class__ is not str:
        resource = _field(gvr, "resource", "request.resource")
    sub_resource = get("subResource")
    if sub_resource.__class__ is not str:
        sub_resource = _field(request, "subResource", "request")
    namespace = get("namespace")
    if namespace.__class__ is not str:
        namespace = _field(request, "namespace", "request")
    name = get("name")
    if name.__class__ is not str:
        name = _field(request, "name", "request")
    user_info = get("userInfo")
    if user_info.__class__ is not dict:
        user_info = _mapping(user_info, "request.userInfo") or {}
    user = user_info.get("username")
    if user.__class__ is not str:
        user = _field(user_info, "username", "request.userInfo")
    obj = get("object")
    if obj.__class__ is not dict:
        obj = _mapping(obj, "request.object", required=operation in _WRITES)
    old = get("oldObject")
    if old.__class__ is not dict:
        # Only UPDATE reads it, to skip unchanged images; anything but an object (recorded
        # samples send `"oldObject": ""` on CREATE) means "no old object": every image is judged.
        old = old if isinstance(old, MAPPING) else None
    dry_run = get("dryRun", False)
    if dry_run is None:
        dry_run = False
    if not isinstance(dry_run, bool):
        raise ReviewError(f"request.dryRun must be true or false, got {_kind_name(dry_run)}")
    metadata = (obj or {}).get("metadata")
    if metadata.__class__ is not dict:
        metadata = _mapping(metadata, "request.object.metadata") or {}
    if not namespace:
        meta_ns = metadata.get("namespace")
        namespace = meta_ns if isinstance(meta_ns, str) and meta_ns else None
    if not name:
        meta_name = metadata.get("name")
        generate = metadata.get("generateName")
        if isinstance(meta_name, str) and meta_name:
            name = meta_name
        elif isinstance(generate, str) and generate:
            name = generate + "*"
    return Request(
        api_version,
        uid,
        operation,
        kind_name,
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


_WRITES = ("CREATE", "UPDATE")


# --- which images ----------------------------------------------------------------------


class Plan(NamedTuple):
    """What to judge for one request.

    `check` are the image sites needing a verdict; `unchanged` those skipped on UPDATE
    because the old object has the same image; `problems` make the object malformed (deny);
    `skip_reason` says why nothing at all is judged (another kind, DELETE, a subresource).
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


# --- verdicts --------------------------------------------------------------------------


class Finding(NamedTuple):
    """One image as written at one place, and its verdict.

    `decision` is None when the text is not a valid reference (`invalid` says why); such an
    image is denied. `pointer` is the JSON Pointer of the image string (None: ImageReview).
    """

    image: str
    where: str
    decision: ImageDecision | None = None
    invalid: str | None = None
    pointer: str | None = None

    @property
    def allowed(self) -> bool:
        return self.decision is not None and self.decision.allowed


def site_label(site: ImageSite) -> str:
    """`container "web"`, `init container "setup"`, `image volume "models"`."""
    label = _FIELD_LABELS[site.field]
    return f'{label} "{site.name}"' if site.name else label


def denial_lines(findings: Iterable[Finding]) -> list[str]:
    """One line per denied image and reason: `container "web" image "x": rule r: why`."""
    lines: list[str] = []
    for f in findings:
        head = f'{f.where} image "{f.image}"'
        if f.decision is None:
            lines.append(f"{head}: {f.invalid}")
            continue
        for v in f.decision.by_action("deny"):
            lines.append(f"{head}: rule {v.rule}: {v.message}")
    return lines


def denial_message(subject: str, findings: Sequence[Finding]) -> str:
    """The 403 message: what was denied, then every denied image with its rule and reason."""
    denied = [f for f in findings if not f.allowed]
    count = len({f.image for f in denied})
    total = len({f.image for f in findings})
    verb = "is" if count == 1 else "are"
    return _message(
        f"image-policy: {count} of {total} images {verb} not allowed in {subject}:", denied
    )


def problems_message(subject: str, problems: Sequence[Problem]) -> str:
    """The 403 message for a malformed object: its images cannot all be found."""
    lines = [str(p) for p in problems]
    head = f"image-policy: {subject} is malformed, so its images cannot all be checked:"
    return _join(head, lines)


def _message(head: str, findings: Iterable[Finding]) -> str:
    return _join(head, denial_lines(findings))


def _join(head: str, lines: list[str]) -> str:
    shown = lines[:MAX_MESSAGE_LINES]
    text = head + "".join(f"\n- {line}" for line in shown)
    if len(lines) > len(shown):
        text += f"\n- ... and {len(lines) - len(shown)} more"
    return text


def _short(text: str, limit: int = MAX_WARNING_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def warnings_for(findings: Iterable[Finding]) -> list[str]:
    """One short warning per `warn` violation and per expired exception, duplicates removed."""
    out: list[str] = []
    for f in findings:
        if f.decision is None:
            continue
        for v in f.decision.by_action("warn"):
            out.append(_short(f"{f.image}: {v.rule}: {v.message}"))
        for w in f.decision.warnings:
            out.append(_short(f"{f.image}: {w}"))
    return list(dict.fromkeys(out))


def audit_key(rule: str) -> str:
    """An audit annotation key from a rule id: a valid qualified name (`[A-Za-z0-9._-]`,
    alphanumeric at both ends, at most 63 characters)."""
    cleaned = "".join(c if c.isascii() and (c.isalnum() or c in "._-") else "-" for c in rule)
    cleaned = cleaned.strip("._-")[:63].rstrip("._-")
    return cleaned or "rule"


def audit_annotations(findings: Iterable[Finding]) -> dict[str, str]:
    """`audit` violations by rule: key the rule id, value the `image: message` entries."""
    by_rule: dict[str, list[str]] = {}
    for f in findings:
        if f.decision is None:
            continue
        for v in f.decision.by_action("audit"):
            by_rule.setdefault(audit_key(v.rule), []).append(f"{f.image}: {v.message}")
    return {k: "; ".join(dict.fromkeys(v)) for k, v in by_rule.items()}


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


# --- ImageReview -----------------------------------------------------------------------


@dataclass(frozen=True)
class ImageReviewRequest:
    """The parts of an ImageReview the decision reads."""

    images: tuple[str, ...]
    namespace: str | None
    annotations: Mapping[str, str]


def parse_image_review(document: object) -> ImageReviewRequest:
    """Check an ImageReview (imagepolicy.k8s.io/v1alpha1); ReviewError when malformed."""
    doc = _envelope(document, "spec")
    kind = doc.get("kind")
    if kind != "ImageReview":
        raise ReviewError(f"kind is {_kind_name(kind)}; expected ImageReview")
    if doc.get("apiVersion") != IMAGE_REVIEW_API:
        raise ReviewError(
            f"apiVersion {_kind_name(doc.get('apiVersion'))} is not supported; "
            f"expected {IMAGE_REVIEW_API}"
        )
    spec = _mapping(doc.get("spec"), "spec", required=True)
    assert spec is not None
    containers = spec.get("containers")
    if containers is None:
        containers = []
    if not isinstance(containers, list):
        raise ReviewError(f"spec.containers must be a list, got {_kind_name(containers)}")
    images: list[str] = []
    for index, entry in enumerate(containers):
        container = _mapping(entry, f"spec.containers[{index}]", required=True)
        assert container is not None
        images.append(_field(container, "image", f"spec.containers[{index}]", required=True))
    namespace = _field(spec, "namespace", "spec") or None
    raw = _mapping(spec.get("annotations"), "spec.annotations") or {}
    annotations: dict[str, str] = {}
    for key, value in raw.items():
        if not isinstance(value, str):
            raise ReviewError(
                f"spec.annotations[{key!r}] must be a string, got {_kind_name(value)}"
            )
        annotations[key] = value
    return ImageReviewRequest(tuple(images), namespace, annotations)


def break_glass(annotations: Mapping[str, str]) -> dict[str, str]:
    """The break-glass annotations present (`break-glass.image-policy.k8s.io/<anything>`)."""
    return {k: v for k, v in annotations.items() if k.startswith(BREAK_GLASS_PREFIX)}


def image_review_status(
    findings: Sequence[Finding], *, subject: str = "the pod"
) -> ImageReviewStatus:
    """ImageReview status: allowed unless an image is denied; `reason` lists the denials;
    audit annotations for `audit` violations (warnings are not part of this API)."""
    allowed = all(f.allowed for f in findings)
    status: ImageReviewStatus = {"allowed": allowed}
    if not allowed:
        status["reason"] = denial_message(subject, findings)
    annotations = audit_annotations(findings)
    if annotations:
        status["auditAnnotations"] = annotations
    return status


def break_glass_status(request: ImageReviewRequest, found: Mapping[str, str]) -> ImageReviewStatus:
    """Allowed by break-glass, without any lookup; audited with the images and annotations."""
    keys = ", ".join(sorted(found))
    return {
        "allowed": True,
        "reason": f"image-policy: allowed by break-glass annotation {keys}",
        "auditAnnotations": {
            "break-glass": f"{keys} allowed {', '.join(request.images) or 'no images'}"
        },
    }


def image_review(status: ImageReviewStatus) -> ImageReview:
    """The ImageReview answer envelope."""
    return {"apiVersion": IMAGE_REVIEW_API, "kind": "ImageReview", "status": status}
