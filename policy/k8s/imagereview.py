"""The ImagePolicyWebhook's ImageReview (imagepolicy.k8s.io/v1alpha1), pure: the request
checked (`parse_image_review`, ReviewError when malformed), break-glass annotations, and the
answer (`image_review_status` wrapped by `image_review`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, NotRequired, TypedDict

from policy.errors import ReviewError
from policy.k8s.findings import Finding, audit_annotations, denial_message
from policy.k8s.reviewjson import envelope, kind_name, mapping_field, string_field

IMAGE_REVIEW_API = "imagepolicy.k8s.io/v1alpha1"
BREAK_GLASS_PREFIX = "break-glass.image-policy.k8s.io/"


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


@dataclass(frozen=True)
class ImageReviewRequest:
    """The parts of an ImageReview the decision reads."""

    images: tuple[str, ...]
    namespace: str | None
    annotations: Mapping[str, str]


def parse_image_review(document: object) -> ImageReviewRequest:
    """Check an ImageReview (imagepolicy.k8s.io/v1alpha1); ReviewError when malformed."""
    doc = envelope(document, "spec")
    kind = doc.get("kind")
    if kind != "ImageReview":
        raise ReviewError(f"kind is {kind_name(kind)}; expected ImageReview")
    if doc.get("apiVersion") != IMAGE_REVIEW_API:
        raise ReviewError(
            f"apiVersion {kind_name(doc.get('apiVersion'))} is not supported; "
            f"expected {IMAGE_REVIEW_API}"
        )
    spec = mapping_field(doc.get("spec"), "spec", required=True)
    assert spec is not None
    containers = spec.get("containers")
    if containers is None:
        containers = []
    if not isinstance(containers, list):
        raise ReviewError(f"spec.containers must be a list, got {kind_name(containers)}")
    images: list[str] = []
    for index, entry in enumerate(containers):
        container = mapping_field(entry, f"spec.containers[{index}]", required=True)
        assert container is not None
        images.append(string_field(container, "image", f"spec.containers[{index}]", required=True))
    namespace = string_field(spec, "namespace", "spec") or None
    raw = mapping_field(spec.get("annotations"), "spec.annotations") or {}
    annotations: dict[str, str] = {}
    for key, value in raw.items():
        if not isinstance(value, str):
            raise ReviewError(f"spec.annotations[{key!r}] must be a string, got {kind_name(value)}")
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
