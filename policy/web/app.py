"""The Flask app factory `create_app` and its routes (see the package docstring)."""

from __future__ import annotations

import json
import logging
import operator
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from flask import Flask, Response, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    generate_latest,
)
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from policy import resolver as resolver_mod
from policy import settings as settings_mod
from policy.cache import ByteMemo
from policy.deadline import Deadline
from policy.errors import PolicyError, ReviewError
from policy.k8s import admission
from policy.k8s.workloads import ImageSite
from policy.rules import RuleSet
from policy.service import Resolver, Service
from policy.settings import Settings
from policy.web.decisionlog import LOGGER, DecisionLog, _ensure_handler, _log
from policy.web.memo import _judge, _Judged, _judged, _tenths, _verdicts, too_many_images
from policy.web.metrics import (
    Metrics,
    _ResolverCollector,
    _shared_tier,
    _SharedCacheCollector,
    pressure_by_label,
)
from policy.web.reload import Policy, PolicyHolder, PressuredResolver

RULES_ENV = "IMAGE_POLICY_RULES"
MAX_BODY = 3 * 1024 * 1024
RELOAD_INTERVAL = 1.0

# --- the app -------------------------------------------------------------------------------


def _rule_paths_from_env(env: Mapping[str, str]) -> list[Path]:
    text = env.get(RULES_ENV, "")
    return [Path(p) for p in text.split(os.pathsep) if p.strip()]


def _utcnow() -> datetime:
    return datetime.now(UTC)


class _Unavailable(Exception):
    """No valid rules are loaded: answer 503 (not a bad request, not a bug)."""


