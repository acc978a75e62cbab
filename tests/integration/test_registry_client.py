"""RegistryClient against a real distribution registry on loopback (and its pure helpers)."""

from __future__ import annotations

import datetime as dt
import io
import ipaddress
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
import urllib3
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from policy.deadline import Deadline
from policy.errors import IntegrityError, ManifestNotFound, RegistryAuthError, RegistryUnavailable
from policy.registry import media
from policy.registry.client import (
    AuthProvider,
    Limits,
    RateLimit,
    RegistryClient,
    RegistryConfig,
    RequestEvent,
    is_loopback,
    parse_rate_limit,
    parse_retry_after,
)
from tests.support.hostile import HostileServer
from tests.support.proxy import CountingProxy
from tests.support.registry import (
    AMD64,
    ARM64,
    BasicRegistry,
    SeededRegistry,
    free_port,
    start_registry,
)
from tests.support.tlsca import self_signed

registry_test = pytest.mark.registry
AuthFactory = Callable[[str, str, str], AuthProvider]  # the `basic_authenticator` fixture


def deadline() -> Deadline:
    return Deadline(10.0)


def make_client(session: requests.Session, **options: object) -> RegistryClient:
    options.setdefault("authenticator", None)
    return RegistryClient(session, **options)  # type: ignore[arg-type]


# --- manifests and blobs ------------------------------------------------------------------

KINDS = {
    "docker-single": ("docker/app", "single", media.DOCKER_MANIFEST),
    "oci-single": ("oci/app", "single", media.OCI_MANIFEST),
    "docker-list": ("docker/app", "multi", media.DOCKER_MANIFEST_LIST),
    "oci-index": ("oci/app", "multi", media.OCI_INDEX),
}


def pushed_digest(registry: SeededRegistry, kind: str) -> str:
    return {
        "docker-single": registry.docker_image.digest,
        "oci-single": registry.oci_image.digest,
        "docker-list": registry.docker_list.digest,
        "oci-index": registry.oci_index.digest,
    }[kind]


@registry_test
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_head_manifest_reports_digest_and_media_type(
    registry: SeededRegistry, session: requests.Session, kind: str
) -> None:
    repo, tag, media_type = KINDS[kind]
    head = make_client(session).head_manifest(registry.host, repo, tag, deadline=deadline())
    assert head.digest == pushed_digest(registry, kind)
    assert head.media_type == media_type
    assert head.size is not None and head.size > 0


@registry_test
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_get_manifest_by_tag_and_by_digest_is_verified_and_parsed(
    registry: SeededRegistry, session: requests.Session, kind: str
) -> None:
    repo, tag, media_type = KINDS[kind]
    client = make_client(session)
    by_tag = client.get_manifest(registry.host, repo, tag, deadline=deadline())
    by_digest = client.get_manifest(registry.host, repo, by_tag.digest, deadline=deadline())
    assert by_tag.digest == pushed_digest(registry, kind) == by_digest.digest
    assert by_tag.media_type == media_type
    assert media.compute_digest(by_tag.body) == by_tag.digest
    assert by_tag.document == by_digest.document


@registry_test
@pytest.mark.parametrize("kind", ["docker-list", "oci-index"])
def test_index_platforms_and_attestations(
    registry: SeededRegistry, session: requests.Session, kind: str
) -> None:
    repo, tag, _ = KINDS[kind]
    platforms = registry.docker_platforms if kind == "docker-list" else registry.oci_platforms
    manifest = make_client(session).get_manifest(registry.host, repo, tag, deadline=deadline())
    index = manifest.document
    assert isinstance(index, media.Index)
    attestation = "unknown/unknown"
    assert [d.platform for d in index.manifests] == [AMD64, ARM64, attestation, attestation]
    assert [d.is_attestation for d in index.manifests] == [False, False, True, True]
    assert [d.digest for d in media.select_platforms(index, ["*"])] == [
        platforms[AMD64].digest,
        platforms[ARM64].digest,
    ]
    assert [d.digest for d in media.select_platforms(index, ["linux/arm64"])] == [
        platforms[ARM64].digest
    ]


