"""Docker Hub tier lookups against a loopback stand-in for the Hub API (`tests.support.hubserver`):
request counts proving the per-namespace cache and coalescing, the documented badges, errors and
timeouts, catalog precedence, and the `tier` check end to end through `image-policy`."""

from __future__ import annotations

import io
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from policy import cli, reference, tiers
from policy import resolver as resolver_mod
from policy.deadline import Deadline
from policy.errors import RateLimited, RegistryError, RegistryUnavailable
from policy.facts import Needs
from policy.patterns import image_pattern
from policy.settings import Settings, parse_settings
from tests.support.hubserver import MISSING, HubServer

DIGEST = "sha256:" + "ab" * 32


class Clock:
    """A clock tests step by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def hub() -> Iterator[HubServer]:
    with HubServer() as server:
        yield server


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make(
    hub: HubServer,
    session: requests.Session,
    clock: Clock,
    *,
    ttl: float = tiers.DEFAULT_TTL,
    negative_ttl: float = tiers.NEGATIVE_TTL,
) -> tiers.HubTiers:
    return tiers.HubTiers(session, api=hub.url, clock=clock, ttl=ttl, negative_ttl=negative_ttl)


def ref(text: str) -> reference.Reference:
    return reference.parse(text)


def lookup(source: tiers.HubTiers | tiers.Tiers, text: str, seconds: float = 5) -> tuple[str, str]:
    return source.tier(ref(text), deadline=Deadline(seconds))


# --- answers ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("badge", "tier"),
    [
        ("verified_publisher", "verified_publisher"),
        ("open_source", "sponsored_oss"),
        ("none", "none"),
        (None, "none"),
    ],
)
def test_search_badge_of_the_exact_repository(
    hub: HubServer, session: requests.Session, clock: Clock, badge: object, tier: str
) -> None:
    """The exact result is found behind decoys with other badges; one search, no org lookup."""
    hub.badges["acme/app"] = badge
    assert lookup(make(hub, session, clock), "acme/app:1.0") == (tier, "Docker Hub search")
    assert (hub.searches, hub.org_lookups) == (1, 0)
    (request,) = hub.requests
    assert request.query == {"query": "acme/app", "type": "image"}


@pytest.mark.parametrize(
    ("search_badge", "search_mode", "org_badge", "expected", "requests_made"),
    [
        # No exact result (decoys only) → the org endpoint decides.
        (None, None, "verified_publisher", ("verified_publisher", "Docker Hub org"), 2),
        ("-", None, "open_source", ("sponsored_oss", "Docker Hub org"), 2),
        # An exact result without a badge key at all is no answer: ask the org.
        (MISSING, None, "none", ("none", "Docker Hub org"), 2),
        # The search failing → the org endpoint decides.
        ("verified_publisher", "500", "open_source", ("sponsored_oss", "Docker Hub org"), 2),
        ("verified_publisher", "malformed", None, ("none", "Docker Hub org"), 2),
        ("verified_publisher", "wrong-shape", "none", ("none", "Docker Hub org"), 2),
        # No exact result and no such organization: only organizations are in the programs.
        ("-", None, "-", ("none", "Docker Hub org"), 2),
    ],
)
def test_org_endpoint_is_the_second_source(
    hub: HubServer,
    session: requests.Session,
    clock: Clock,
    search_badge: object,
    search_mode: str | None,
    org_badge: object,
    expected: tuple[str, str],
    requests_made: int,
) -> None:
    if search_badge != "-":
        hub.badges["acme/app"] = search_badge
    if search_badge is None:
        del hub.badges["acme/app"]  # decoys only
    if org_badge != "-":
        hub.orgs["acme"] = org_badge
    if search_mode:
        hub.search_modes["acme"] = search_mode
    assert lookup(make(hub, session, clock), "acme/app") == expected
    assert len(hub.requests) == requests_made
    assert hub.requests[-1].path == "/v2/orgs/acme/"


# --- cache and coalescing -----------------------------------------------------------------------


def test_answers_are_cached_per_namespace(
    hub: HubServer, session: requests.Session, clock: Clock
) -> None:
    hub.badges["acme/app"] = "verified_publisher"
    source = make(hub, session, clock, ttl=3600)
    assert lookup(source, "acme/app:1")[0] == "verified_publisher"
    # Another repository, tag and digest of the same namespace: no request.
    assert lookup(source, "acme/db")[0] == "verified_publisher"
    assert lookup(source, f"acme/app@{DIGEST}")[0] == "verified_publisher"
    assert len(hub.requests) == 1
    assert source.stats() == tiers.HubStats(hits=2, lookups=1, requests=1)
    # Past the TTL, the namespace is asked again.
    clock.now += 3601
    assert lookup(source, "acme/db")[0] == "none"  # acme/db: decoys only, no org → none
    assert len(hub.requests) == 3


def test_concurrent_lookups_of_one_namespace_make_one_request(
    hub: HubServer, session: requests.Session, clock: Clock
) -> None:
    hub.badges["acme/app"] = "open_source"
    hub.delay = 0.3
    source = make(hub, session, clock)
    start = threading.Barrier(20)
    answers: list[tuple[str, str]] = []
    lock = threading.Lock()

    def work(i: int) -> None:
        start.wait()
        answer = lookup(source, "acme/app" if i % 2 == 0 else f"acme/app:{i}")
        with lock:
            answers.append(answer)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert answers == [("sponsored_oss", "Docker Hub search")] * 20
    assert len(hub.requests) == 1


# --- failures -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("search_mode", "org_mode", "error", "reason"),
    [
        ("500", "500", RegistryUnavailable, r"search: HTTP 500; org: HTTP 500"),
        ("429", "500", RateLimited, r"search: rate limited \(HTTP 429, retry after 30s\)"),
        ("malformed", "malformed", RegistryError, r"search: not JSON \(Expecting .*; org: not"),
        ("deep", "deep", RegistryError, r"search: JSON nested 100000 levels deep, more than the"),
        ("404", None, RegistryError, r"search: HTTP 404; org: HTTP 404"),
        ("redirect", "redirect", RegistryError, r"search: HTTP 302 redirect \(not followed\)"),
        ("huge", "huge", RegistryError, r"search: answer larger than 2097152 bytes"),
        (None, "500", RegistryUnavailable, r"search: no result named acme/app; org: HTTP 500"),
    ],
)
def test_failures_say_the_tier_is_unknown_and_why(
    hub: HubServer,
    session: requests.Session,
    clock: Clock,
    search_mode: str | None,
    org_mode: str | None,
    error: type[RegistryError],
    reason: str,
) -> None:
    if search_mode:
        hub.badges["acme/app"] = "verified_publisher"
        hub.search_modes["acme"] = search_mode
    if org_mode:
        hub.org_modes["acme"] = org_mode
    with pytest.raises(error) as info:
        lookup(make(hub, session, clock), "acme/app:1")
    assert type(info.value) is error
    assert str(info.value).startswith(
        "trusted-content tier of docker.io/acme/app:1 is unknown: "
        "Docker Hub could not answer for namespace 'acme' ("
    )
    assert info.value.reference == "docker.io/acme/app:1"
    assert re.search(reason, str(info.value)), str(info.value)
    assert all(not r.path.startswith("/elsewhere") for r in hub.requests)


def test_an_official_badge_outside_library_is_not_believed(
    hub: HubServer, session: requests.Session, clock: Clock
) -> None:
    hub.badges["acme/app"] = "official"
    with pytest.raises(RegistryError, match=r"'official' badge on namespace 'acme'"):
        lookup(make(hub, session, clock), "acme/app")


def test_failures_are_remembered_briefly(
    hub: HubServer, session: requests.Session, clock: Clock
) -> None:
    hub.badges["acme/app"] = "verified_publisher"
    hub.search_modes["acme"] = hub.org_modes["acme"] = "500"
    source = make(hub, session, clock, negative_ttl=60)
    with pytest.raises(RegistryUnavailable):
        lookup(source, "acme/app")
    assert len(hub.requests) == 2
    with pytest.raises(RegistryUnavailable, match=r"acme/db is unknown.*\(remembered\)"):
        lookup(source, "acme/db")
    assert len(hub.requests) == 2
    # After the negative TTL, Hub (recovered) is asked again.
    hub.search_modes.clear()
    hub.org_modes.clear()
    clock.now += 61
    assert lookup(source, "acme/app") == ("verified_publisher", "Docker Hub search")
    assert len(hub.requests) == 3


def test_a_hanging_hub_times_out_per_request(hub: HubServer, session: requests.Session) -> None:
    hub.search_modes["acme"] = hub.org_modes["acme"] = "hang"
    source = tiers.HubTiers(session, api=hub.url, request_timeout=0.3)
    began = time.monotonic()
    with pytest.raises(RegistryUnavailable, match=r"search: no answer within 0.3s"):
        lookup(source, "acme/app")
    assert time.monotonic() - began < 2


def test_a_hanging_hub_is_cut_by_the_deadline(hub: HubServer, session: requests.Session) -> None:
    hub.search_modes["acme"] = hub.org_modes["acme"] = "hang"
    source = tiers.HubTiers(session, api=hub.url, request_timeout=30)
    began = time.monotonic()
    with pytest.raises(RegistryUnavailable, match="unknown"):
        lookup(source, "acme/app", seconds=0.4)
    assert time.monotonic() - began < 2


def test_no_credentials_reach_the_hub_api(hub: HubServer, session: requests.Session) -> None:
    session.auth = ("robot", "registry-password")
    session.headers["Authorization"] = "Bearer registry-token"
    hub.orgs["acme"] = "verified_publisher"
    assert lookup(tiers.HubTiers(session, api=hub.url), "acme/app")[0] == "verified_publisher"
    assert len(hub.requests) == 2
    for request in hub.requests:
        assert "Authorization" not in request.headers
        assert "registry-password" not in json.dumps(request.headers)


# --- one place: catalog → offline → hub ---------------------------------------------------------


def test_catalog_and_offline_rule_need_no_request(
    hub: HubServer, session: requests.Session, clock: Clock
) -> None:
    hub.badges["acme/app"] = "none"
    catalog = (
        ("verified_publisher", image_pattern("docker.io/acme/**")),
        ("official", image_pattern("registry.corp.example/base/**")),
    )
    source = tiers.Tiers(catalog, make(hub, session, clock))
    assert lookup(source, "acme/app") == ("verified_publisher", "catalog")
    assert lookup(source, "registry.corp.example/base/debian") == ("official", "catalog")
    assert lookup(source, "nginx") == ("official", "offline rule")
    assert lookup(source, "ghcr.io/acme/app") == ("none", "offline rule")
    assert hub.requests == []
    hub.badges["other/app"] = "verified_publisher"
    assert lookup(source, "other/app") == ("verified_publisher", "Docker Hub search")
    assert len(hub.requests) == 1


def test_resolver_takes_tiers_from_settings(hub: HubServer) -> None:
    """Only a tier need asks Docker Hub; a digest-pinned image needs no registry request."""
    hub.badges["acme/app"] = "open_source"
    settings = Settings(
        docker_hub_api=hub.url,
        tier_catalog=(("verified_publisher", image_pattern("registry.corp.example/**")),),
    )
    resolver = resolver_mod.build(settings)
    try:
        pinned = ref(f"acme/app@{DIGEST}")
        private = ref("registry.corp.example/team/app:1")
        untiered = resolver.resolve([(pinned, Needs()), (private, Needs())], deadline=Deadline(5))
        assert [(f.tier, f.tier_source) for f in untiered] == [
            (None, None),
            ("verified_publisher", "catalog"),
        ]
        assert hub.requests == []
        (facts,) = resolver.resolve([(pinned, Needs(tier=True))], deadline=Deadline(5))
        assert (facts.tier, facts.tier_source, facts.digest) == (
            "sponsored_oss",
            "Docker Hub search",
            DIGEST,
        )
        assert dict(facts.errors) == {}
        hub.search_modes["down"] = hub.org_modes["down"] = "500"
        (failed,) = resolver.resolve(
            [(ref(f"down/app@{DIGEST}"), Needs(tier=True))], deadline=Deadline(5)
        )
        assert failed.tier is None
        assert failed.errors["tier"] == "Docker Hub answered an error (HTTP 500)"
        assert failed.details["tier"].startswith("trusted-content tier of docker.io/down/app@")
    finally:
        resolver.close()


# --- the command line ---------------------------------------------------------------------------

RULES = """\
apiVersion: image-policy/v1
kind: RuleSet
metadata: {name: tiers}
defaults: {action: deny, onResolveError: deny, unmatched: deny}
rules:
  - id: trusted-tier
    match: {images: ["**"]}
    require:
      tier: [official, verified_publisher, sponsored_oss]
      digest: true
