"""The transport every outgoing connection passes: the egress policy judged on the address
actually connected (hostile image strings, token realms, redirects, DNS that changes its
answer), and a total time per exchange that no trickling peer can stretch.

No test sends a packet off loopback: names are resolved by a stand-in DNS, and every address
that is not loopback is refused before anything is sent (the recorded decisions prove it).
"""

from __future__ import annotations

import ipaddress
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Literal

import pytest
import requests

from policy import reference
from policy import resolver as resolver_mod
from policy.deadline import Deadline
from policy.egress import Address, EgressPolicy
from policy.errors import RegistryError, RegistryUnavailable
from policy.facts import Needs
from policy.registry.auth import Authenticator
from policy.registry.client import RegistryClient, RegistryConfig, RequestEvent
from policy.registry.credentials import CredentialStore
from policy.registry.endpoints import redirect_target
from policy.registry.session import new_session
from policy.registry.transport import ConnectDecision, Transport, system_resolve
from policy.settings import parse_settings
from policy.tiers import HubTiers
from tests.support.httpserver import ServedInThread
from tests.support.registry import SeededRegistry
from tests.support.trickle import Counting, Trickle

pytestmark = pytest.mark.registry

GRACE = 0.5
"""How long past its deadline a request may take to give up (the watchdog's wake-up, the
exception's way out)."""


class DNS:
    """A stand-in resolver: `answers` by name (a list, one per call, the last repeating),
    the system's for the rest (numeric spellings, localhost); records every name asked."""

    def __init__(self, **answers: list[str]) -> None:
        self.answers = {k.replace("_", "."): list(v) for k, v in answers.items()}
        self.asked: list[str] = []

    def __call__(self, host: str, port: int) -> list[tuple[int, Address]]:
        self.asked.append(host)
        queue = self.answers.get(host)
        if queue is None:
            return system_resolve(host, port)
        text = queue.pop(0) if len(queue) > 1 else queue[0]
        address = ipaddress.ip_address(text)
        return [(10 if address.version == 6 else 2, address)]


def guarded(
    settings_text: str, *, mode: str = "webhook", dns: DNS | None = None
) -> tuple[resolver_mod.RegistryResolver, list[ConnectDecision]]:
    decisions: list[ConnectDecision] = []
    transport = Transport(EgressPolicy(), resolve=dns or DNS(), on_connect=decisions.append)
    settings = parse_settings(settings_text or "{}\n", "settings.yaml")
    resolver = resolver_mod.build(
        settings,
        mode=mode,
        session=new_session(transport),  # type: ignore[arg-type]
    )
    return resolver, decisions


def digest_error(resolver: resolver_mod.RegistryResolver, image: str) -> str | None:
    """The operator's detail of why the digest could not be had (None: it was); the class
    (what a pod author reads) must then be the egress policy's when the detail says so."""
    [facts] = resolver.resolve([(reference.parse(image), Needs(digest=True))], deadline=Deadline(5))
    if "digest" not in facts.errors:
        return None
    detail = facts.details["digest"]
    if "refused by egress policy" in detail:
        assert facts.errors["digest"] == "refused by egress policy"
    return detail


@pytest.fixture
def counting() -> Iterator[Counting]:
    with Counting() as listener:
        yield listener


# --- hostile image strings -----------------------------------------------------------------

HOSTILE = [
    ("10.0.0.1/x/y:1", "private network"),
    ("kubernetes.default.svc/x/y:1", "private network"),
    ("metadata.google.internal/x/y:1", "cloud metadata service"),
    ("169.254.169.254/x/y:1", "link-local"),
    ("[fe80::1]:80/x/y:1", "link-local"),
    ("[64:ff9b::a9fe:a9fe]/x/y:1", "link-local"),
    ("2130706433:{port}/x/y:1", "loopback"),
    ("127.1:{port}/x/y:1", "loopback"),
    ("127.0.0.1:{port}/x/y:1", "loopback"),
    ("localhost:{port}/x/y:1", "loopback"),
    ("[::1]:{port}/x/y:1", "loopback"),
    ("[::ffff:7f00:1]:{port}/x/y:1", "loopback"),
    ("rebound.example:{port}/x/y:1", "loopback"),
]


