"""policy.server: serve options, the gunicorn settings they give, and the environment form."""

from __future__ import annotations

import re
import ssl
from pathlib import Path

import pytest

from policy import server
from policy.server import ServeOptions


@pytest.mark.parametrize(
    ("options", "bind"),
    [
        (ServeOptions(), "127.0.0.1:8080"),
        (ServeOptions(port=9000), "127.0.0.1:9000"),
        (ServeOptions(tls_cert="c", tls_key="k"), "0.0.0.0:8443"),
        (ServeOptions(tls_cert="c", tls_key="k", host="::", port=443), "[::]:443"),
    ],
)
def test_bind(options: ServeOptions, bind: str) -> None:
    assert options.bind == bind


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (ServeOptions(tls_cert="c"), "give both --tls-cert and --tls-key"),
        (ServeOptions(client_ca="ca"), "--client-ca needs --tls-cert"),
        (ServeOptions(host="0.0.0.0"), "loopback only"),
        (ServeOptions(tls_cert="/nope.crt", tls_key="/nope.key"), "/nope.crt: no such file"),
        (ServeOptions(threads=0), "at least 1"),
    ],
)
def test_check_refuses(options: ServeOptions, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        options.check()


def test_gunicorn_settings_with_tls_and_client_ca(tmp_path: Path) -> None:
    settings = server.gunicorn_settings(
        ServeOptions(tls_cert="c", tls_key="k", client_ca="ca", workers=2, threads=8)
    )
    assert settings["worker_class"] == "gthread"
    assert (settings["workers"], settings["threads"]) == (2, 8)
    assert (settings["certfile"], settings["keyfile"], settings["ca_certs"]) == ("c", "k", "ca")
    assert settings["cert_reqs"] == ssl.CERT_REQUIRED
    assert isinstance(settings["ssl_context"], server.CertificateReloader)
    assert settings["keepalive"] == 120  # longer than the API server's 90 s idle timeout
    assert settings.get("worker_tmp_dir") == server.worker_tmp_dir()


def test_gunicorn_settings_without_tls_have_no_tls() -> None:
    settings = server.gunicorn_settings(ServeOptions())
    assert settings["bind"] == ["127.0.0.1:8080"]
    assert "certfile" not in settings and "ssl_context" not in settings


def test_options_from_env() -> None:
    env = {
        "IMAGE_POLICY_RULES": "/a.yaml:/rules",
        "IMAGE_POLICY_CONFIG": "/s.yaml",
        "IMAGE_POLICY_TLS_CERT": "/tls.crt",
        "IMAGE_POLICY_TLS_KEY": "/tls.key",
        "IMAGE_POLICY_PORT": "9443",
        "IMAGE_POLICY_THREADS": "4",
    }
    options = server.options_from_env(env)
    assert options == ServeOptions(
        rules=("/a.yaml", "/rules"),
        config="/s.yaml",
        tls_cert="/tls.crt",
        tls_key="/tls.key",
        port=9443,
        threads=4,
    )
    with pytest.raises(ValueError, match=r"\$IMAGE_POLICY_PORT must be a number"):
        server.options_from_env({"IMAGE_POLICY_PORT": "x"})


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        (("127.0.0.1", 8080), True),
        (("127.8.9.1", 8080), True),
        (("::1", 8080, 0, 0), True),
        (("::ffff:127.0.0.1", 80), True),
        (("localhost", 8080), True),
        ("/run/image-policy.sock", True),
        (("0.0.0.0", 8080), False),
        (("", 8080), False),  # `--bind :8080`: every interface
        (("::", 8080, 0, 0), False),
        (("::ffff:10.0.0.1", 80), False),
        (("10.0.0.7", 8080), False),
        (("169.254.169.254", 80), False),
        (("fe80::1%eth0", 80, 0, 2), False),
        (("webhook.example", 8080), False),  # a name may resolve anywhere
        (3, False),  # `fd://3`: an inherited socket bound who knows where
        (None, False),  # an unparsable bind
    ],
)
def test_is_loopback(address: object, loopback: bool) -> None:
    assert server.is_loopback(address) is loopback


class _Cfg:
    def __init__(self, bind: list[str], certfile: str | None) -> None:
        self.bind, self.certfile = bind, certfile


class _Server:
    def __init__(self, bind: list[str], certfile: str | None = None) -> None:
        self.cfg = _Cfg(bind, certfile)


@pytest.mark.parametrize(
    ("bind", "certfile", "refused"),
    [
        (["127.0.0.1:8080"], None, None),
        (["[::1]:8080", "unix:/tmp/ip.sock"], None, None),
        (["0.0.0.0:8080"], None, "0.0.0.0:8080"),
        (["127.0.0.1:8080", ":9000"], None, ":9000"),
        (["[::]:8080"], None, "[::]:8080"),
        (["fd://3"], None, "fd://3"),
        (["0.0.0.0:8443"], "tls.crt", None),  # TLS: any interface
    ],
)
def test_plain_http_is_refused_beyond_loopback(
    bind: list[str], certfile: str | None, refused: str | None
) -> None:
    hook = server.gunicorn_settings(ServeOptions())["on_starting"]
    assert hook is server.refuse_plain_http_beyond_loopback
    if refused is None:
        server.refuse_plain_http_beyond_loopback(_Server(bind, certfile))
        return
    with pytest.raises(RuntimeError, match=re.escape(f"plain HTTP on {refused}:")):
        server.refuse_plain_http_beyond_loopback(_Server(bind, certfile))


class _Listener:
    def __init__(self, name: object) -> None:
        self.sock = self
        self.name = name

    def getsockname(self) -> object:
        return self.name

    def __str__(self) -> str:
        return f"listener {self.name!r}"


@pytest.mark.parametrize(
    ("name", "refused"),
    [(("127.0.0.1", 8080), False), ("/run/ip.sock", False), (("0.0.0.0", 8080), True)],
)
def test_when_ready_checks_the_sockets_actually_bound(name: object, refused: bool) -> None:
    """Sockets gunicorn did not bind from `bind` (systemd's, an inherited descriptor) are
    judged by their own names once bound, before any worker exists."""
    running = _Server(["127.0.0.1:8080"])
    running.LISTENERS = [_Listener(name)]  # type: ignore[attr-defined]
    if not refused:
        server.refuse_plain_http_beyond_loopback(running)
        return
    with pytest.raises(RuntimeError, match=re.escape("plain HTTP on listener ('0.0.0.0', 8080)")):
        server.refuse_plain_http_beyond_loopback(running)
    running.cfg.certfile = "tls.crt"
    server.refuse_plain_http_beyond_loopback(running)