"""


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def files(hub: HubServer, tmp_path: Path) -> tuple[str, str]:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    config = tmp_path / "settings.yaml"
    config.write_text(
        f"dockerHub: {{api: {hub.url!r}, tierTTL: 1h}}\n"
        "timeouts: {request: 0.5s}\n"
        "tiers:\n  official: [registry.corp.example/**]\n"
    )
    return str(rules), str(config)


def test_check_end_to_end(hub: HubServer, files: tuple[str, str]) -> None:
    rules, config = files
    hub.badges["acme/app"] = "verified_publisher"
    hub.badges["nobody/app"] = None
    hub.search_modes["down"] = hub.org_modes["down"] = "500"
    args = ("check", "--rules", rules, "--config", config, "--format", "json")
    code, out, err = run(*args, "--image", f"docker.io/acme/app@{DIGEST}")
    assert (code, err) == (0, "")
    assert json.loads(out)["allowed"] is True

    code, out, _ = run(
        *args,
        "--image",
        f"nobody/app@{DIGEST}",
        "--image",
        f"down/app@{DIGEST}",
        "--image",
        f"registry.corp.example/base/app@{DIGEST}",
        "--image",
        f"nginx@{DIGEST}",
    )
    assert code == 1
    results = {r["image"]: r for r in json.loads(out)["results"]}
    (nobody,) = results[f"nobody/app@{DIGEST}"]["violations"]
    assert nobody["message"] == (
        f"docker.io/nobody/app@{DIGEST} is in trusted-content tier 'none' (from Docker Hub "
        "search); rule trusted-tier allows official, verified_publisher, sponsored_oss"
    )
    (down,) = results[f"down/app@{DIGEST}"]["violations"]
    assert down["message"] == (
        f"cannot check docker.io/down/app@{DIGEST}: tier could not be fetched "
        "(Docker Hub answered an error (HTTP 500)); onResolveError is deny"
    )
    assert "trusted-content tier of docker.io/down/app@" in down["detail"]
    assert "is unknown: Docker Hub could not answer" in down["detail"]
    assert results[f"registry.corp.example/base/app@{DIGEST}"]["allowed"] is True
    assert results[f"nginx@{DIGEST}"]["allowed"] is True
    # One lookup for acme, one for nobody, two (search + org) for down: nothing else.
    assert len(hub.requests) == 4


def test_resolve_shows_the_tier_source(files: tuple[str, str]) -> None:
    _, config = files
    with socket.socket() as s:  # a loopback port nobody listens on: the registry is down
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config_text = Path(config).read_text() + f"  verified_publisher: ['127.0.0.1:{port}/**']\n"
    Path(config).write_text(config_text)
    image = f"127.0.0.1:{port}/team/app@{DIGEST}"
    _, out, _ = run("resolve", image, "--config", config, "--timeout", "2")
    assert "  tier:       verified_publisher (catalog)\n" in out
    _, out, _ = run("resolve", image, "--config", config, "--timeout", "2", "--json")
    document = json.loads(out)
    assert (document["tier"], document["tierSource"]) == ("verified_publisher", "catalog")


MANIFEST = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  template:
    spec:
      containers:
        - {name: a, image: "acme/app:1.0"}
        - {name: b, image: "oss/tool:2"}
      initContainers:
        - {name: c, image: "nginx:1.25"}
"""


