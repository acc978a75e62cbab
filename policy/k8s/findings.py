"""Each image site's verdict (`Finding`) and the words said about it (pure): the denial
message listing every denied image, warnings, audit annotations. Both the AdmissionReview
(`k8s.admission`) and the ImageReview (`k8s.imagereview`) answers are made of these.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

from policy.evaluate import ImageDecision
from policy.k8s import workloads
from policy.k8s.workloads import ImageSite, Problem

MAX_WARNING_CHARS = 256
"""Kubernetes may truncate longer warnings; ours are short, one per finding."""
MAX_MESSAGE_LINES = 50
"""Lines of findings in a denial message before the rest is summarized."""

_FIELD_LABELS: Mapping[workloads.SiteField, str] = {
    "container": "container",
    "initContainer": "init container",
    "ephemeralContainer": "ephemeral container",
    "volume": "image volume",
}


class Finding(NamedTuple):
    """One image as written at one place, and its verdict.

    `decision` is None when the text is not a valid reference (`invalid` says why); such an
    image is denied. `pointer` is the JSON Pointer of the image string (None: ImageReview).
    A named tuple: see `admission.Request`.
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