@registry_test
@pytest.mark.parametrize("kind", ["docker-single", "oci-single"])
def test_image_manifest_layers_and_config(
    registry: SeededRegistry, session: requests.Session, kind: str
) -> None:
    repo, tag, _ = KINDS[kind]
    pushed = registry.docker_image if kind == "docker-single" else registry.oci_image
    client = make_client(session)
    manifest = client.get_manifest(registry.host, repo, tag, deadline=deadline())
    image = manifest.document
    assert isinstance(image, media.ImageManifest)
    assert tuple(layer.digest for layer in image.layers) == pushed.layer_digests
    assert image.total_size == sum(pushed.layer_sizes) == 1000
    config = client.get_config(registry.host, repo, image.config, deadline=deadline())
    assert (config.os, config.architecture, config.variant, config.user) == (
        "linux",
        "amd64",
        None,
        "1000",
    )
    assert config.created == dt.datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=dt.UTC)
    assert dict(config.labels) == {"seed": f"{repo}/{tag}/{AMD64}"}


@registry_test
def test_arm64_config_reports_variant(registry: SeededRegistry, session: requests.Session) -> None:
    pushed = registry.oci_platforms[ARM64]
    client = make_client(session)
    manifest = client.get_manifest(registry.host, "oci/app", pushed.digest, deadline=deadline())
    assert isinstance(manifest.document, media.ImageManifest)
    config = client.get_config(
        registry.host, "oci/app", manifest.document.config, deadline=deadline()
    )
    assert (config.architecture, config.variant) == ("arm64", "v8")


@registry_test
def test_blob_fetch_verifies_digest_and_cap(
    registry: SeededRegistry, session: requests.Session
) -> None:
    client = make_client(session)
    digest = registry.docker_image.layer_digests[0]
    body = client.get_blob(registry.host, "docker/app", digest, deadline=deadline(), max_bytes=700)
    assert len(body) == 700 and media.compute_digest(body) == digest
    with pytest.raises(IntegrityError, match="over the limit of 699"):
        client.get_blob(registry.host, "docker/app", digest, deadline=deadline(), max_bytes=699)


@registry_test
def test_expected_digest_mismatch_is_integrity_error(
    registry: SeededRegistry, session: requests.Session
) -> None:
    other = registry.oci_image.digest
    with pytest.raises(IntegrityError, match=f"digest mismatch: expected {other}"):
        make_client(session).get_manifest(
            registry.host, "docker/app", "single", deadline=deadline(), expected_digest=other
        )


@registry_test
@pytest.mark.parametrize(
    ("call", "message"),
    [
        ("head", "manifest unknown: .*/docker/app:nope"),
        ("get", "manifest unknown: .*/docker/app:nope.*MANIFEST_UNKNOWN"),
        ("blob", "blob unknown: .*/docker/app@sha256:0{64}"),
    ],
)
def test_missing_content_is_not_found(
    registry: SeededRegistry, session: requests.Session, call: str, message: str
) -> None:
    client = make_client(session)
    with pytest.raises(ManifestNotFound, match=message) as caught:
        if call == "head":
            client.head_manifest(registry.host, "docker/app", "nope", deadline=deadline())
        elif call == "get":
            client.get_manifest(registry.host, "docker/app", "nope", deadline=deadline())
        else:
            client.get_blob(
                registry.host, "docker/app", "sha256:" + "0" * 64, deadline=deadline(), max_bytes=10
            )
    assert caught.value.registry == registry.host


# --- auth, transport ----------------------------------------------------------------------


