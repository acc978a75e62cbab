"""The webhook (Flask test client, real resolver, real distribution registries) facing hostile
registries and image strings: a token realm answering deep JSON denies its image with the reason
classified (the realm's failure in the decision log only) while the healthy image is judged as
usual (never a RecursionError, never a 500); made-up registry hosts share one metric label
instead of adding series."""

from __future__ import annotations

import ipaddress
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from policy import loader, web
from policy.settings import Settings
from tests.integration.conftest import SeededRegistry
from tests.support.registry import RunningRegistry, start_registry
from tests.support.reviews import pod_review
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
    return pod_review(*images, uid="deep-1", user="alice")


def test_a_realm_answering_deep_json_denies_its_image_and_judges_the_others(
    registry: SeededRegistry,
    deep_realm_registry: RunningRegistry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    logger = logging.getLogger(f"{web.LOGGER}.deep-realm")
    app = web.create_app(LOOPBACK, rules=loader.load_rules_text(RULES), logger=logger)
    client = app.test_client()
    healthy = f"{registry.host}/oci/app:single"
    hostile = f"{deep_realm_registry.host}/team/app:1"
    with caplog.at_level(logging.INFO, logger=logger.name):
        reply = client.post("/validate", json=review(healthy, hostile))
        app.extensions["image_policy_log"].flush()
    assert reply.status_code == 200, reply.get_data(as_text=True)
    response = reply.get_json()["response"]
    assert response["allowed"] is False
    message = response["status"]["message"]
    assert hostile in message
    assert "image manifest could not be fetched (registry authentication failed)" in message
    assert "JSON" not in message and "token realm" not in message  # the realm's words: logged
    assert healthy not in message  # two layers: the healthy image passes its rule
    assert not [r for r in caplog.records if "internal_error" in r.getMessage()]
    (line,) = [json.loads(r.getMessage()) for r in caplog.records if r.name == logger.name]
    assert line["uid"] == "deep-1"
    (denied,) = [i for i in line["images"] if not i["allowed"]]
    assert (
        "JSON nested 100000 levels deep, more than the limit of 64"
        in (denied["violations"][0]["detail"])
    )

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


LOOPBACK = Settings(egress_allow=(ipaddress.ip_network("127.0.0.0/8"),))
"""The webhook's settings with these tests' loopback registries allowed by the egress policy."""


def metric_series(client: Any) -> dict[str, float]:
    """`image_policy_registry_requests_total` by its `registry` label (summed over statuses)."""
    out: dict[str, float] = {}
    for line in client.get("/metrics").get_data(as_text=True).splitlines():
        if line.startswith("image_policy_registry_requests_total{"):
            labels, value = line.rsplit(" ", 1)
            registry = labels.split('registry="')[1].split('"')[0]
            out[registry] = out.get(registry, 0.0) + float(value)
    return out


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def own_rule(host: str) -> str:
    return f"""\
  - id: own-{host.replace(".", "-").replace(":", "-")}
    match: {{images: ["{host}/**"]}}
    require: {{maxLayers: 3}}
"""


def test_made_up_registry_hosts_share_one_metric_label(
    registry: SeededRegistry, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES + own_rule(registry.host))
    clock = Clock()
    client = web.create_app(LOOPBACK, rules=[rules], clock=clock).test_client()
    healthy = f"{registry.host}/oci/app:single"
    assert client.post("/validate", json=review(healthy)).get_json()["response"]["allowed"]
    before = metric_series(client)
    assert set(before) == {registry.host}  # a registry the rules name keeps its own label

    # 200 hosts nobody configured (loopback addresses with nothing listening), in 4 reviews.
    made_up = [f"127.1.{i // 100}.{i % 100 + 1}:9/app:1" for i in range(200)]
    for start in range(0, 200, 50):
        reply = client.post("/validate", json=review(*made_up[start : start + 50]))
        assert reply.status_code == 200
        assert reply.get_json()["response"]["allowed"] is False
    after = metric_series(client)
    assert set(after) - set(before) == {"other"}
    assert after["other"] >= 200  # every host was asked, and counted
    assert after[registry.host] == before[registry.host]

    # Once a reloaded rule names one of them, that host gets a label of its own.
    rules.write_text(RULES + own_rule(registry.host) + own_rule("127.1.0.1:9"))
    clock.now += 2
    assert client.post("/validate", json=review(made_up[0])).status_code == 200
    named = metric_series(client)
    assert set(named) == {registry.host, "other", "127.1.0.1:9"}
    assert named["other"] == after["other"]
