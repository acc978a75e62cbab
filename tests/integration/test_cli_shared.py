"""The CLI on the shared tier (`--config` with `cache.shared`): a second CI runner, with no
disk cache of its own, asks the registry nothing the first one asked."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from policy import cli
from tests.support.proxy import CountingProxy
from tests.support.redisserver import RunningRedis
from tests.support.relay import LatencyRelay

pytestmark = pytest.mark.registry

RULES = """
apiVersion: image-policy/v1
kind: RuleSet
defaults: {platforms: ["*"]}
rules:
  - id: non-root
    match: {images: ["**"]}
    require: {nonRootUser: true, maxLayers: 5}
"""


def test_a_second_runner_reads_the_first_runners_answers_from_redis(
    counting_proxy: CountingProxy | LatencyRelay, redis_server: RunningRedis, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    config = tmp_path / "settings.yaml"
    config.write_text(
        f"cache: {{shared: {{url: '{redis_server.url}', timeouts: {{command: 1s}}}}}}\n"
    )
    argv = ["check", "--rules", str(rules), "--config", str(config), "--format", "json"]
    for image in ("docker/app:multi", "oci/app:single"):
        argv += ["--image", f"{counting_proxy.host}/{image}"]

    def run(runner: str) -> object:
        out = io.StringIO()
        cache = ["--cache-dir", str(tmp_path / runner)]
        assert cli.main([*argv, *cache], out=out, err=io.StringIO()) == 0
        return json.loads(out.getvalue())

    first = run("runner-1")
    assert counting_proxy.total() == 7  # index, 2 children, 2 configs; 1 manifest, 1 config
    counting_proxy.reset()
    assert run("runner-2") == first
    assert counting_proxy.total() == 0
    with redis_server.client() as client:
        assert client.keys("image-policy:tag:*") != []
