"""The webhook app on a password-protected real Redis: /readyz reports the shared cache's
state (ok, down) and stays ready, /metrics counts its lookups, and neither they nor the log
ever show the password — with the right one or a wrong one."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from policy import web
from policy.settings import load_settings
from tests.support.redisserver import start_redis
from tests.support.registry import SeededRegistry
from tests.support.reviews import pod_review

pytestmark = pytest.mark.registry

SECRET = "p4ssw0rd-redis-8675309"
RULES = """\
apiVersion: image-policy/v1
kind: RuleSet
metadata: {name: shared-web}
defaults: {action: deny, onResolveError: deny, unmatched: deny}
rules:
  - id: few-layers
    match: {images: ["**"]}
    require: {maxLayers: 5}
"""


@pytest.mark.parametrize(
    ("given", "states"), [(SECRET, {"ok"}), ("wrong-" + SECRET, {"down", "breaker-open"})]
)
def test_readyz_metrics_and_log_report_the_tier_never_its_password(
    registry: SeededRegistry,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    given: str,
    states: set[str],
) -> None:
    running = start_redis(tmp_path / "redis", password=SECRET)
    try:
        (tmp_path / "rules.yaml").write_text(RULES)
        (tmp_path / "redis-password").write_text(given + "\n")
        config = tmp_path / "settings.yaml"
        config.write_text(
            f"cache: {{shared: {{url: '{running.url}', passwordFile: redis-password,"
            " timeouts: {command: 1s}}}\n"
            "egress: {allow: ['127.0.0.0/8']}\n"
        )
        logger = logging.getLogger("policy.web.test-shared")
        app = web.create_app(
            load_settings(config, env={}), rules=[tmp_path / "rules.yaml"], logger=logger
        )
        client = app.test_client()
        with caplog.at_level(logging.DEBUG):
            review = pod_review(f"{registry.host}/oci/app:single")
            reply = client.post("/validate", json=review)
            assert reply.status_code == 200
            assert reply.get_json()["response"]["allowed"] is True  # with Redis or without
            ready = client.get("/readyz")
            metrics = client.get("/metrics").get_data(as_text=True)
        assert ready.status_code == 200
        state = ready.get_json()["sharedCache"]
        assert state in states
        lookups = [
            line
            for line in metrics.splitlines()
            if line.startswith("image_policy_shared_cache_lookups_total")
        ]
        assert lookups, metrics
        assert f'image_policy_shared_cache_state{{state="{state}"}} 1.0' in metrics
        errors = [
            line
            for line in metrics.splitlines()
            if line.startswith("image_policy_shared_cache_errors_total ")
        ]
        assert (float(errors[0].split()[1]) > 0) == (state != "ok")
        for text in (ready.get_data(as_text=True), metrics, caplog.text):
            assert SECRET not in text
    finally:
        running.stop()