@pytest.mark.parametrize(("image", "reason"), HOSTILE)
def test_hostile_image_strings_are_refused_before_any_packet(
    registry: SeededRegistry, counting: Counting, image: str, reason: str
) -> None:
    dns = DNS(
        kubernetes_default_svc=["10.96.0.1"],
        metadata_google_internal=["169.254.169.254"],
        rebound_example=["127.0.0.1"],
    )
    resolver, decisions = guarded(f"registries:\n  {registry.host}: {{}}\n", dns=dns)
    error = digest_error(resolver, image.format(port=counting.port))
    assert error is not None and "refused by egress policy" in error and reason in error, error
    assert decisions and all(d.refusal is not None for d in decisions)
    assert counting.connections == 0
    # The configured registry is still reached: the guard is not "refuse everything".
    assert digest_error(resolver, f"{registry.host}/docker/app:single") is None


def test_the_cli_keeps_loopback_and_private_networks_but_never_metadata(
    registry: SeededRegistry,
) -> None:
    resolver, _ = guarded("", mode="cli")
    assert digest_error(resolver, f"{registry.host}/docker/app:single") is None
    error = digest_error(resolver, "169.254.169.254/x/y:1")
    assert error is not None and "link-local" in error


def test_egress_allow_opens_a_network_and_deny_closes_a_configured_host(
    registry: SeededRegistry,
) -> None:
    allowed, _ = guarded('egress: {allow: ["127.0.0.0/8"]}\n')
    assert digest_error(allowed, f"{registry.host}/docker/app:single") is None
    denied, decisions = guarded(
        f'registries:\n  {registry.host}: {{}}\negress: {{deny: ["127.0.0.1/32"]}}\n'
    )
    error = digest_error(denied, f"{registry.host}/docker/app:single")
    assert error is not None and "egress.deny" in error
    assert decisions and all(d.refusal for d in decisions)


def test_the_address_judged_is_the_address_connected() -> None:
    """DNS that answers an allowed address, then a refused one: the connection goes to the
    address that was judged, and a new connection asks again and is refused."""
    with Counting("127.0.0.2") as allowed, Counting("127.0.0.3", allowed.port) as refused:
        dns = DNS(flip_example=["127.0.0.2", "127.0.0.3"])
        policy = EgressPolicy(allow_networks=(ipaddress.ip_network("127.0.0.2/32"),))
        transport = Transport(policy, resolve=dns)
        url = f"http://flip.example:{allowed.port}/"
        with new_session(transport) as session, pytest.raises(requests.Timeout):
            session.get(url, timeout=0.5)
        assert allowed.connections == 1
        with new_session(transport) as again, pytest.raises(requests.ConnectionError) as info:
            again.get(url, timeout=0.5)
        assert "refused by egress policy" in str(info.value) and "127.0.0.3" in str(info.value)
        assert dns.asked == ["flip.example", "flip.example"]
        assert refused.connections == 0


# --- redirects and token realms ----------------------------------------------------------------