def create_app(
    settings: Settings | None = None,
    *,
    rules: RuleSet | Sequence[str | Path] | None = None,
    resolver: Resolver | None = None,
    env: Mapping[str, str] | None = None,
    now: Callable[[], datetime] = _utcnow,
    clock: Callable[[], float] = time.monotonic,
    reload_interval: float = RELOAD_INTERVAL,
    logger: logging.Logger | None = None,
) -> Flask:
    """Build the webhook app.

    `settings` None: loaded from `$IMAGE_POLICY_CONFIG` (defaults without it); a settings
    object with a `source` file is re-read when that file changes. `rules`: a RuleSet (fixed),
    rule file/directory paths (re-read on change), or None for `$IMAGE_POLICY_RULES`.
    `resolver` None builds the registry resolver from the settings (and rebuilds it when they
    change). Raises SettingsErrors for a broken settings file and PolicyError when no rule
    files are named at all; broken rule files leave the app up but not ready (503).
    """
    env = os.environ if env is None else env
    if settings is None:
        settings = settings_mod.load_settings(env=env)
    settings_path = Path(settings.source) if settings.source else None
    if rules is None:
        rule_paths = _rule_paths_from_env(env)
        if not rule_paths:
            raise PolicyError(f"no rule files: set ${RULES_ENV} or pass rules=")
        fixed_rules: RuleSet | None = None
    elif isinstance(rules, RuleSet):
        rule_paths, fixed_rules = [], rules
    else:
        rule_paths, fixed_rules = [Path(p) for p in rules], None
        if not rule_paths:
            raise PolicyError("no rule files given")

    log = logger or logging.getLogger(LOGGER)
    if logger is None:
        _ensure_handler(log)
    decisions = DecisionLog(log)
    metrics = Metrics(CollectorRegistry())

    def on_reload(file: str, result: str, error: str | None) -> None:
        metrics.reloads.labels(file, result).inc()
        if error is None:
            _log(log, logging.INFO, "reload", file=file, result=result)
        else:
            _log(log, logging.ERROR, "reload", file=file, result=result, error=error)

    def build_resolver(chosen: Settings) -> Resolver:
        return resolver_mod.build(chosen, mode="webhook", on_request=metrics.on_request)

    holder = PolicyHolder(
        settings=settings,
        settings_path=settings_path,
        rules=fixed_rules,
        rule_paths=rule_paths,
        resolver=resolver,
        build_resolver=build_resolver,
        now=now,
        clock=clock,
        interval=reload_interval,
        on_reload=on_reload,
    )
    metrics.named_registries = lambda: holder.current.named_registries
    metrics.registry.register(
        _ResolverCollector(lambda: holder.policy.resolver, metrics.registry_label)
    )
    metrics.registry.register(_SharedCacheCollector(lambda: holder.policy.resolver))

    app = Flask("policy.web")  # the package: its logger and name as before the split
    # One byte more than allowed: werkzeug refuses a larger Content-Length before reading, but
    # cuts a body without one (chunked) at this limit instead of refusing it, so `read_json`
    # reads one byte past MAX_BODY to tell such a body was too large.
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY + 1
    app.extensions["image_policy"] = holder
    app.extensions["image_policy_log"] = decisions

    def read_json() -> object:
        # what `request.mimetype` gives, without parsing the header's parameters
        mimetype = request.environ.get("CONTENT_TYPE", "").partition(";")[0].strip().lower()
        if mimetype != "application/json":
            shown = request.content_type or "none"
            raise ReviewError(f"Content-Type is {shown}; expected application/json")
        body = request.get_data(cache=False)
        if len(body) > MAX_BODY:
            raise RequestEntityTooLarge()
        return admission.load_json(body)

    def current_policy() -> tuple[Policy, Service, Service]:
        policy = holder.policy
        if policy.validate is None or policy.pin is None:
            # The API server may hand this body to whoever applied the object: the error
            # (file paths, rule text) is for the operator, in /readyz and the reload log line.
            raise _Unavailable("no valid rules are loaded; see /readyz or the webhook's log")
        return policy, policy.validate, policy.pin

    def answer(
        endpoint: str,
        outcome: str,
        started: float,
        body: object,
        extra: dict[str, object],
        fields: dict[str, object] | None = None,
        verdicts: Iterable[tuple[str, int]] = (),
    ) -> Response:
        """Count, log and send a review's answer: `body` is the document, or its JSON text;
        the log line has `extra` and then `fields` (the request's own); `verdicts` counts the
        images judged."""
        elapsed = clock() - started
        metrics.tally.review(endpoint, outcome, elapsed, verdicts)
        line = {"endpoint": endpoint, "outcome": outcome, "latencyMs": _tenths(elapsed * 1000)}
        line.update(extra)
        if fields is not None:
            line.update(fields)
        decisions.log_fields(logging.INFO, "decision", line)
        text = body if isinstance(body, str) else json.dumps(body)
        return app.response_class(text, status=200, mimetype="application/json")

    # Judged reviews, in half the memo budget (`cache.memoBytes`); the services they refer
    # to are not charged (the policy holds them anyway).
    judged: list[ByteMemo[tuple[object, ...], _Judged]] = [
        ByteMemo(max(16, settings.memo_bytes // 2), opaque=(Service,))
    ]
    judged_by: list[Policy | None] = [None]  # the policy whose services `judged` holds
    app.extensions["image_policy_judged"] = judged

    def forget_judged(policy: Policy) -> None:
        """Drop the judged reviews of an earlier policy (and the services they hold)."""
        if judged_by[0] is not policy:
            budget = max(16, policy.settings.memo_bytes // 2)
            if judged[0].max_bytes != budget:
                judged[0] = ByteMemo(budget, opaque=(Service,))
            judged[0].clear()
            judged_by[0] = policy

    def judge(
        service: Service,
        endpoint: str,
        review: admission.Request,
        sites: tuple[ImageSite, ...],
        pinning: bool,
        deadline: Deadline,
    ) -> _Judged:
        """The judged review: reused while the service's decisions for its items are the
        very same objects (see `_Judged`), else judged afresh and remembered."""
        key = (endpoint, review.api_version, review.namespace, sites)
        memo = judged[0]
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
        fresh = _judged(service, review, sites, pinning, deadline, decided)
        if not any(d.facts.errors for d in fresh.decisions):
            # (Decisions on failed facts are never handed out twice: not worth measuring.)
            memo.put(key, fresh)
        return fresh

    def admission_endpoint(endpoint: str) -> Response:
        started = clock()
        review = admission.parse_review(read_json())
        policy, validate, pin = current_policy()
        settings = policy.settings
        pinning = endpoint == "mutate" and settings.mutate_pin
        fields: dict[str, object] = {
            "uid": review.uid,
            "apiVersion": review.api_version,
            "operation": review.operation,
            "namespace": review.namespace,
            "kind": review.kind,
            "subResource": review.sub_resource or None,
            "name": review.name,
            "user": review.user,
            "dryRun": review.dry_run,
        }
        if review.namespace is not None and review.namespace in settings.exclude_namespaces:
            response = admission.allow(review.uid)
            envelope = admission.review_envelope(review, response)
            return answer(endpoint, "excluded", started, envelope, {"allowed": True}, fields)
        planned = admission.plan(
            review,
            recheck_unchanged=settings.recheck_unchanged,
            table=settings.workload_table,
        )
        if planned.problems:
            message = admission.problems_message(review.subject, planned.problems)
            response = admission.deny(review.uid, message)
            envelope = admission.review_envelope(review, response)
            problems = [str(p) for p in planned.problems]
            extra: dict[str, object] = {"allowed": False, "problems": problems}
            return answer(endpoint, "malformed", started, envelope, extra, fields)
        unchanged = [s.image for s in planned.unchanged]
        if len(planned.check) > settings.max_images:
            message = too_many_images(review.subject, len(planned.check), settings.max_images)
            envelope = admission.review_envelope(review, admission.deny(review.uid, message))
            extra = {"allowed": False, "tooManyImages": len(planned.check)}
            return answer(endpoint, "denied", started, envelope, extra, fields)
        if not planned.check:
            response = admission.allow(review.uid)
            envelope = admission.review_envelope(review, response)
            outcome = "skipped" if planned.skip_reason else "allowed"
            extra = {"allowed": True, "skipped": planned.skip_reason, "unchanged": unchanged}
            return answer(endpoint, outcome, started, envelope, extra, fields)
        deadline = Deadline(settings.decision_timeout, clock=clock)
        forget_judged(policy)
        service = pin if pinning else validate
        done = judge(service, endpoint, review, planned.check, pinning, deadline)
        extra = {
            "allowed": done.allowed,
            "images": done.findings,  # made into dicts by the log's writer thread
            "unchanged": unchanged,
            "patched": list(done.patched),
        }
        return answer(
            endpoint,
            "allowed" if done.allowed else "denied",
            started,
            done.head + json.dumps(review.uid) + done.tail,
            extra,
            fields,
            done.verdicts,
        )

    @app.post("/validate")
    def validate() -> Response:
        return admission_endpoint("validate")

    @app.post("/mutate")
    def mutate() -> Response:
        return admission_endpoint("mutate")

    @app.post("/imagereview")
    def imagereview() -> Response:
        started = clock()
        review = admission.parse_image_review(read_json())
        policy, validate, _ = current_policy()
        settings = policy.settings
        fields: dict[str, object] = {"namespace": review.namespace, "images": list(review.images)}
        glass = admission.break_glass(review.annotations) if settings.break_glass else {}
        if glass:
            status = admission.break_glass_status(review, glass)
            extra: dict[str, object] = {"allowed": True, "breakGlass": sorted(glass)}
            return answer(
                "imagereview", "break-glass", started, admission.image_review(status), extra, fields
            )
        if review.namespace is not None and review.namespace in settings.exclude_namespaces:
            reply = admission.image_review({"allowed": True})
            return answer("imagereview", "excluded", started, reply, {"allowed": True}, fields)
        if len(review.images) > settings.max_images:
            subject = f"a pod in namespace {review.namespace}" if review.namespace else "the pod"
            reason = too_many_images(subject, len(review.images), settings.max_images)
            fields["images"] = len(review.images)
            reply = admission.image_review({"allowed": False, "reason": reason})
            extra = {"allowed": False, "tooManyImages": len(review.images)}
            return answer("imagereview", "denied", started, reply, extra, fields)
        deadline = Deadline(settings.decision_timeout, clock=clock)
        findings = _judge(
            validate,
            [(image, f"container {i}", None) for i, image in enumerate(review.images)],
            review.namespace,
            deadline,
        )
        subject = f"a pod in namespace {review.namespace}" if review.namespace else "the pod"
        status = admission.image_review_status(findings, subject=subject)
        fields["images"] = tuple(findings)
        return answer(
            "imagereview",
            "allowed" if status["allowed"] else "denied",
            started,
            admission.image_review(status),
            {"allowed": status["allowed"]},
            fields,
            _verdicts(findings),
        )

    @app.get("/healthz")
    def healthz() -> Response:
        return app.response_class('{"status": "ok"}', mimetype="application/json")

    @app.get("/readyz")
    def readyz() -> Response:
        policy = holder.policy
        ready = policy.ruleset is not None
        body = {
            "ready": ready,
            "rules": policy.ruleset.name if policy.ruleset is not None else None,
            "ruleCount": len(policy.ruleset.rules) if policy.ruleset is not None else 0,
            "sources": list(policy.ruleset.sources) if policy.ruleset is not None else [],
            "rulesError": policy.rules_error,
            "settingsError": policy.settings_error,
            "degraded": degraded(policy.resolver),
        }
        shared = _shared_tier(policy.resolver)
        if shared is not None:
            # Reported, never a reason to be unready: without Redis each replica still answers.
            body["sharedCache"] = shared.state()
        return app.response_class(
            json.dumps(body), status=200 if ready else 503, mimetype="application/json"
        )

    def degraded(resolver: Resolver) -> dict[str, list[str]]:
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

    @app.get("/metrics")
    def metrics_endpoint() -> Response:
        return Response(generate_latest(metrics.registry), mimetype=CONTENT_TYPE_LATEST)

    def error(status: int, message: str) -> Response:
        return app.response_class(
            json.dumps({"error": message, "code": status}),
            status=status,
            mimetype="application/json",
        )

    @app.errorhandler(ReviewError)
    def bad_review(exc: ReviewError) -> Response:
        endpoint = (request.path or "/").strip("/") or "unknown"
        metrics.tally.count(endpoint, "bad_request")
        decisions.log(logging.WARNING, "bad_request", endpoint=endpoint, error=str(exc))
        return error(400, f"malformed review: {exc}")

    @app.errorhandler(_Unavailable)
    def unavailable(exc: _Unavailable) -> Response:
        endpoint = (request.path or "/").strip("/") or "unknown"
        metrics.tally.count(endpoint, "unavailable")
        return error(503, str(exc))

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        code = exc.code or 500
        if code == 413:
            return error(413, f"request body is larger than {MAX_BODY // (1024 * 1024)} MiB")
        return error(code, exc.description or exc.name)

    @app.errorhandler(Exception)
    def bug(exc: Exception) -> Response:
        endpoint = (request.path or "/").strip("/") or "unknown"
        metrics.tally.count(endpoint, "error")
        log.exception(json.dumps({"event": "internal_error", "endpoint": endpoint}))
        return error(500, "internal error; see the webhook's log")

    return app
