"""The webhook's HTTP edge (the only package importing flask): `create_app()` builds a Flask app.

Endpoints: `POST /validate`, `POST /mutate` (AdmissionReview v1/v1beta1), `POST /imagereview`
(ImagePolicyWebhook), `GET /healthz`, `GET /readyz`, `GET /metrics` (Prometheus, one
`CollectorRegistry` per app).

Every review goes through `policy.service.Service`, the pipeline the CLI uses too. A malformed
request is answered 400 with a message saying what is wrong (413 for a body over 3 MiB, whether
sent with a Content-Length or chunked); only a bug gives a 500, logged with its traceback. One
JSON log line per decision.

Rule and settings files are re-read when they change (checked at most once per second, on
request): a broken new file is refused, the old policy keeps serving, and the error is logged,
counted in metrics and shown by `/readyz` (which stays ready as long as valid rules are loaded,
so one bad ConfigMap update cannot take every replica out of the Service at once).

`gunicorn 'policy.web:create_app()'` works: settings come from `$IMAGE_POLICY_CONFIG` and the
rule files from `$IMAGE_POLICY_RULES` (paths separated by `os.pathsep`).

Its rooms: `app` (the factory: wiring, routes, error answers), `reviews` (the review
endpoints: read, judge, answer, count, log), `status` (/healthz, /readyz, /metrics), `reload`
(the policy in force and its reloads), `metrics` (Prometheus collectors), `decisionlog` (the
decision log and its writer thread), `memo` (judging image sites and the judged-review memo).
The names below are re-exported for `gunicorn 'policy.web:create_app()'` and for scripts and
tests that use them.
"""

from prometheus_client import CollectorRegistry

from policy.errors import PolicyError
from policy.web.app import RELOAD_INTERVAL, RULES_ENV, create_app
from policy.web.decisionlog import LOGGER, DecisionLog, _LinesHandler
from policy.web.memo import too_many_images
from policy.web.metrics import LATENCY_BUCKETS, Metrics, _ReviewTally, pressure_by_label
from policy.web.reload import (
    OTHER_REGISTRY,
    KnowingResolver,
    ObservableResolver,
    Policy,
    PolicyHolder,
    PressuredResolver,
    named_registries,
)
from policy.web.reviews import MAX_BODY

__all__ = [
    "LATENCY_BUCKETS",
    "LOGGER",
    "MAX_BODY",
    "OTHER_REGISTRY",
    "RELOAD_INTERVAL",
    "RULES_ENV",
    "CollectorRegistry",
    "DecisionLog",
    "KnowingResolver",
    "Metrics",
    "ObservableResolver",
    "Policy",
    "PolicyError",
    "PolicyHolder",
    "PressuredResolver",
    "_LinesHandler",
    "_ReviewTally",
    "create_app",
    "named_registries",
    "pressure_by_label",
    "too_many_images",
]