@registry_test
def test_basic_auth_answers_the_challenge_once_then_reuses_the_header(
    registry_basic: BasicRegistry,
    session: requests.Session,
    basic_authenticator: AuthFactory,
) -> None:
    auth = basic_authenticator(registry_basic.host, registry_basic.user, registry_basic.password)
    events: list[RequestEvent] = []
    client = make_client(session, authenticator=auth, on_request=events.append)
    first = client.get_manifest(registry_basic.host, "private/app", "1.0", deadline=deadline())
    second = client.head_manifest(registry_basic.host, "private/app", "1.0", deadline=deadline())
    assert first.digest == second.digest == registry_basic.image.digest
    assert [(e.method, e.status) for e in events] == [("GET", 401), ("GET", 200), ("HEAD", 200)]


@registry_test
def test_basic_auth_refusals_never_show_the_password(
    registry_basic: BasicRegistry,
    session: requests.Session,
    basic_authenticator: AuthFactory,
) -> None:
    anonymous = make_client(session)
    with pytest.raises(RegistryAuthError, match="requires authentication"):
        anonymous.get_manifest(registry_basic.host, "private/app", "1.0", deadline=deadline())
    wrong = make_client(
        session, authenticator=basic_authenticator(registry_basic.host, "alice", "wrong-pw-91c2")
    )
    with pytest.raises(RegistryAuthError, match="refused the credentials") as caught:
        wrong.get_manifest(registry_basic.host, "private/app", "1.0", deadline=deadline())
    assert "wrong-pw-91c2" not in str(caught.value)
    assert registry_basic.password not in str(caught.value)


@registry_test
def test_loopback_registry_speaks_plain_http_and_reports_each_request(
    registry: SeededRegistry, session: requests.Session
) -> None:
    events: list[RequestEvent] = []
    client = make_client(session, on_request=events.append)
    port = registry.host.rsplit(":", 1)[1]
    for name in (registry.host, f"localhost:{port}"):
        client.head_manifest(name, "docker/app", "single", deadline=deadline())
    assert [(e.registry, e.host, e.method, e.path, e.status) for e in events] == [
        (registry.host, registry.host, "HEAD", "/v2/docker/app/manifests/single", 200),
        (f"localhost:{port}", f"localhost:{port}", "HEAD", "/v2/docker/app/manifests/single", 200),
    ]
    assert all(e.seconds >= 0 for e in events)


@registry_test
def test_exact_request_counts_through_the_proxy(
    registry: SeededRegistry, counting_proxy: CountingProxy, session: requests.Session
) -> None:
    client = make_client(session)
    host = counting_proxy.host
    head = client.head_manifest(host, "oci/app", "multi", deadline=deadline())
    index = client.get_manifest(host, "oci/app", head.digest, deadline=deadline()).document
    assert isinstance(index, media.Index)
    for entry in media.select_platforms(index, ["*"]):
        image = client.get_manifest(
            host, "oci/app", entry.digest, deadline=deadline(), expected_digest=entry.digest
        ).document
        assert isinstance(image, media.ImageManifest)
        client.get_config(host, "oci/app", image.config, deadline=deadline())
    amd, arm = (registry.oci_platforms[p] for p in (AMD64, ARM64))
    base = "/v2/oci/app"
    assert counting_proxy.counts() == {
        ("HEAD", f"{base}/manifests/multi"): 1,
        ("GET", f"{base}/manifests/{registry.oci_index.digest}"): 1,
        ("GET", f"{base}/manifests/{amd.digest}"): 1,
        ("GET", f"{base}/manifests/{arm.digest}"): 1,
        ("GET", f"{base}/blobs/{amd.config_digest}"): 1,
        ("GET", f"{base}/blobs/{arm.config_digest}"): 1,
    }


