"""Judging a review's image sites and remembering the encoded answer: the judged-review memo
splices the response JSON around each request's uid (`_Judged`, `head`/`tail`)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from policy import reference
from policy.deadline import Deadline
from policy.errors import InvalidReference
from policy.evaluate import ImageDecision
from policy.k8s import admission
from policy.k8s.admission import Finding
from policy.k8s.workloads import ImageSite
from policy.service import Item, Service


def _judge(
    service: Service,
    images: Sequence[tuple[str, str, str | None]],
    namespace: str | None,
    deadline: Deadline,
) -> list[Finding]:
    """Judge (image text, where, pointer) triples with one `Service.decide` call."""
    return _judge_items(service, images, namespace, deadline)[2]


def _judge_items(
    service: Service,
    images: Sequence[tuple[str, str, str | None]],
    namespace: str | None,
    deadline: Deadline,
    decided: list[ImageDecision] | None = None,
) -> tuple[tuple[Item, ...], list[ImageDecision], list[Finding]]:
    """`_judge`, also returning the items decided (the valid references) and their decisions.
    `decided`: the service's decisions for these items, when the caller has just asked it."""
    parsed: list[tuple[str, str, str | None, reference.Reference | None, str | None]] = []
    for image, where, pointer in images:
        try:
            parsed.append((image, where, pointer, reference.parse(image), None))
        except InvalidReference as exc:
            parsed.append((image, where, pointer, None, str(exc)))
    items = tuple(Item(ref, namespace) for _, _, _, ref, _ in parsed if ref is not None)
    if decided is None:
        decided = service.decide(items, deadline=deadline) if items else []
    decisions = iter(decided)
    findings = [
        Finding(
            image,
            where,
            decision=next(decisions) if ref is not None else None,
            invalid=problem,
            pointer=pointer,
        )
        for image, where, pointer, ref, problem in parsed
    ]
    return items, decided, findings


@dataclass(frozen=True)
class _Judged:
    """A judged admission review, as much of its answer as does not depend on the request's
    uid, and what it was judged with.

    The next review with the same endpoint, apiVersion, namespace and image sites (the pods of
    one ReplicaSet, a workload applied again) reuses it when the same service hands back the
    very same decision objects for the same items — which it does only while the facts are
    unchanged and no decision could have changed (`Service.decide`). A denial's message names
    the object, so a denial is reused only for the same subject.
    """

    service: Service
    items: tuple[Item, ...]
    decisions: tuple[ImageDecision, ...]
    findings: tuple[Finding, ...]
    subject: str
    allowed: bool
    head: str
    """The AdmissionReview's JSON up to the response's uid ..."""
    tail: str
    """... and after it: `head + json.dumps(uid) + tail` is `json.dumps` of the whole review."""
    verdicts: tuple[tuple[str, int], ...]
    """Images by verdict (allowed, denied, invalid), for the metrics."""
    patched: tuple[str, ...]
    """The JSON Pointers a mutating review's patch replaces."""


def _tenths(value: float) -> float:
    """A non-negative `value` rounded to tenths (half up): `round(value, 1)` without the
    float-to-decimal conversion it makes to round exactly, which a latency does not need."""
    return int(value * 10 + 0.5) / 10


def _verdicts(findings: Iterable[Finding]) -> tuple[tuple[str, int], ...]:
    """How many images are allowed, denied and invalid (the non-zero counts)."""
    counts = dict.fromkeys(("allowed", "denied", "invalid"), 0)
    for f in findings:
        counts["invalid" if f.decision is None else "allowed" if f.allowed else "denied"] += 1
    return tuple((verdict, n) for verdict, n in counts.items() if n)


def too_many_images(subject: str, count: int, limit: int) -> str:
    """The denial of a review with more image sites than `review.maxImages`."""
    return (
        f"image-policy: {subject} has {count} image references, more than the {limit} one "
        "review may have (review.maxImages); none was checked"
    )


def _judged(
    service: Service,
    review: admission.Request,
    sites: Sequence[ImageSite],
    pinning: bool,
    deadline: Deadline,
    decided: list[ImageDecision] | None = None,
) -> _Judged:
    """Judge a review's image sites and encode its answer around the uid (`decided`: the
    service's decisions for their items, if already asked)."""
    items, decisions, findings = _judge_items(
        service,
        # JSON Pointers are only needed to patch.
        [(s.image, admission.site_label(s), s.pointer if pinning else None) for s in sites],
        review.namespace,
        deadline,
        decided,
    )
    patch = admission.pin_patch(findings) if pinning else []
    response = admission.admission_response(review, findings, patch=patch)
    rest = {k: v for k, v in response.items() if k != "uid"}  # uid: spliced in per request
    head = f'{{"apiVersion": {json.dumps(review.api_version)}, "kind": "AdmissionReview", '
    return _Judged(
        service=service,
        items=items,
        decisions=tuple(decisions),
        findings=tuple(findings),
        subject=review.subject,
        allowed=response["allowed"],
        head=head + '"response": {"uid": ',
        tail=", " + json.dumps(rest)[1:] + "}",
        verdicts=_verdicts(findings),
        patched=tuple(op["path"] for op in patch),
    )