def test_tiers_export_round_trips_into_settings(
    hub: HubServer, files: tuple[str, str], tmp_path: Path
) -> None:
    _, config = files
    hub.badges["acme/app"] = "verified_publisher"
    hub.badges["acme/db"] = "verified_publisher"
    hub.orgs["oss"] = "open_source"
    hub.badges["nobody/app"] = "none"
    manifest = tmp_path / "deploy.yaml"
    manifest.write_text(MANIFEST)
    output = tmp_path / "catalog.yaml"
    code, out, err = run(
        "tiers",
        "export",
        str(manifest),
        "acme/db",
        "nobody/app",
        "ghcr.io/x/y:1",
        "--config",
        config,
        "--output",
        str(output),
    )
    assert (code, out) == (0, "")
    assert err == f"wrote 5 catalog entries to {output}\n"
    text = output.read_text()
    assert "  verified_publisher:\n" in text
    assert '    - "docker.io/acme/**"  # Docker Hub search: docker.io/acme/' in text
    # The export ignored the settings' own catalog (registry.corp.example is not in it).
    assert "registry.corp.example" not in text
    settings = parse_settings(text, "catalog.yaml")
    assert [(t, str(p)) for t, p in settings.tier_catalog] == [
        ("official", "docker.io/library/nginx"),
        ("verified_publisher", "docker.io/acme/**"),
        ("sponsored_oss", "docker.io/oss/**"),
        ("none", "docker.io/nobody/**"),
        ("none", "ghcr.io/x/y"),
    ]
    catalog = tiers.Tiers(settings.tier_catalog)
    for image, tier in [
        ("acme/app", "verified_publisher"),
        ("acme/new", "verified_publisher"),
        ("oss/tool", "sponsored_oss"),
        ("nobody/app", "none"),
        ("nginx", "official"),
        ("ghcr.io/x/y", "none"),
    ]:
        assert catalog.known(ref(image)) == (tier, "catalog"), image