@registry_test
def test_mirror_is_used_first_and_falls_back_to_upstream(
    registry: SeededRegistry, counting_proxy: CountingProxy, session: requests.Session
) -> None:
    dead = f"127.0.0.1:{free_port()}"
    via_mirror = make_client(
        session, registries={dead: RegistryConfig(mirrors=(counting_proxy.url,))}
    )
    got = via_mirror.get_manifest(dead, "docker/app", "single", deadline=deadline())
    assert got.digest == registry.docker_image.digest
    assert counting_proxy.total() == 1
    with HostileServer() as empty_mirror:
        mirrors = (f"http://127.0.0.1:{free_port()}", empty_mirror.url)
        fallback = make_client(session, registries={registry.host: RegistryConfig(mirrors=mirrors)})
        got = fallback.get_manifest(registry.host, "docker/app", "single", deadline=deadline())
        assert got.digest == registry.docker_image.digest
        assert [s.path for s in empty_mirror.requests()] == ["/v2/docker/app/manifests/single"]


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        self_signed(key, "127.0.0.1")
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path / f"pki-{x509.random_serial_number()}"
    folder.mkdir()
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
def tls_registry(tmp_path: Path) -> Iterator[tuple[str, str]]:
    cert, key = _self_signed(tmp_path)
    running = start_registry(tmp_path / "tls", tls=(cert, key))
    try:
        yield running.host, str(cert)
    finally:
        running.stop()


@registry_test
def test_per_registry_ca_verifies_tls(
    tls_registry: tuple[str, str], session: requests.Session, tmp_path: Path
) -> None:
    """A loopback registry with a CA configured speaks https, verified with that CA."""
    host, ca = tls_registry
    trusting = make_client(session, registries={host: RegistryConfig(ca=ca)})
    with pytest.raises(ManifestNotFound):
        trusting.head_manifest(host, "nothing/here", "latest", deadline=deadline())
    other_ca, _ = _self_signed(tmp_path)
    untrusting = make_client(session, registries={host: RegistryConfig(ca=str(other_ca))})
    with pytest.raises(RegistryUnavailable, match="TLS certificate verification failed"):
        untrusting.head_manifest(host, "nothing/here", "latest", deadline=deadline())


# --- wire hosts and pure helpers (no registry needed) -------------------------------------


