"""What the webhook says about itself: `/healthz`, `/readyz` (rules loaded, reload errors,
registries under pressure, the shared cache) and `/metrics` (Prometheus)."""

from __future__ import annotations

import json

from flask import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from policy.service import Resolver
from policy.web.metrics import Metrics, _shared_tier, pressure_by_label
from policy.web.reload import PolicyHolder, PressuredResolver


def healthz() -> Response:
    return Response('{"status": "ok"}', mimetype="application/json")


def readyz(holder: PolicyHolder, metrics: Metrics) -> Response:
    """Ready (200) while valid rules are loaded, else 503; says which, and what failed to
    reload."""
    policy = holder.policy
    ruleset = policy.ruleset
    body: dict[str, object] = {
        "ready": ruleset is not None,
        "rules": ruleset.name if ruleset is not None else None,
        "ruleCount": len(ruleset.rules) if ruleset is not None else 0,
        "sources": list(ruleset.sources) if ruleset is not None else [],
        "rulesError": policy.rules_error,
        "settingsError": policy.settings_error,
        "degraded": degraded(policy.resolver, metrics),
    }
    shared = _shared_tier(policy.resolver)
    if shared is not None:
        # Reported, never a reason to be unready: without Redis each replica still answers.
        body["sharedCache"] = shared.state()
    status = 200 if ruleset is not None else 503
    return Response(json.dumps(body), status=status, mimetype="application/json")


def degraded(resolver: Resolver, metrics: Metrics) -> dict[str, list[str]]:
    """What is under pressure (by metric label, so never a made-up host's name): registries
    short-circuited, and those whose share is full with lookups waiting. Not a reason to be
    unready: a slow registry must not take the webhook out of the Service."""
    if not isinstance(resolver, PressuredResolver):
        return {}
    _, queued, short = pressure_by_label(resolver.pressure(), metrics.registry_label)
    out: dict[str, list[str]] = {}
    if short:
        out["shortCircuited"] = sorted(short)
    if any(queued.values()):
        out["busy"] = sorted(k for k, n in queued.items() if n)
    return out


def metrics_page(metrics: Metrics) -> Response:
    return Response(generate_latest(metrics.registry), mimetype=CONTENT_TYPE_LATEST)