class Redirector(ServedInThread):
    """A registry answering every manifest request with a 307 to `targets[repository]`, and
    every `/v2/` probe with 200."""

    def __init__(self, targets: dict[str, str]) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                parts = self.path.split("/")
                if len(parts) > 3 and parts[2] in owner.targets:
                    self.send_response(307)
                    self.send_header("Location", owner.targets[parts[2]])
                else:
                    self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_HEAD = do_GET

        self.targets = targets
        self.host = f"127.0.0.1:{self._serve(Handler)}"


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("http://127.0.0.1:{port}/quitquitquit", "loopback"),
        ("https://10.0.0.5/internal", "private network"),
        ("https://169.254.169.254/", "link-local"),
        ("https://metadata.google.internal/computeMetadata/v1/", "cloud metadata service"),
    ],
)
def test_redirects_are_judged_again(counting: Counting, target: str, reason: str) -> None:
    with Redirector({"away": target.format(port=counting.port)}) as registry:
        resolver, decisions = guarded(f"registries:\n  {registry.host}: {{}}\n")
        error = digest_error(resolver, f"{registry.host}/away/x:1")
    assert error is not None and "refused by egress policy" in error and reason in error, error
    first = next(d for d in decisions if d.refusal is None)  # the registry itself
    assert first.port == int(registry.host.split(":")[1])
    assert counting.connections == 0


def test_a_redirect_from_https_to_plain_http_is_refused() -> None:
    with pytest.raises(RegistryError, match="from https to plain http"):
        redirect_target(
            "https://registry.example/v2/a/manifests/1",
            "http://registry.example/elsewhere",
            RegistryConfig(insecure=True),
            "registry.example",
            "registry.example/a:1",
        )


class Challenger(ServedInThread):
    """A registry that asks for a Bearer token from `realm` on every request."""

    def __init__(self, realm: str) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                self.send_response(401)
                self.send_header("WWW-Authenticate", f'Bearer realm="{owner.realm}"')
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_HEAD = do_GET

        self.realm = realm
        self.port = self._serve(Handler)


def test_token_realms_are_judged_on_their_address(counting: Counting) -> None:
    """A realm the realm policy accepts (same registrable domain) whose name resolves to the
    metadata address, and a loopback realm on another port: both refused, nothing sent."""
    with Challenger("https://auth.reg.test/token") as registry:
        dns = DNS(reg_test=["127.0.0.1"], auth_reg_test=["169.254.169.254"])
        settings = f"registries:\n  reg.test:{registry.port}: {{insecure: true}}\n"
        resolver, decisions = guarded(settings, dns=dns)
        error = digest_error(resolver, f"reg.test:{registry.port}/x/y:1")
    assert error is not None and "egress policy" in error and "link-local" in error, error
    assert any(d.host == "auth.reg.test" and d.refusal for d in decisions)
    with Challenger(f"http://127.0.0.1:{counting.port}/token") as registry:
        resolver, _ = guarded(f"registries:\n  127.0.0.1:{registry.port}: {{}}\n")
        error = digest_error(resolver, f"127.0.0.1:{registry.port}/x/y:1")
    assert error is not None and "egress policy" in error and "loopback" in error, error
    assert counting.connections == 0


# --- a total time per exchange -------------------------------------------------------------


def blocked_in_sockets(prefix: str) -> list[str]:
    """Threads named `prefix…` whose stack is inside a socket read right now."""
    names = {t.ident: t.name for t in threading.enumerate()}
    out = []
    for ident, frame in sys._current_frames().items():
        name = names.get(ident, "")
        if not name.startswith(prefix):
            continue
        functions = {f.name for f in traceback.extract_stack(frame)}
        if functions & {"recv_into", "readinto", "_read_status", "readline", "recv"}:
            out.append(name)
    return out


def test_a_header_trickle_is_cut_at_the_deadline() -> None:
    transport = Transport(EgressPolicy(mode="cli"))
    with Trickle(interval=0.3) as peer, new_session(transport) as session:
        client = RegistryClient(session, authenticator=None, request_timeout=30.0)
        started = time.monotonic()
        with pytest.raises(RegistryUnavailable):
            client.get_manifest(peer.host, "x/y", "1", deadline=Deadline(1.5))
        assert time.monotonic() - started < 1.5 + GRACE
    assert transport.watchdog.fired >= 1


MANIFEST = (
    b'{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", '
    b'"config": {"mediaType": "application/vnd.oci.image.config.v1+json", '
    b'"digest": "sha256:' + b"0" * 64 + b'", "size": 2}, "layers": []}'
)