class RecordingAdapter(requests.adapters.BaseAdapter):
    """A transport that records the URLs asked for and answers 404."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[str, str, object]] = []

    def send(self, request: requests.PreparedRequest, **kwargs: object) -> requests.Response:  # type: ignore[override]
        self.sent.append((request.method or "", request.url or "", kwargs.get("verify")))
        response = requests.Response()
        response.status_code = 404
        response.url = request.url or ""
        response.raw = urllib3.HTTPResponse(
            body=io.BytesIO(b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}'),
            status=404,
            preload_content=False,
        )
        response.request = request
        return response

    def close(self) -> None:
        return


@pytest.mark.parametrize(
    ("registry", "config", "url", "verify"),
    [
        (
            "docker.io",
            RegistryConfig(),
            "https://registry-1.docker.io/v2/library/nginx/manifests/1",
            True,
        ),
        ("ghcr.io", RegistryConfig(), "https://ghcr.io/v2/library/nginx/manifests/1", True),
        (
            "ghcr.io",
            RegistryConfig(ca="/ca.pem"),
            "https://ghcr.io/v2/library/nginx/manifests/1",
            "/ca.pem",
        ),
        (
            "reg.corp:5000",
            RegistryConfig(insecure=True),
            "http://reg.corp:5000/v2/library/nginx/manifests/1",
            True,
        ),
        (
            "localhost:5000",
            RegistryConfig(),
            "http://localhost:5000/v2/library/nginx/manifests/1",
            True,
        ),
        ("127.0.0.9", RegistryConfig(), "http://127.0.0.9/v2/library/nginx/manifests/1", True),
        ("[::1]:5000", RegistryConfig(), "http://[::1]:5000/v2/library/nginx/manifests/1", True),
        (
            "localhost:5000",
            RegistryConfig(ca="/ca.pem"),
            "https://localhost:5000/v2/library/nginx/manifests/1",
            "/ca.pem",
        ),
    ],
)
def test_wire_host_scheme_and_verification(
    registry: str, config: RegistryConfig, url: str, verify: object
) -> None:
    adapter = RecordingAdapter()
    with requests.Session() as session:
        session.trust_env = False
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        client = make_client(session, registries={registry: config})
        with pytest.raises(ManifestNotFound):
            client.head_manifest(registry, "library/nginx", "1", deadline=deadline())
    assert adapter.sent == [("HEAD", url, verify)]


def test_docker_hub_mirror_keeps_the_library_path() -> None:
    adapter = RecordingAdapter()
    with requests.Session() as session:
        session.mount("https://", adapter)
        config = RegistryConfig(mirrors=("https://mirror.example.com/",))
        client = make_client(session, registries={"docker.io": config})
        with pytest.raises(ManifestNotFound):
            client.get_manifest("docker.io", "library/nginx", "1.27", deadline=deadline())
    assert [url for _, url, _ in adapter.sent] == [
        "https://mirror.example.com/v2/library/nginx/manifests/1.27",
        "https://registry-1.docker.io/v2/library/nginx/manifests/1.27",
    ]


@pytest.mark.parametrize(
    "mirrors",
    [
        ("ftp://mirror",),
        ("http://mirror.example.com",),
        ("https://u:p@mirror",),
        ("https://m/?q=1",),
    ],
)
def test_unsafe_mirrors_are_refused(mirrors: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="mirror"):
        RegistryConfig(mirrors=mirrors)


@pytest.mark.parametrize(
    ("netloc", "loopback"),
    [
        ("localhost", True),
        ("LOCALHOST:5000", True),
        ("127.0.0.1:5000", True),
        ("127.1.2.3", True),
        ("[::1]:5000", True),
        ("[::1]", True),
        ("10.0.0.1:5000", False),
        ("localhost.example.com", False),
        ("docker.io", False),
        ("[fe80::1]:5000", False),
    ],
)
def test_is_loopback(netloc: str, loopback: bool) -> None:
    assert is_loopback(netloc) is loopback


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        (
            {"ratelimit-limit": "100;w=21600", "ratelimit-remaining": "76;w=21600"},
            RateLimit(100, 76, "6h", 21600),
        ),
        ({"ratelimit-remaining": "3;w=60"}, RateLimit(None, 3, "1m", 60)),
        ({"ratelimit-limit": "200"}, RateLimit(200, None, None, None)),
        ({"ratelimit-limit": "lots;w=x"}, RateLimit(None, None, None, None)),
    ],
)
def test_parse_rate_limit(headers: dict[str, str], expected: RateLimit | None) -> None:
    assert parse_rate_limit(headers) == expected


@pytest.mark.parametrize(
    ("limit", "text"),
    [
        (RateLimit(100, 0, "6h", 21600), "0 of 100 left in 6h window"),
        (RateLimit(None, 5, None), "5 left"),
        (RateLimit(100, None, "6h"), "limit 100 in 6h window"),
        (RateLimit(None, None, "6h"), ""),
    ],
)
def test_rate_limit_describe(limit: RateLimit, text: str) -> None:
    assert limit.describe() == text


@pytest.mark.parametrize(
    ("value", "date", "now", "expected"),
    [
        ("3", None, 0.0, 3.0),
        ("Wed, 01 May 2024 12:00:10 GMT", "Wed, 01 May 2024 12:00:00 GMT", 0.0, 10.0),
        ("Wed, 01 May 2024 12:00:10 GMT", None, 1714564800.0, 10.0),
        ("Wed, 01 May 2024 11:00:00 GMT", "Wed, 01 May 2024 12:00:00 GMT", 0.0, 0.0),
        ("soon", None, 0.0, None),
        ("-5", None, 0.0, None),
    ],
)
def test_parse_retry_after(
    value: str, date: str | None, now: float, expected: float | None
) -> None:
    assert parse_retry_after(value, date, now=now) == expected


def test_limits_defaults() -> None:
    assert Limits() == Limits(
        manifest_bytes=4 * 1024 * 1024, config_bytes=16 * 1024 * 1024, index_entries=1000, retries=2
    )


@registry_test
def test_a_mirror_never_gets_the_upstream_registrys_credentials(
    registry_basic: BasicRegistry, session: requests.Session
) -> None:
    """The mirror answers with a Basic challenge; the upstream's password must not reach it."""
    from policy.registry.auth import Authenticator
    from policy.registry.credentials import Credential, CredentialStore

    store = CredentialStore(
        explicit={registry_basic.host: Credential(registry_basic.user, registry_basic.password)}
    )
    with HostileServer() as mirror:
        client = make_client(
            session,
            authenticator=Authenticator(session, store),
            registries={registry_basic.host: RegistryConfig(mirrors=(mirror.url,))},
        )
        # The mirror's challenge is not answered with the upstream's password; the request
        # falls through to the upstream, which says the tag is unknown (with its credentials),
        # and the error tells what the mirror answered.
        with pytest.raises(
            ManifestNotFound,
            match=r"manifest unknown: .*unauthorized:1\.0 \(mirror: .*requires authentication",
        ):
            client.head_manifest(registry_basic.host, "unauthorized", "1.0", deadline=deadline())
        assert mirror.authorizations() == []
        # The upstream itself still gets its own credentials.
        head = client.head_manifest(registry_basic.host, "private/app", "1.0", deadline=deadline())
        assert head.digest == registry_basic.image.digest


