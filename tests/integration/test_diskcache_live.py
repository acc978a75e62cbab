"""The CLI's disk cache against the real registry: a second CI run makes no manifest or config
GETs for known digests, and tags are revalidated by HEAD once their TTL has passed."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import requests

from policy import cli
from policy.deadline import Deadline
from policy.diskcache import DiskCache
from policy.facts import Needs
from policy.reference import Reference
from policy.registry.client import RegistryClient
from policy.resolver import RegistryResolver
from tests.support.proxy import CountingProxy

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


def by_method(proxy: CountingProxy) -> dict[str, int]:
    out: dict[str, int] = {}
    for (method, _), n in proxy.counts().items():
        out[method] = out.get(method, 0) + n
    return out


def test_second_cli_run_makes_no_manifest_or_config_gets(
    counting_proxy: CountingProxy, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    argv = ["check", "--rules", str(rules), "--format", "json", "--cache-dir", str(tmp_path / "c")]
    for image in ("docker/app:multi", "oci/app:multi", "oci/app:single"):
        argv += ["--image", f"{counting_proxy.host}/{image}"]

    out = io.StringIO()
    assert cli.main(argv, out=out, err=io.StringIO()) == 0
    first = json.loads(out.getvalue())
    # Tags never seen: no HEAD. GETs: 2 indexes by tag + 4 children + 4 configs, and 1 manifest
    # by tag + 1 config.
    assert by_method(counting_proxy) == {"GET": 12}

    counting_proxy.reset()
    out = io.StringIO()
    assert cli.main(argv, out=out, err=io.StringIO()) == 0
    assert json.loads(out.getvalue()) == first
    assert counting_proxy.total() == 0  # tags inside their TTL, everything else by digest

    counting_proxy.reset()
    out = io.StringIO()
    assert cli.main([*argv, "--no-cache"], out=out, err=io.StringIO()) == 0
    assert by_method(counting_proxy) == {"GET": 12}


def resolve_with_disk(
    reference: Reference, needs: Needs, tmp_path: Path, now: list[float], tag_ttl: float
) -> None:
    """One fresh resolver (a new process, as far as caching goes) over the disk cache in
    `tmp_path` at wall-clock time `now[0]`; the image resolves without errors."""
    session = requests.Session()
    resolver = RegistryResolver(
        RegistryClient(session, authenticator=None),
        tag_ttl=tag_ttl,
        disk=DiskCache(tmp_path, wall_clock=lambda: now[0]),
    )
    try:
        [facts] = resolver.resolve([(reference, needs)], deadline=Deadline(10))
        assert facts.errors == {}
    finally:
        resolver.close()
        session.close()


def test_tags_are_revalidated_by_head_after_the_ttl(
    counting_proxy: CountingProxy, tmp_path: Path
) -> None:
    now = [1_700_000_000.0]
    needs = Needs(digest=True, manifest=True, config=True, select=("*",))
    reference = Reference(counting_proxy.host, "docker/app", "multi")

    def run() -> None:
        resolve_with_disk(reference, needs, tmp_path, now, tag_ttl=300)

    run()
    assert by_method(counting_proxy) == {"GET": 5}  # index by tag, 2 manifests, 2 configs
    counting_proxy.reset()
    now[0] += 299
    run()
    assert counting_proxy.total() == 0
    now[0] += 2
    run()
    assert by_method(counting_proxy) == {"HEAD": 1}


def test_a_tag_ttl_over_a_day_is_honoured_from_disk(
    counting_proxy: CountingProxy, tmp_path: Path
) -> None:
    """The tags the resolver remembers past their freshness (a day) never cut a longer TTL."""
    now = [1_700_000_000.0]
    needs = Needs(digest=True, manifest=True, select=("*",))
    reference = Reference(counting_proxy.host, "oci/app", "single")

    def run() -> None:
        resolve_with_disk(reference, needs, tmp_path, now, tag_ttl=48 * 3600)

    run()
    assert by_method(counting_proxy) == {"GET": 1}
    counting_proxy.reset()
    now[0] += 30 * 3600  # older than a day, still inside the 48 h TTL: no request
    run()
    assert counting_proxy.total() == 0
