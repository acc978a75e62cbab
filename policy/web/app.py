"""The Flask app factory `create_app`: it wires the policy in force, the metrics, the decision
log and the judged-review memo, and routes each endpoint to the module doing its work
(`reviews`, `status`); errors are answered here (see the package docstring)."""

from __future__ import annotations

import functools
import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from flask import Flask, Response, request
from prometheus_client import CollectorRegistry
from werkzeug.exceptions import HTTPException

from policy import resolver as resolver_mod
from policy import settings as settings_mod
from policy.errors import PolicyError, ReviewError
from policy.rules import RuleSet
from policy.service import Resolver
from policy.settings import Settings
from policy.web import status
from policy.web.decisionlog import LOGGER, DecisionLog, _ensure_handler, _log
from policy.web.memo import JudgedMemo
from policy.web.metrics import Metrics, _ResolverCollector, _SharedCacheCollector
from policy.web.reload import PolicyHolder
from policy.web.reviews import MAX_BODY, Reviews, Unavailable, read_json

RULES_ENV = "IMAGE_POLICY_RULES"
RELOAD_INTERVAL = 1.0


def _utcnow() -> datetime:
    return datetime.now(UTC)


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
    fixed_rules, rule_paths = _rule_sources(rules, env)
    log = logger or logging.getLogger(LOGGER)
    if logger is None:
        _ensure_handler(log)
    decisions = DecisionLog(log)
    metrics = Metrics(CollectorRegistry())
    holder = PolicyHolder(
        settings=settings,
        settings_path=Path(settings.source) if settings.source else None,
        rules=fixed_rules,
        rule_paths=rule_paths,
        resolver=resolver,
        build_resolver=lambda chosen: resolver_mod.build(
            chosen, mode="webhook", on_request=metrics.on_request
        ),
        now=now,
        clock=clock,
        interval=reload_interval,
        on_reload=functools.partial(_reloaded, metrics, log),
    )
    _observe(metrics, holder)
    judged = JudgedMemo(settings.memo_bytes)
    reviews = Reviews(holder, metrics, decisions, judged, clock)

    app = Flask("policy.web")  # the package: its logger and name as before the split
    # One byte more than allowed: werkzeug refuses a larger Content-Length before reading, but
    # cuts a body without one (chunked) at this limit instead of refusing it, so `read_json`
    # reads one byte past MAX_BODY to tell such a body was too large.
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY + 1
    app.extensions["image_policy"] = holder
    app.extensions["image_policy_log"] = decisions
    app.extensions["image_policy_judged"] = judged.slot
    _route(app, reviews, holder, metrics)
    _answer_errors(app, metrics, decisions, log)
    return app


def _rule_sources(
    rules: RuleSet | Sequence[str | Path] | None, env: Mapping[str, str]
) -> tuple[RuleSet | None, list[Path]]:
    """The fixed rule set, or the rule files to (re)load: `rules` as given, else
    `$IMAGE_POLICY_RULES`; PolicyError when no rule file is named."""
    if isinstance(rules, RuleSet):
        return rules, []
    if rules is None:
        paths = [Path(p) for p in env.get(RULES_ENV, "").split(os.pathsep) if p.strip()]
        if not paths:
            raise PolicyError(f"no rule files: set ${RULES_ENV} or pass rules=")
        return None, paths
    if not rules:
        raise PolicyError("no rule files given")
    return None, [Path(p) for p in rules]


def _observe(metrics: Metrics, holder: PolicyHolder) -> None:
    """Metrics read from the policy in force: which registries have a label of their own, and
    the collectors of its resolver and shared cache tier."""
    metrics.named_registries = lambda: holder.current.named_registries
    metrics.registry.register(_ResolverCollector(holder.resolver, metrics.registry_label))
    metrics.registry.register(_SharedCacheCollector(holder.resolver))


def _route(app: Flask, reviews: Reviews, holder: PolicyHolder, metrics: Metrics) -> None:
    """Each endpoint to the module doing its work."""

    @app.post("/validate")
    def validate() -> Response:
        return reviews.admission_review("validate", read_json())

    @app.post("/mutate")
    def mutate() -> Response:
        return reviews.admission_review("mutate", read_json())

    @app.post("/imagereview")
    def imagereview() -> Response:
        return reviews.image_review(read_json())

    @app.get("/healthz")
    def healthz() -> Response:
        return status.healthz()

    @app.get("/readyz")
    def readyz() -> Response:
        return status.readyz(holder, metrics)

    @app.get("/metrics")
    def metrics_endpoint() -> Response:
        return status.metrics_page(metrics)


def _reloaded(
    metrics: Metrics, log: logging.Logger, file: str, result: str, error: str | None
) -> None:
    """Count and log a reload of a rule or settings file."""
    metrics.reloads.labels(file, result).inc()
    if error is None:
        _log(log, logging.INFO, "reload", file=file, result=result)
    else:
        _log(log, logging.ERROR, "reload", file=file, result=result, error=error)


def _answer_errors(
    app: Flask, metrics: Metrics, decisions: DecisionLog, log: logging.Logger
) -> None:
    """A bad review is answered 400, no rules 503, an HTTP error its own code, a bug 500
    (logged with its traceback); each as `{"error": ..., "code": ...}`."""

    def error(code: int, message: str) -> Response:
        body = json.dumps({"error": message, "code": code})
        return Response(body, status=code, mimetype="application/json")

    def endpoint() -> str:
        return (request.path or "/").strip("/") or "unknown"

    @app.errorhandler(ReviewError)
    def bad_review(exc: ReviewError) -> Response:
        metrics.tally.count(endpoint(), "bad_request")
        decisions.log(logging.WARNING, "bad_request", endpoint=endpoint(), error=str(exc))
        return error(400, f"malformed review: {exc}")

    @app.errorhandler(Unavailable)
    def unavailable(exc: Unavailable) -> Response:
        metrics.tally.count(endpoint(), "unavailable")
        return error(503, str(exc))

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        code = exc.code or 500
        if code == 413:
            return error(413, f"request body is larger than {MAX_BODY // (1024 * 1024)} MiB")
        return error(code, exc.description or exc.name)

    @app.errorhandler(Exception)
    def bug(exc: Exception) -> Response:
        metrics.tally.count(endpoint(), "error")
        log.exception(json.dumps({"event": "internal_error", "endpoint": endpoint()}))
        return error(500, "internal error; see the webhook's log")