def test_tiers_export_writes_the_known_tiers_and_reports_the_unknown(
    hub: HubServer, files: tuple[str, str], tmp_path: Path
) -> None:
    _, config = files
    hub.badges["acme/app"] = "verified_publisher"
    hub.search_modes["down"] = hub.org_modes["down"] = "429"
    code, out, err = run("tiers", "export", "acme/app", "down/app", "--config", config)
    assert code == 2
    assert '    - "docker.io/acme/**"  # Docker Hub search: docker.io/acme/app' in out
    assert "down" not in out
    assert "trusted-content tier of docker.io/down/app is unknown" in err
    assert "rate limited" in err
    assert err.endswith(
        "1 tier(s) unknown, left out of the catalog; run again when Docker Hub answers\n"
    )
    output = tmp_path / "catalog.yaml"
    code, out, err = run(
        "tiers", "export", "acme/app", "down/app", "--config", config, "-o", str(output)
    )
    assert (code, out) == (2, "")
    assert [str(p) for _, p in parse_settings(output.read_text(), "c").tier_catalog] == [
        "docker.io/acme/**"
    ]


def test_an_unreachable_hub_is_worded_like_an_unreachable_registry(
    session: requests.Session, clock: Clock
) -> None:
    """Not `search: ConnectionError; org: ConnectionError`: who and why, as registry errors."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    hub = tiers.HubTiers(session, api=f"http://127.0.0.1:{port}", clock=clock)
    with pytest.raises(RegistryUnavailable) as info:
        lookup(hub, "acme/app:1")
    message = str(info.value)
    assert "search: cannot reach 127.0.0.1: " in message
    assert "; org: cannot reach 127.0.0.1: " in message
    assert "ConnectionError" not in message


def test_tier_answers_are_kept_in_the_disk_cache(
    hub: HubServer, session: requests.Session, clock: Clock, tmp_path: Path
) -> None:
    """A second CLI run (a new process: new in-memory caches) asks Docker Hub nothing."""
    from policy.diskcache import DiskCache

    hub.badges["acme/app"] = "verified_publisher"
    wall = [1_700_000_000.0]
    for _ in range(2):
        source = tiers.HubTiers(
            session, api=hub.url, clock=clock, disk=DiskCache(tmp_path, wall_clock=lambda: wall[0])
        )
        assert lookup(source, "acme/app:1.0") == ("verified_publisher", "Docker Hub search")
    assert hub.searches == 1
    wall[0] += tiers.DEFAULT_TTL + 1  # the answer has aged out: ask again
    source = tiers.HubTiers(
        session, api=hub.url, clock=clock, disk=DiskCache(tmp_path, wall_clock=lambda: wall[0])
    )
    assert lookup(source, "acme/app:1.0") == ("verified_publisher", "Docker Hub search")
    assert hub.searches == 2


def test_the_hub_api_has_a_bulkhead_of_its_own(hub: HubServer, session: requests.Session) -> None:
    """Six namespaces on a hanging Hub API: two lookups talk to it until their 2 s deadline;
    the four that come next wait for a slot until their own 0.5 s deadline and say the API is
    busy (not remembered as a Hub failure: the next lookup asks the Hub)."""
    for i in range(6):
        hub.search_modes[f"ns{i}"] = hub.org_modes[f"ns{i}"] = "hang"
    source = tiers.HubTiers(session, api=hub.url, request_timeout=30, max_in_flight=2)
    reasons: dict[int, str] = {}
    lock = threading.Lock()

    def work(i: int, seconds: float) -> None:
        try:
            lookup(source, f"ns{i}/app", seconds=seconds)
        except RegistryError as exc:
            with lock:
                reasons[i] = str(exc)

    first = [threading.Thread(target=work, args=(i, 2.0)) for i in range(2)]
    for t in first:
        t.start()
    deadline = time.monotonic() + 5
    while source.in_flight < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert source.in_flight == 2
    began = time.monotonic()
    later = [threading.Thread(target=work, args=(i, 0.5)) for i in range(2, 6)]
    for t in later:
        t.start()
    for t in later:
        t.join(10)
    waited = time.monotonic() - began
    for t in first:
        t.join(10)
    busy = "(the Docker Hub API is busy: 2 requests in flight)"
    assert sorted(i for i, r in reasons.items() if busy in r) == [2, 3, 4, 5], reasons
    assert 0.5 <= waited < 1.5
    assert sorted(i for i, r in reasons.items() if busy not in r) == [0, 1]
    assert [r.path for r in hub.requests].count("/api/search/v4") == 2
    assert source.in_flight == 0
    assert source._failures.get("ns2") is None  # busy is not a Hub failure
