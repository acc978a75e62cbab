"""Judging a review's image sites (`judge_images`), and the judged-review memo
(`JudgedMemo`): the pods of one ReplicaSet, or a workload applied again, are answered with
the answer already made for the same image sites."""

from __future__ import annotations

import json
import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from policy import reference
from policy.cache import ByteMemo
from policy.deadline import Deadline
from policy.errors import InvalidReference
from policy.evaluate import ImageDecision
from policy.k8s import admission
from policy.k8s.findings import Finding, site_label
from policy.k8s.workloads import ImageSite
from policy.service import Item, Service
from policy.web.reload import Policy

Images = Sequence[tuple[str, str, str | None]]
"""(image text, where it is written, its JSON Pointer or None) for each image site."""


def judge_images(
    service: Service,
    images: Images,
    namespace: str | None,
    deadline: Deadline,
    decided: list[ImageDecision] | None = None,
) -> tuple[tuple[Item, ...], list[ImageDecision], list[Finding]]:
    """Judge image sites with one `Service.decide` call: the items decided (the valid
    references), their decisions, and a finding per site (an invalid reference is denied).
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


def verdicts(findings: Iterable[Finding]) -> tuple[tuple[str, int], ...]:
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


@dataclass(frozen=True)
class Judged:
    """A judged admission review: its answer, encoded around the uid, and what it was judged
    with."""

    service: Service
    items: tuple[Item, ...]
    decisions: tuple[ImageDecision, ...]
    findings: tuple[Finding, ...]
    subject: str
    allowed: bool
    head: str
    """The AdmissionReview's JSON up to the response's uid ..."""
    tail: str
    """... and after it: encoding the answer as `head + uid + tail` saves ~4% of a warm review
    (1b) over encoding the whole review again."""
    verdicts: tuple[tuple[str, int], ...]
    """Images by verdict (allowed, denied, invalid), for the metrics."""
    patched: tuple[str, ...]
    """The JSON Pointers a mutating review's patch replaces."""

    def answer(self, review: admission.Request) -> str:
        """The JSON of the AdmissionReview answering `review` (same endpoint, apiVersion,
        namespace and image sites): `json.dumps` of the review as first judged, with its uid."""
        return self.head + json.dumps(review.uid) + self.tail


def judge_review(
    service: Service,
    review: admission.Request,
    sites: Sequence[ImageSite],
    pinning: bool,
    deadline: Deadline,
    decided: list[ImageDecision] | None = None,
) -> Judged:
    """Judge a review's image sites and encode its answer around the uid (`decided`: the
    service's decisions for their items, if already asked)."""
    items, decisions, findings = judge_images(
        service,
        # JSON Pointers are only needed to patch.
        [(s.image, site_label(s), s.pointer if pinning else None) for s in sites],
        review.namespace,
        deadline,
        decided,
    )
    patch = admission.pin_patch(findings) if pinning else []
    response = admission.admission_response(review, findings, patch=patch)
    rest = {k: v for k, v in response.items() if k != "uid"}
    head = f'{{"apiVersion": {json.dumps(review.api_version)}, "kind": "AdmissionReview", '
    return Judged(
        service=service,
        items=items,
        decisions=tuple(decisions),
        findings=tuple(findings),
        subject=review.subject,
        allowed=response["allowed"],
        head=head + '"response": {"uid": ',
        tail=", " + json.dumps(rest)[1:] + "}",
        verdicts=verdicts(findings),
        patched=tuple(op["path"] for op in patch),
    )


class JudgedMemo:
    """Judged reviews by (endpoint, apiVersion, namespace, image sites), in half the memo
    budget (`cache.memoBytes`); saves ~20% of a warm review (1b).

    A review is answered from the memo when the same service hands back the very same
    decision objects for the same items — which it does only while the facts are unchanged
    and no decision could have changed (`Service.decide`). A denial's message names the
    object, so a denial is reused only for the same subject. A review judged on failed facts
    is not kept (the service never hands out those decisions twice). The memo is emptied when
    the policy in force changes.
    """

    def __init__(self, memo_bytes: int) -> None:
        # One slot, shared with `app.extensions["image_policy_judged"]`: the memo in force.
        self.slot: list[ByteMemo[tuple[object, ...], Judged]] = [_memo(memo_bytes)]
        self._policy: Policy | None = None  # the policy whose services the memo holds

    def judge(
        self,
        policy: Policy,
        service: Service,
        endpoint: str,
        review: admission.Request,
        sites: tuple[ImageSite, ...],
        pinning: bool,
        deadline: Deadline,
    ) -> Judged:
        """The judged review, from the memo or judged afresh (and then remembered)."""
        self._follow(policy)
        key = (endpoint, review.api_version, review.namespace, sites)
        memo = self.slot[0]
        known = memo.get(key)
        decided = None
        if known is not None and known.service is service:
            # The key fixes the items (the sites' images in the namespace): ask the service
            # once, and judge afresh with its answer if the decisions changed.
            decided = service.decide(known.items, deadline=deadline) if known.items else []
            if all(map(operator.is_, decided, known.decisions)) and (
                known.allowed or known.subject == review.subject
            ):
                return known
        fresh = judge_review(service, review, sites, pinning, deadline, decided)
        if not any(d.facts.errors for d in fresh.decisions):
            memo.put(key, fresh)
        return fresh

    def _follow(self, policy: Policy) -> None:
        """Drop the judged reviews of an earlier policy (and the services they hold)."""
        if self._policy is not policy:
            if self.slot[0].max_bytes != _budget(policy.settings.memo_bytes):
                self.slot[0] = _memo(policy.settings.memo_bytes)
            self.slot[0].clear()
            self._policy = policy


def _budget(memo_bytes: int) -> int:
    return max(16, memo_bytes // 2)


def _memo(memo_bytes: int) -> ByteMemo[tuple[object, ...], Judged]:
    # The services the entries refer to are not charged: the policy holds them anyway.
    return ByteMemo(_budget(memo_bytes), opaque=(Service,))
