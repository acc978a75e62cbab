"""Pod-facing answers are classified, not quoted (issue 15): the webhook's AdmissionReview
(status message, warnings, audit annotations) and ImageReview tell why a fact could not be
fetched by its class alone, while the decision log line of the review (with its uid) has the
upstream's words, the host and the errno.

The real resolver and registry client run on a `requests.Session` whose transport is a test
adapter answering for each registry host as a hostile or broken upstream would: nothing
leaves the process.
"""

from __future__ import annotations

import io
import json
import logging
import ssl
from collections.abc import Iterator
from types import MappingProxyType
from typing import Any

import pytest
import requests
import urllib3
from flask.testing import FlaskClient

from policy import loader, web
from policy import resolver as resolver_mod
from policy.settings import RegistrySettings, Settings
from tests.support.hostile import METADATA_REALM
from tests.support.reviews import pod_review

UID = "c1a551f1-ed00-4b1d-9000-000000000015"
LEAK = "internal-admin v3.2; db=postgres://10.0.0.7"
SECRETS = (
    "internal-admin",
    "postgres",
    "10.0.0.7",
    "169.254",
    "realm",
    "Errno",
    "refused",
    "timed out",
    "TLS",
)

RULES = """\
apiVersion: image-policy/v1
kind: RuleSet
metadata: {name: classified}
defaults: {onResolveError: deny, platforms: ["linux/amd64"]}
rules:
  - id: few-layers
    match: {images: ["**"]}
    require: {maxLayers: 5}
  - id: non-root
    match: {images: ["**"]}
    require: {nonRootUser: true}
    action: warn
  - id: small
    match: {images: ["**"]}
    require: {maxSize: 1GiB}
    action: audit
"""


def _errors_body(code: str) -> bytes:
    return json.dumps({"errors": [{"code": code, "message": LEAK}]}).encode()


# host → (status, headers, body) answered to every request, or an exception raised.
ANSWERS: dict[str, tuple[int, dict[str, str], bytes] | Exception] = {
    "127.0.0.1:5500": (500, {}, _errors_body("X")),
    "127.0.0.1:5503": (503, {}, _errors_body("UNAVAILABLE")),
    "127.0.0.1:5418": (418, {}, _errors_body("TEAPOT")),
    "127.0.0.1:5404": (404, {}, _errors_body("MANIFEST_UNKNOWN")),
    "127.0.0.1:5401": (401, {"WWW-Authenticate": 'Basic realm="x"'}, _errors_body("UNAUTHORIZED")),
    "127.0.0.1:5403": (403, {}, _errors_body("DENIED")),
    # A token realm on the metadata address: refused before anything is sent there.
    "127.0.0.1:5402": (
        401,
        {"WWW-Authenticate": f'Bearer realm="{METADATA_REALM}",service="x"'},
        _errors_body("UNAUTHORIZED"),
    ),
    "127.0.0.1:5429": (429, {}, _errors_body("TOOMANYREQUESTS")),
    "127.0.0.1:5200": (200, {"Content-Type": "application/json"}, b'{"schemaVersion": 2'),
    "127.0.0.1:5111": requests.ConnectionError(ConnectionRefusedError(111, "Connection refused")),
    "127.0.0.1:5110": requests.ConnectTimeout("10.0.0.7:5432 timed out"),
}


def _tls_failure() -> requests.exceptions.SSLError:
    error = ssl.SSLCertVerificationError(1, "certificate verify failed")
    error.verify_message = "certificate is not valid for '10.0.0.7'"
    return requests.exceptions.SSLError(error)


ANSWERS["127.0.0.1:5112"] = _tls_failure()

