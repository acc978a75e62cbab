"""The ceiling of the webhook's stack: a Flask app answering every review with one constant
allowed AdmissionReview, served by the same gunicorn settings as the webhook.

    IMAGE_POLICY_TLS_CERT=... IMAGE_POLICY_TLS_KEY=... \\
        gunicorn -c deploy/gunicorn.conf.py 'bench.trivial_app:create_app()'

It reads the request body (as any webhook must) and does nothing else: no parsing, no
logging, no metrics. Benchmark 1 compares the webhook's throughput with this app's.
"""

from __future__ import annotations

import json

from flask import Flask, Response, request

ANSWER = json.dumps(
    {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {"uid": "constant", "allowed": True},
    }
)


def create_app() -> Flask:
    """A Flask app: `POST /validate` answers ANSWER, `GET /readyz` and `/healthz` answer ok."""
    app = Flask(__name__)

    @app.post("/validate")
    def validate() -> Response:
        request.get_data(cache=False)
        return app.response_class(ANSWER, status=200, mimetype="application/json")

    @app.get("/readyz")
    @app.get("/healthz")
    def ready() -> Response:
        return app.response_class('{"status": "ok"}', mimetype="application/json")

    return app