class _StatusMirror:
    """A mirror answering every request with one status (and counting what it got)."""

    def __init__(self, status: int) -> None:
        import http.server
        import threading

        seen: list[tuple[str, str | None]] = []
        self.seen = seen

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                seen.append((self.path, self.headers.get("Authorization")))
                body = b'{"errors":[{"code":"DENIED","message":"mirror says no"}]}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_HEAD = do_GET

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def __enter__(self) -> _StatusMirror:
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@registry_test
@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 429, 500])
def test_any_mirror_failure_falls_through_to_the_upstream(
    registry_basic: BasicRegistry, session: requests.Session, status: int
) -> None:
    """The README says mirrors are tried in order before the upstream: a 4xx from a mirror is
    not final. The upstream gets its credentials; the mirror never does."""
    from policy.registry.auth import Authenticator
    from policy.registry.credentials import Credential, CredentialStore

    store = CredentialStore(
        explicit={registry_basic.host: Credential(registry_basic.user, registry_basic.password)}
    )
    with _StatusMirror(status) as mirror:
        client = make_client(
            session,
            authenticator=Authenticator(session, store),
            registries={registry_basic.host: RegistryConfig(mirrors=(mirror.url,))},
        )
        got = client.get_manifest(registry_basic.host, "private/app", "1.0", deadline=deadline())
        assert got.digest == registry_basic.image.digest
        assert mirror.seen and all(auth is None for _, auth in mirror.seen)


@registry_test
def test_a_mirrors_404_is_told_once_beside_an_unreachable_upstream(
    session: requests.Session,
) -> None:
    dead = f"127.0.0.1:{free_port()}"
    with _StatusMirror(404) as mirror:
        client = make_client(session, registries={dead: RegistryConfig(mirrors=(mirror.url,))})
        with pytest.raises(RegistryUnavailable) as info:
            client.get_manifest(dead, "team/app", "1.0", deadline=deadline())
    message = str(info.value)
    assert message.startswith(f"{dead}/team/app:1.0: cannot reach {dead}")
    assert message.endswith(
        f"(mirror: manifest unknown: {dead}/team/app:1.0: DENIED: mirror says no)"
    )
    assert message.count("mirror says no") == 1