@pytest.mark.parametrize(
    ("at_once", "trickled"),
    [
        # the status line in time, then headers a byte at a time: the cut ends the headers
        (b"HTTP/1.1 200 OK\r\n", b"X-Slow: " + b"x" * 1000 + b"\r\n\r\n"),
        # headers in time, no length (the body ends when the peer closes), then the body a
        # byte at a time: the cut ends the body
        (
            b"HTTP/1.1 200 OK\r\nConnection: close\r\n"
            b"Content-Type: application/vnd.oci.image.manifest.v1+json\r\n\r\n",
            MANIFEST,
        ),
    ],
    ids=["headers", "body"],
)
def test_an_answer_cut_at_the_deadline_is_a_timeout_not_an_answer(
    at_once: bytes, trickled: bytes
) -> None:
    """What the cut leaves (headers or a body that "ended" when the socket was shut) is no
    answer: the request timed out. (Taken as an answer, a trickling host counted as one that
    answers — its breaker closed, trusted with threads — and its half-sent manifest was
    judged "malformed" instead of "unreachable".)"""
    transport = Transport(EgressPolicy(mode="cli"))
    events: list[RequestEvent] = []
    with (
        Trickle(interval=0.05, at_once=at_once, trickled=trickled) as peer,
        new_session(transport) as session,
    ):
        client = RegistryClient(
            session, authenticator=None, request_timeout=30.0, on_request=events.append
        )
        started = time.monotonic()
        with pytest.raises(RegistryUnavailable, match="timed out"):
            client.get_manifest(peer.host, "x/y", "1", deadline=Deadline(1.0))
        assert time.monotonic() - started < 1.0 + GRACE
    assert transport.watchdog.fired >= 1
    assert [e.status for e in events] == [None]  # counted as no answer (metrics, breakers)


def test_without_the_transport_the_same_trickle_holds_a_request() -> None:
    """What the test above guards against: `requests`' own timeout bounds each read only."""
    outcome: list[object] = []

    def ask(url: str) -> None:
        try:
            outcome.append(requests.get(url, timeout=1.0))
        except requests.RequestException as exc:
            outcome.append(exc)

    with Trickle(interval=0.3) as peer:
        thread = threading.Thread(target=ask, args=(f"{peer.url}/v2/",), daemon=True)
        thread.start()
        thread.join(3.0)
        assert thread.is_alive() and not outcome  # 3 s on a 1 s timeout, still reading
    thread.join(5.0)


def test_token_realms_and_the_hub_api_are_cut_at_the_deadline() -> None:
    transport = Transport(EgressPolicy(mode="cli"))
    with (
        Trickle(interval=0.3) as realm,
        Challenger(f"{realm.url}/token") as registry,
        new_session(transport) as session,
    ):
        if True:
            auth = Authenticator(session, CredentialStore(env={}))
            # (the realm is on the registry's own host: plain http there is allowed)
            client = RegistryClient(session, authenticator=auth, request_timeout=30.0)
            started = time.monotonic()
            with pytest.raises(RegistryError):
                client.get_manifest(
                    f"127.0.0.1:{registry.port}", "x/y", "1", deadline=Deadline(1.5)
                )
            assert time.monotonic() - started < 1.5 + GRACE
            hub = HubTiers(session, api=realm.url, request_timeout=30.0)
            started = time.monotonic()
            with pytest.raises(RegistryError):
                hub.tier(reference.parse("acme/app:1"), deadline=Deadline(1.5))
            assert time.monotonic() - started < 1.5 + GRACE


JSON_HEAD = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: application/json\r\n\r\n"