# host → what a pod author is told, and what the operator reads in the log's detail.
CASES = [
    ("127.0.0.1:5500", "registry answered an error (HTTP 500)", f"answered HTTP 500: X: {LEAK}"),
    ("127.0.0.1:5503", "registry answered an error (HTTP 503)", f"HTTP 503: UNAVAILABLE: {LEAK}"),
    ("127.0.0.1:5418", "registry answered an error (HTTP 418)", f"HTTP 418: TEAPOT: {LEAK}"),
    (
        "127.0.0.1:5404",
        "image not found",
        f"unknown: 127.0.0.1:5404/team/app:1: MANIFEST_UNKNOWN: {LEAK}",
    ),
    ("127.0.0.1:5401", "registry authentication failed", "requires authentication"),
    ("127.0.0.1:5403", "registry authentication failed", f"(HTTP 403): DENIED: {LEAK}"),
    ("127.0.0.1:5402", "registry authentication failed", "refusing token realm 169.254.169.254"),
    ("127.0.0.1:5429", "rate limited by the registry", "pull rate limit reached"),
    ("127.0.0.1:5200", "registry answered something invalid", "127.0.0.1:5200"),
    ("127.0.0.1:5111", "registry unreachable", "cannot reach 127.0.0.1:5111: connection refused"),
    ("127.0.0.1:5110", "registry unreachable", "cannot reach 127.0.0.1:5110: timed out"),
    ("127.0.0.1:5112", "registry unreachable", "TLS certificate verification failed"),
]


class HostileTransport(requests.adapters.BaseAdapter):
    """Answers each request from ANSWERS by its host; records the hosts asked."""

    def __init__(self) -> None:
        super().__init__()
        self.hosts: list[str] = []

    def send(self, request: requests.PreparedRequest, **kwargs: object) -> requests.Response:  # type: ignore[override]
        host = urllib3.util.parse_url(request.url or "").netloc or ""
        self.hosts.append(host)
        answer = ANSWERS[host]
        if isinstance(answer, Exception):
            raise answer
        status, headers, body = answer
        response = requests.Response()
        response.status_code = status
        response.url = request.url or ""
        response.headers.update({"Content-Length": str(len(body)), **headers})
        response.raw = urllib3.HTTPResponse(
            body=io.BytesIO(body), status=status, headers=response.headers, preload_content=False
        )
        response.request = request
        return response

    def close(self) -> None:
        return


@pytest.fixture
def transport() -> HostileTransport:
    return HostileTransport()


@pytest.fixture
def app_and_log(transport: HostileTransport) -> Iterator[tuple[FlaskClient, list[dict[str, Any]]]]:
    session = requests.Session()
    session.trust_env = False
    session.mount("http://", transport)
    session.mount("https://", transport)
    # Every host is a registry the operator named: the answers are the registries' own.
    settings = Settings(
        registries=MappingProxyType({host: RegistrySettings() for host in ANSWERS}),
        exclude_namespaces=(),
    )
    resolver = resolver_mod.build(settings, session=session)
    logger = logging.getLogger(f"{web.LOGGER}.classified")
    logger.propagate = False
    lines: list[dict[str, Any]] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(json.loads(record.getMessage()))

    handler = Collect()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    app = web.create_app(
        settings, rules=loader.load_rules_text(RULES), resolver=resolver, logger=logger
    )
    try:
        yield app.test_client(), lines
    finally:
        app.extensions["image_policy_log"].flush()
        logger.removeHandler(handler)
        resolver.close()
        session.close()


def admission_review(*images: str) -> dict[str, Any]:
    return pod_review(*images, uid=UID, user="mallory", pod_name="probe")


