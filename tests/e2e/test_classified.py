"""Real gunicorn over TLS (`image-policy serve`): what a pod author gets back is the class of a
registry failure, never the upstream's words, the port's state or the errno — those are in the
decision log line with the review's uid (issue 15).

A loopback registry answering HTTP 500 with `X: internal-admin v3.2; db=postgres://10.0.0.7`,
and a loopback port nobody listens on (the port-scan oracle: "connection refused" against
"timed out" against "answered"), both named in the settings as registries.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import CA, Webhook, start_webhook
from tests.support.hostile import LEAKY_MESSAGE, HostileServer
from tests.support.reviews import pod_review

RULES = """\
apiVersion: image-policy/v1
kind: RuleSet
metadata: {name: classified}
defaults: {action: deny, onResolveError: deny, platforms: ["linux/amd64"]}
rules:
  - id: few-layers
    match: {images: ["**"]}
    require: {maxLayers: 5}
  - id: non-root
    match: {images: ["**"]}
    require: {nonRootUser: true}
    action: warn
"""


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.fixture(scope="module")
def leaky() -> Iterator[HostileServer]:
    with HostileServer() as server:
        yield server


@pytest.fixture(scope="module")
def closed() -> str:
    return f"127.0.0.1:{_closed_port()}"


@pytest.fixture(scope="module")
def hook(
    tmp_path_factory: pytest.TempPathFactory, ca: CA, leaky: HostileServer, closed: str
) -> Iterator[Webhook]:
    settings = (
        "registries:\n"
        f'  "{leaky.host}": {{}}\n'
        f'  "{closed}": {{}}\n'
        "timeouts: {decision: 4s, request: 2s}\n"
    )
    webhook = start_webhook(
        tmp_path_factory.mktemp("classified"), ca, RULES, settings=settings, workers=1
    )
    try:
        yield webhook
    finally:
        webhook.stop()


def _review(uid: str, image: str) -> dict[str, Any]:
    return pod_review(image, uid=uid, user="mallory")


def _ask(hook: Webhook, uid: str, image: str) -> tuple[str, dict[str, Any]]:
    """The AdmissionReview answer's raw text and its response."""
    with hook.session() as s, s.post(f"{hook.url}/validate", json=_review(uid, image)) as r:
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["response"]["uid"] == uid
        return r.text, body["response"]


def test_a_500_bodys_text_never_reaches_the_admission_answer(
    hook: Webhook, leaky: HostileServer
) -> None:
    image = f"{leaky.host}/leaky:1"
    text, response = _ask(hook, "uid-leaky-500", image)
    assert [s.path for s in leaky.requests() if s.path.startswith("/v2/leaky/")]  # asked
    assert response["allowed"] is False
    assert (
        f"cannot check {image}: image manifest could not be fetched "
        "(registry answered an error (HTTP 500)); onResolveError is deny"
    ) in response["status"]["message"]
    assert response["warnings"] == [
        f"{image}: non-root: cannot check {image}: image config could not be fetched "
        "(registry answered an error (HTTP 500)); onResolveError is deny"
    ]
    for word in ("internal-admin", "v3.2", "postgres", "10.0.0.7", "X:"):
        assert word not in text, text
    line = hook.decision_line("uid-leaky-500")
    violations = line["images"][0]["violations"]
    assert [v["rule"] for v in violations] == ["few-layers", "non-root"]
    for v in violations:
        assert f"answered HTTP 500: X: {LEAKY_MESSAGE}" in v["detail"]
        assert v["message"] in text
    # Only decision lines, each tied to its review by the uid, hold the upstream's words.
    logged = [json.loads(t) for t in hook.log().splitlines() if LEAKY_MESSAGE in t]
    assert logged and all(d["event"] == "decision" and d["uid"] for d in logged), logged


def test_a_closed_port_is_only_unreachable(hook: Webhook, closed: str) -> None:
    image = f"{closed}/team/app:1"
    text, response = _ask(hook, "uid-closed-port", image)
    assert response["allowed"] is False
    message = response["status"]["message"]
    assert (
        f"cannot check {image}: image manifest could not be fetched (registry unreachable); "
        "onResolveError is deny"
    ) in message
    # Nothing about the port but the image text the pod author wrote, nor how it failed.
    port = closed.split(":")[1]
    assert port not in text.replace(image, "")
    for word in ("refused", "Errno", "111", "cannot reach", "timed out", "reset"):
        assert word not in text, text
    line = hook.decision_line("uid-closed-port")
    (denial, _warning) = line["images"][0]["violations"]
    assert f"cannot reach {closed}: connection refused" in denial["detail"]