def test_a_token_or_hub_answer_cut_at_the_deadline_is_a_timeout_not_an_answer() -> None:
    """A token realm and the Docker Hub API sending their headers at once, then a JSON body
    without a length a byte at a time: what the cut at the deadline leaves is no answer (not a
    malformed token, not an unparseable tier), the request timed out."""
    transport = Transport(EgressPolicy(mode="cli"))
    token = b'{"token": "' + b"t" * 400 + b'", "expires_in": 300}'
    hub = b'{"count": 1, "results": [{"repo_name": "acme/app", "is_official": false}]}'
    with (
        Trickle(interval=0.05, at_once=JSON_HEAD, trickled=token) as realm,
        Challenger(f"{realm.url}/token") as registry,
        Trickle(interval=0.05, at_once=JSON_HEAD, trickled=hub * 20) as api,
        new_session(transport) as session,
    ):
        auth = Authenticator(session, CredentialStore(env={}))
        client = RegistryClient(session, authenticator=auth, request_timeout=30.0)
        with pytest.raises(RegistryUnavailable, match=r"token realm .* timed out"):
            client.get_manifest(f"127.0.0.1:{registry.port}", "x/y", "1", deadline=Deadline(1.0))
        # (the request's own timeout, not the review's deadline, ends this one)
        hub_tiers = HubTiers(session, api=api.url, request_timeout=1.0)
        with pytest.raises(RegistryUnavailable, match=r"no answer within 1\.0s"):
            hub_tiers.tier(reference.parse("acme/app:1"), deadline=Deadline(5.0))


SHORT_HEAD = (
    b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{"token": "tt'
)


@pytest.mark.parametrize("hang_up", ["fin", "reset"])
def test_a_token_answer_broken_mid_body_is_unavailable(hang_up: Literal["fin", "reset"]) -> None:
    """A token realm that hangs up partway through a body it declared 500 bytes long (a FIN,
    or a TCP reset): the token request failed, a `RegistryUnavailable` like any transport
    failure, never an unclassified exception from the HTTP stack."""
    realm = Trickle(at_once=SHORT_HEAD, trickled=b"", hang_up=hang_up)
    loopback = Transport(EgressPolicy(mode="cli"))
    with realm, Challenger(f"{realm.url}/token") as registry, new_session(loopback) as session:
        auth = Authenticator(session, CredentialStore(env={}))
        client = RegistryClient(session, authenticator=auth, request_timeout=5.0)
        with pytest.raises(RegistryUnavailable, match=r"token realm"):
            client.get_manifest(f"127.0.0.1:{registry.port}", "x/y", "1", deadline=Deadline(5.0))


@pytest.mark.parametrize("hang_up", ["fin", "reset"])
def test_a_hub_answer_broken_mid_body_is_unavailable(hang_up: Literal["fin", "reset"]) -> None:
    """The Docker Hub API hanging up mid-body, as above: the tier lookup is unavailable."""
    loopback = Transport(EgressPolicy(mode="cli"))
    with (
        Trickle(at_once=SHORT_HEAD, trickled=b"", hang_up=hang_up) as api,
        new_session(loopback) as session,
    ):
        hub_tiers = HubTiers(session, api=api.url, request_timeout=5.0)
        with pytest.raises(RegistryUnavailable):
            hub_tiers.tier(reference.parse("acme/app:1"), deadline=Deadline(5.0))


def test_forty_trickling_images_leave_no_thread_blocked() -> None:
    """One review of 40 images whose registry trickles headers: answered by its deadline, and
    a grace later no resolver thread is still reading."""
    with Trickle(interval=0.3) as peer:
        resolver, _ = guarded("", mode="cli")
        items = [
            (reference.parse(f"{peer.host}/r{i}/app:1"), Needs(digest=True, manifest=True))
            for i in range(40)
        ]
        started = time.monotonic()
        facts = resolver.resolve(items, deadline=Deadline(2.0))
        assert time.monotonic() - started < 2.0 + GRACE
        assert all("digest" in f.errors for f in facts)
        time.sleep(GRACE)
        assert blocked_in_sockets("resolve") == []
        resolver.close()