def _flushed(client: FlaskClient, lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    client.application.extensions["image_policy_log"].flush()
    return [line for line in lines if line.get("event") == "decision"]


@pytest.mark.parametrize(("host", "told", "detail"), CASES, ids=[c[0] for c in CASES])
def test_the_admission_answer_has_the_class_and_the_log_the_detail(
    app_and_log: tuple[FlaskClient, list[dict[str, Any]]],
    transport: HostileTransport,
    host: str,
    told: str,
    detail: str,
) -> None:
    client, lines = app_and_log
    image = f"{host}/team/app:1"
    reply = client.post("/validate", json=admission_review(image))
    assert reply.status_code == 200
    text = reply.get_data(as_text=True)
    assert host in transport.hosts  # the upstream was really asked
    response = json.loads(text)["response"]
    assert response["allowed"] is False
    # Every pod-facing field: the denial, the warning and the audit annotation.
    message = response["status"]["message"]
    assert f"cannot check {image}: image manifest could not be fetched ({told}); " in message
    assert response["warnings"] == [
        f"{image}: non-root: cannot check {image}: image config could not be fetched "
        f"({told}); onResolveError is deny"
    ]
    assert list(response["auditAnnotations"].values()) == [
        f"{image}: cannot check {image}: image manifest could not be fetched ({told}); "
        "onResolveError is deny"
    ]
    assert not [secret for secret in SECRETS if secret in text], text
    if "(HTTP" not in told:
        assert "HTTP" not in text
    # The operator's detail, in the decision line of this very review.
    (line,) = _flushed(client, lines)
    assert line["uid"] == UID and line["allowed"] is False
    violations = line["images"][0]["violations"]
    assert [v["rule"] for v in violations] == ["few-layers", "non-root", "small"]
    assert all(detail in v["detail"] for v in violations), violations
    assert all(v["message"] in text for v in violations)


def test_the_image_review_has_the_class_and_the_log_the_detail(
    app_and_log: tuple[FlaskClient, list[dict[str, Any]]],
) -> None:
    client, lines = app_and_log
    images = [f"{host}/team/app:1" for host, _, _ in CASES]
    doc = {
        "apiVersion": "imagepolicy.k8s.io/v1alpha1",
        "kind": "ImageReview",
        "spec": {"containers": [{"image": i} for i in images], "namespace": "dev"},
    }
    reply = client.post("/imagereview", json=doc)
    assert reply.status_code == 200
    text = reply.get_data(as_text=True)
    status = json.loads(text)["status"]
    assert status["allowed"] is False
    for (_, told, _), image in zip(CASES, images, strict=True):
        assert (
            f"cannot check {image}: image manifest could not be fetched ({told})"
            in (status["reason"])
        )
    assert not [secret for secret in SECRETS if secret in text], text
    (line,) = _flushed(client, lines)
    details = {i["image"]: i["violations"][0]["detail"] for i in line["images"]}
    for (_, _, detail), image in zip(CASES, images, strict=True):
        assert detail in details[image]


def test_a_denial_reused_for_the_next_review_stays_classified(
    app_and_log: tuple[FlaskClient, list[dict[str, Any]]],
) -> None:
    """The judged-review memo hands back the encoded answer: still the class alone, while each
    review's own log line has the detail."""
    client, lines = app_and_log
    doc = admission_review("127.0.0.1:5500/team/app:1")
    texts = [client.post("/validate", json=doc).get_data(as_text=True) for _ in range(2)]
    assert texts[0] == texts[1]
    assert LEAK not in texts[1]
    logged = _flushed(client, lines)
    assert len(logged) == 2
    assert all(LEAK in v["detail"] for line in logged for v in line["images"][0]["violations"])


def test_the_pinning_webhook_answers_classified_too(transport: HostileTransport) -> None:
    """/mutate resolves to pin before it judges: its denial is classified the same way."""
    session = requests.Session()
    session.mount("http://", transport)
    settings = Settings(
        registries=MappingProxyType({"127.0.0.1:5500": RegistrySettings()}),
        exclude_namespaces=(),
        mutate_pin=True,
    )
    resolver = resolver_mod.build(settings, session=session)
    try:
        app = web.create_app(settings, rules=loader.load_rules_text(RULES), resolver=resolver)
        reply = app.test_client().post(
            "/mutate", json=admission_review("127.0.0.1:5500/team/app:1")
        )
        text = reply.get_data(as_text=True)
        response = json.loads(text)["response"]
        assert response["allowed"] is False
        assert "(registry answered an error (HTTP 500))" in response["status"]["message"]
        assert LEAK not in text and "patch" not in response
    finally:
        resolver.close()
        session.close()
