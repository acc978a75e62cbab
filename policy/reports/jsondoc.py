"""`--format json`: `{"allowed", "results": [...], "skipped": [...], "summary": {...}}`, the
CLI's machine-readable shape."""

from __future__ import annotations

import json
from collections.abc import Sequence

from policy.evaluate import Violation
from policy.reports.results import Result, source, summary, violations
from policy.scanners import Skipped


def json_document(results: Sequence[Result], skipped: Sequence[Skipped] = ()) -> dict[str, object]:
    """The `--format json` document (as a dict): `skipped` lists the files not judged (with
    why), and `summary.skipped` counts them."""
    out = []
    for r in results:
        d = r.decision
        out.append(
            {
                "image": r.found.image,
                "reference": str(d.reference) if d is not None else None,
                "digest": (d.facts.digest or d.reference.digest) if d is not None else None,
                "source": source(r.found),
                "allowed": r.allowed,
                "violations": [_violation_json(v) for v in violations(r)],
                "warnings": list(d.warnings) if d is not None else [],
            }
        )
    counts = summary(results)
    document: dict[str, object] = {"allowed": counts["denied"] == 0, "results": out}
    document["skipped"] = [{"file": s.file, "reason": s.reason} for s in skipped]
    document["summary"] = {**counts, "skipped": len(skipped)}
    return document


def _violation_json(v: Violation) -> dict[str, str]:
    out = {"rule": v.rule, "check": v.check, "action": v.action, "message": v.message}
    if v.detail:
        out["detail"] = v.detail
    return out


def render(results: Sequence[Result], skipped: Sequence[Skipped]) -> str:
    """`json_document` as indented JSON."""
    return json.dumps(json_document(results, skipped), indent=2) + "\n"
