"""Hostile JSON from a token realm reaches the webhook (Flask test client, real resolver, real
distribution registries): the review is answered 200, the hostile image denied with the reason,
the healthy image judged as usual — never a RecursionError, never a 500."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from policy import loader, web
from policy.settings import Settings
from tests.integration.conftest import SeededRegistry
from tests.support.registry import RunningRegistry, start_registry
from tests.support.tokenserver import RecordedRequest, Reply, TokenServer

pytestmark = pytest.mark.registry

DEEP = b"[" * 100_000 + b"]" * 100_000

RULES = """
apiVersion: image-policy/v1
kind: RuleSet
defaults: {onResolveError: deny, platforms: ["linux/amd64"]}
rules:
  - id: few-layers
    match: {images: ["**"]}
    require: {maxLayers: 5}
"""


def deep_token(request: RecordedRequest) -> Reply | None:
    if request.path == "/token":
        return 200, {"Content-Type": "application/json"}, DEEP
    return None


@pytest.fixture(scope="module")
def deep_realm_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    """A registry whose token realm answers 100,000 nested brackets instead of a token."""
    root = tmp_path_factory.mktemp("deep-realm")
    with TokenServer(root / "tokens", respond=deep_token) as tokens:
        running = start_registry(root / "registry", auth=tokens.auth_config())
        try:
            yield running
        finally:
            running.stop()


def review(*images: str) -> dict[str, Any]:
    containers = [{"name": f"c{i}", "image": image} for i, image in enumerate(images)]
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "deep-1",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "dev",
            "operation": "CREATE",
            "userInfo": {"username": "alice"},
            "object": {"kind": "Pod", "spec": {"containers": containers}},
        },
    }


def test_a_realm_answering_deep_json_denies_its_image_and_judges_the_others(
    registry: SeededRegistry,
    deep_realm_registry: RunningRegistry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = web.create_app(Settings(), rules=loader.load_rules_text(RULES))
    client = app.test_client()
    healthy = f"{registry.host}/oci/app:single"
    hostile = f"{deep_realm_registry.host}/team/app:1"
    with caplog.at_level(logging.ERROR, logger=web.LOGGER):
        reply = client.post("/validate", json=review(healthy, hostile))
    assert reply.status_code == 200, reply.get_data(as_text=True)
    response = reply.get_json()["response"]
    assert response["allowed"] is False
    message = response["status"]["message"]
    assert hostile in message
    assert "JSON nested 100000 levels deep, more than the limit of 64" in message
    assert healthy not in message  # two layers: the healthy image passes its rule
    assert not [r for r in caplog.records if "internal_error" in r.getMessage()]

    # The same image alone, and the healthy one alone: the service keeps answering.
    assert client.post("/validate", json=review(healthy)).get_json()["response"]["allowed"]
    alone = client.post("/validate", json=review(hostile))
    assert alone.status_code == 200
    assert alone.get_json()["response"]["allowed"] is False


def test_the_token_server_fixture_really_answers_deep_json(
    deep_realm_registry: RunningRegistry,
) -> None:
    """Guards the test above against passing for another reason (the realm is really asked)."""
    challenge = requests.get(f"{deep_realm_registry.url}/v2/", timeout=5)
    assert challenge.status_code == 401
    realm = challenge.headers["WWW-Authenticate"].split('realm="')[1].split('"')[0]
    assert requests.get(realm, timeout=5).content == DEEP
