"""The settings file: values, defaults and located errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from policy.errors import SettingsErrors
from policy.settings import Settings, load_settings, parse_settings

FULL = """\
registries:
  docker.io:
    mirrors: ["https://mirror.example.com/", "http://127.0.0.1:5001"]
  index.docker.io/:
    insecure: true
  registry.corp.example:
    ca: ca.pem
    insecure: false
    tokenRealms: ["https://auth.corp.example/token"]
    auth: {username: robot, passwordFile: password.txt}
  localhost:5000:
    auth: {username: me, password: secret}
dockerConfig: /var/run/secrets/pull/.dockerconfigjson
pullSecrets: [/a/.dockerconfigjson]
dockerHub: {api: "https://hub.internal.example"}
cache: {tagTTL: 1m30s, maxBytes: 64MiB}
timeouts: {request: 2s, decision: 7s}
excludeNamespaces: [kube-system, policy]
recheckUnchanged: true
mutate: {pin: true}
breakGlass: true
"""


def test_full_settings(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    (tmp_path / "password.txt").write_text("s3cret\n")
    text = FULL.replace("  index.docker.io/:\n    insecure: true\n", "")
    settings = parse_settings(text, str(tmp_path / "settings.yaml"))
    hub = settings.registry("docker.io")
    assert hub.mirrors == ("https://mirror.example.com", "http://127.0.0.1:5001")
    corp = settings.registry("registry.corp.example")
    assert corp.ca == str(tmp_path / "ca.pem")
    assert corp.token_realms == ("https://auth.corp.example/token",)
    assert corp.auth is not None and corp.auth.password == "s3cret"
    assert "s3cret" not in repr(corp)
    local = settings.registry("localhost:5000")
    assert local.auth is not None and local.auth.username == "me"
    assert settings.docker_hub_api == "https://hub.internal.example"
    assert settings.tag_ttl == 90
    assert settings.cache_max_bytes == 64 * 1024 * 1024
    assert (settings.request_timeout, settings.decision_timeout) == (2, 7)
    assert settings.exclude_namespaces == ("kube-system", "policy")
    assert settings.recheck_unchanged and settings.mutate_pin and settings.break_glass
    assert settings.registry("ghcr.io") == type(hub)()


def test_defaults_and_own_namespace() -> None:
    assert load_settings(None, env={}).exclude_namespaces == ("kube-system", "image-policy")
    assert load_settings(None, env={"POD_NAMESPACE": "guard"}).exclude_namespaces == (
        "kube-system",
        "guard",
    )
    settings = Settings()
    assert (settings.tag_ttl, settings.decision_timeout, settings.mutate_pin) == (300, 8, False)


def test_registry_keys_are_canonical_hosts(tmp_path: Path) -> None:
    """A registry configured under any spelling of its host is found under the canonical one."""
    text = "registries:\n  GHCR.IO:443: {insecure: true}\n  Registry-1.Docker.IO: {}\n"
    settings = parse_settings(text, "s.yaml", base=tmp_path)
    assert sorted(settings.registries) == ["docker.io", "ghcr.io"]
    assert settings.registry("ghcr.io").insecure


def test_environment_variable_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("timeouts: {decision: 3s}\n")
    settings = load_settings(None, env={"IMAGE_POLICY_CONFIG": str(path)})
    assert settings.decision_timeout == 3
    assert settings.source == str(path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "registry:\n  x: 1\n",
            ['s.yaml:1:1: unknown key (did you mean "registries"?)'],
        ),
        ("cache: {tagTTL: soon}\n", ["s.yaml:1:17: cache.tagTTL: expected a duration"]),
        (
            "cache: {maxBytes: 12XB}\n",
            [
                "s.yaml:1:19: cache.maxBytes: expected a positive size like 256MiB (units B, KB, "
                "MB, GB, KiB, MiB, GiB), got a string"
            ],
        ),
        (
            "registries:\n  docker.io:\n    mirrors: [ftp://x]\n",
            ["s.yaml:3:15: registries.docker.io.mirrors[0]: expected an http(s) URL, got a string"],
        ),
        (
            "registries:\n  docker.io:\n    insecure: yes please\n",
            ["s.yaml:3:15: registries.docker.io.insecure: expected true or false"],
        ),
        (
            "registries:\n  corp.example:\n    ca: missing.pem\n",
            ["s.yaml:3:9: registries.corp.example.ca: no such file (a relative path is read"],
        ),
        (
            "registries:\n  nginx:\n    insecure: true\n",
            ["s.yaml:2:3: registries: expected a registry host like ghcr.io as the key (it has"],
        ),
        (
            "registries:\n  a.io:\n    auth: {username: u}\n",
            ["s.yaml:3:11: registries.a.io.auth: missing password or passwordFile"],
        ),
        (
            "registries:\n  a.io:\n    auth: {username: u, passwordFile: nope}\n",
            [
                "registries.a.io.auth.passwordFile: cannot read password file: "
                "No such file or directory"
            ],
        ),
        (
            "registries:\n  docker.io: {}\n  index.docker.io: {}\n",
            ["s.yaml:3:3: registries.index.docker.io: docker.io is configured twice"],
        ),
        (
            "registries:\n  ghcr.io: {}\n  GHCR.IO:443: {}\n",
            ["s.yaml:3:3: registries.GHCR.IO:443: ghcr.io is configured twice"],
        ),
        (
            "registries:\n  NGINX:\n    insecure: true\n",
            ["s.yaml:2:3: registries: expected a registry host like ghcr.io as the key (it has"],
        ),
        (
            "registries:\n  ghcr.io:0: {}\n",
            ["s.yaml:2:3: registries: expected a registry host like ghcr.io as the key (a port"],
        ),
        ("timeouts: {decision: 0s}\n", ["timeouts.decision: expected a positive duration"]),
        (
            "mutate: {pin: 1}\n",
            ["s.yaml:1:15: mutate.pin: expected true or false, got an integer"],
        ),
        ("timeouts: {request: 1s\n", ["s.yaml:2:1: YAML syntax error"]),
        ("dockerHub: {api: 'http://a.io', api: 'http://b.io'}\n", ["duplicate key 'api'"]),
        ("[1, 2]\n", ["s.yaml:1:1: expected a mapping, got a list"]),
        (
            "bulkheads: {perRegistry: 0, breakFor: soon}\n",
            [
                "s.yaml:1:26: bulkheads.perRegistry: expected a positive integer, got an integer",
                "s.yaml:1:39: bulkheads.breakFor: expected a duration",
            ],
        ),
        ("review: {maxImages: -1}\n", ["s.yaml:1:21: review.maxImages: expected a positive"]),
        ("cache: {memoBytes: lots}\n", ["s.yaml:1:20: cache.memoBytes: expected a positive"]),
        ("bulkheads: {perregistry: 2}\n", ["bulkheads: unknown key"]),
    ],
)
def test_errors_are_located(tmp_path: Path, text: str, expected: list[str]) -> None:
    with pytest.raises(SettingsErrors) as info:
        parse_settings(text, "s.yaml", base=tmp_path)
    messages = [str(e) for e in info.value.errors]
    assert len(messages) == len(expected), messages
    for message, want in zip(messages, expected, strict=True):
        assert want in message


def test_several_errors_reported_at_once(tmp_path: Path) -> None:
    with pytest.raises(SettingsErrors) as info:
        parse_settings("cache: {tagTTL: x, maxBytes: y}\nbogus: 1\n", "s.yaml", base=tmp_path)
    assert len(info.value.errors) == 3


def test_unreadable_file_is_a_settings_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsErrors, match="cannot read settings file"):
        load_settings(tmp_path / "nope.yaml", env={})


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing\n")
    assert load_settings(path, env={}).decision_timeout == 8


def test_bulkheads_review_cap_and_memo_budget() -> None:
    text = (
        "bulkheads: {perRegistry: 3, dockerHub: 2, breakAfter: 4, breakFor: 1500ms}\n"
        "review: {maxImages: 50}\ncache: {memoBytes: 8MiB}\n"
    )
    settings = parse_settings(text, "s.yaml")
    assert (settings.per_registry, settings.hub_in_flight, settings.break_after) == (3, 2, 4)
    assert (settings.break_for, settings.max_images, settings.memo_bytes) == (1.5, 50, 8 << 20)
    defaults = parse_settings("{}\n", "s.yaml")
    assert (defaults.per_registry, defaults.hub_in_flight, defaults.break_after) == (16, 4, 5)
    assert (defaults.break_for, defaults.max_images, defaults.memo_bytes) == (5.0, 1000, 32 << 20)
