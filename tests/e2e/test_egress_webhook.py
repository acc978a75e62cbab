"""The egress policy end to end: `image-policy serve` (real gunicorn over TLS) with its
shipped defaults never connects to a destination the policy refuses, however the image string
spells it — counted by a loopback listener — while a configured loopback registry still works."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import CA, OPEN_RULES, Seeded, Webhook, start_webhook
from tests.support.reviews import pod_review
from tests.support.trickle import Counting

pytestmark = pytest.mark.registry


@pytest.fixture(scope="module")
def listener() -> Iterator[Counting]:
    with Counting() as counting:
        yield counting


@pytest.fixture(scope="module")
def hook(tmp_path_factory: pytest.TempPathFactory, ca: CA, registry: Seeded) -> Iterator[Webhook]:
    """The webhook with no egress settings at all (the defaults), its rules open to any image,
    and the test registry configured (so allowed on its port only)."""
    webhook = start_webhook(
        tmp_path_factory.mktemp("egress"),
        ca,
        OPEN_RULES,
        settings=f"registries:\n  {registry.host}: {{}}\n",
        loopback_egress=False,
    )
    try:
        yield webhook
    finally:
        webhook.stop()


def review(*images: str) -> dict[str, Any]:
    return pod_review(*images, uid="egress-1", user="mallory")


SPELLINGS = [
    "127.0.0.1:{port}/probe/x:1",
    "localhost:{port}/probe/x:1",
    "127.1:{port}/probe/x:1",
    "2130706433:{port}/probe/x:1",
    "0x7f000001:{port}/probe/x:1",
    "[::ffff:7f00:1]:{port}/probe/x:1",
]


def test_no_spelling_of_a_refused_destination_gets_a_connection(
    hook: Webhook, listener: Counting, registry: Seeded
) -> None:
    images = [s.format(port=listener.port) for s in SPELLINGS]
    response = hook.post("/validate", review(*images))["response"]
    assert response["allowed"] is False
    message = response["status"]["message"]
    for image in images:
        assert image in message
    assert message.count("egress policy") >= len(images), message
    assert listener.connections == 0
    # The configured registry on the same address, another port: reached and judged.
    allowed = hook.post("/validate", review(registry.ref("team/app")))["response"]
    assert allowed["allowed"] is True, allowed
    assert listener.connections == 0
