"""No secret is echoed: a settings file's errors name the location, the key's path, what was
expected and the type found, never the value: not in the error, not in `/readyz` (which
answers anyone who reaches the port), not in the log, not on the CLI's stderr."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from policy import web
from policy.cli import main
from policy.errors import SettingsErrors
from policy.settings import load_settings, parse_settings

SECRET = "8675309"  # every value below carries it; no output may

RULES = """\
apiVersion: image-policy/v1
kind: RuleSet
metadata: {name: secrets}
defaults: {action: deny, onResolveError: deny, unmatched: deny}
rules:
  - id: pinned
    match: {images: ["**"]}
    require: {digest: true}
"""


def _auth(password: str) -> str:
    return f"registries:\n  corp.example:\n    auth: {{username: robot, password: {password}}}\n"


# (settings text, what the error must say): each value is of the wrong type or shape for its
# key, and holds SECRET.
CASES = [
    (_auth("8675309123"), "auth.password: expected a non-empty string, got an integer"),
    (_auth("8675309.25"), "auth.password: expected a non-empty string, got a number"),
    (_auth("[hunter2, 8675309]"), "auth.password: expected a non-empty string, got a list"),
    (_auth("{x8675309: 1}"), "auth.password: expected a non-empty string, got a mapping"),
    (_auth("!!int 0x8675309zz"), "auth.password: cannot read value: not a valid !!int"),
    (_auth("!!float 8675309e"), "auth.password: cannot read value: not a valid !!float"),
    (_auth("!!binary 8675309"), "auth.password: cannot read value: failed to decode base64"),
    # A missing colon in a flow mapping makes the secret a key: keys are not repeated either.
    (
        "registries:\n  corp.example:\n    auth: {username: robot, password 8675309}\n",
        'registries.corp.example.auth: unknown key (did you mean "password"?)',
    ),
    (
        "registries:\n  corp.example:\n    auth: {username: 8675309, password: x}\n",
        "auth.username: expected a non-empty string, got an integer",
    ),
    (
        "registries:\n  corp.example:\n    auth: {username: robot, passwordFile: 8675309}\n",
        "auth.passwordFile: expected a non-empty string, got an integer",
    ),
    (
        "registries:\n  docker.io:\n    mirrors: ['ftp://robot:8675309@mirror.example']\n",
        "mirrors[0]: expected an http(s) URL, got a string",
    ),
    (
        "registries:\n  corp.example:\n    tokenRealms: ['robot:8675309@auth.example']\n",
        "tokenRealms[0]: expected an http(s) URL, got a string",
    ),
    (
        "registries:\n  corp.example:\n    ca: 8675309\n",
        "ca: expected a non-empty string, got an integer",
    ),
    (
        "registries:\n  corp.example:\n    insecure: 8675309\n",
        "insecure: expected true or false, got an integer",
    ),
    (
        "registries:\n  'robot:8675309@ghcr.io/x': {}\n",
        "registries: expected a registry host like ghcr.io as the key",
    ),
    ("dockerConfig: 8675309\n", "dockerConfig: expected a non-empty string, got an integer"),
    ("pullSecrets: [8675309]\n", "pullSecrets[0]: expected a non-empty string, got an integer"),
    ("dockerHub: {api: 'token-8675309'}\n", "dockerHub.api: expected an http(s) URL, got a string"),
    ("cache: {maxBytes: 8675309XB}\n", "cache.maxBytes: expected a positive size like 256MiB"),
    ("cache: {tagTTL: 8675309s3cr3t}\n", "cache.tagTTL: expected a duration like 90d"),
    ("timeouts: {request: -8675309}\n", "timeouts.request: expected a positive duration"),
    ("tiers: {official: [8675309]}\n", "tiers.official[0]: expected a non-empty string"),
    ("tiers: {official: ['x8675309 y']}\n", "tiers.official[0]: expected an image pattern"),
    ("excludeNamespaces: 8675309\n", "excludeNamespaces: expected a list of strings, got an"),
    ("mutate: {pin: 8675309}\n", "mutate.pin: expected true or false, got an integer"),
    ("breakGlass: 'x8675309'\n", "breakGlass: expected true or false, got a string"),
    ("token8675309: 1\n", "unknown key (expected one of: registries,"),
    (
        "cache: {shared: {url: 'redis://:8675309@redis:6379/0'}}\n",
        "cache.shared.url: put the password in passwordFile or passwordEnv, not in the URL",
    ),
    (
        "cache: {shared: {url: 'rediss://robot:8675309@redis:6379/0'}}\n",
        "cache.shared.url: put the password in passwordFile or passwordEnv, not in the URL",
    ),
    (
        "cache: {shared: {url: 'http://robot:8675309@redis'}}\n",
        "cache.shared.url: expected a redis:// or rediss:// URL",
    ),
    (
        "cache: {shared: {url: 'redis://redis:8675309'}}\n",
        "cache.shared.url: expected a redis:// or rediss:// URL with a valid host:port",
    ),
    (
        "cache: {shared: {url: 8675309}}\n",
        "cache.shared.url: expected a non-empty string, got an integer",
    ),
    (
        "cache: {shared: {url: 'redis://r', passwordFile: 8675309}}\n",
        "cache.shared.passwordFile: expected a non-empty string, got an integer",
    ),
    (
        "cache: {shared: {url: 'redis://r', passwordEnv: [8675309]}}\n",
        "cache.shared.passwordEnv: expected a non-empty string, got a list",
    ),
    (
        "cache: {shared: {url: 'redis://r', password: 8675309}}\n",
        'cache.shared: unknown key (did you mean "passwordEnv"?)',
    ),
]
IDS = [f"{i}-{expected.split(':')[0]}" for i, (_, expected) in enumerate(CASES)]


@pytest.mark.parametrize(("text", "expected"), CASES, ids=IDS)
def test_settings_errors_name_the_key_and_type_never_the_value(
    tmp_path: Path, text: str, expected: str
) -> None:
    assert SECRET in text
    with pytest.raises(SettingsErrors) as info:
        parse_settings(text, str(tmp_path / "s.yaml"), base=tmp_path)
    message = str(info.value)
    assert expected in message
    assert SECRET not in message


def test_a_date_is_named_a_date() -> None:
    with pytest.raises(SettingsErrors) as info:
        parse_settings(_auth("1999-08-06"), "s.yaml")
    assert "auth.password: expected a non-empty string, got a date" in str(info.value)
    assert "1999" not in str(info.value)


def test_unreadable_files_are_described_without_their_contents(tmp_path: Path) -> None:
    binary = tmp_path / "password.bin"
    binary.write_bytes(b"\xff" + SECRET.encode())
    text = "registries:\n  corp.example:\n    auth: {username: u, passwordFile: password.bin}\n"
    with pytest.raises(SettingsErrors, match="cannot read password file: not UTF-8 text") as info:
        parse_settings(text, "s.yaml", base=tmp_path)
    assert "0xff" not in str(info.value)
    settings = tmp_path / "settings.yaml"
    settings.write_bytes(b"auth: \xe9" + SECRET.encode())
    with pytest.raises(SettingsErrors, match="cannot read settings file: not UTF-8 text") as info:
        load_settings(settings, env={})
    assert "0xe9" not in str(info.value) and SECRET not in str(info.value)


def test_rule_errors_still_show_the_value_found(tmp_path: Path) -> None:
    """Rule files hold no secrets: their errors keep quoting what was found."""
    from policy.errors import RuleErrors
    from policy.loader import load_rules

    path = tmp_path / "rules.yaml"
    path.write_text(RULES.replace("digest: true", "maxLayers: -3"))
    with pytest.raises(RuleErrors, match="expected a positive integer, got -3"):
        load_rules([str(path)])


class _NoResolver:
    def resolve(self, items: object, *, deadline: object) -> list[object]:
        raise AssertionError("no review is made here")


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def files(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    config = tmp_path / "settings.yaml"
    config.write_text("timeouts: {decision: 3s}\n")
    yield rules, config


@pytest.mark.parametrize(("text", "expected"), CASES, ids=IDS)
def test_readyz_and_the_log_never_show_a_settings_value(
    files: tuple[Path, Path], caplog: pytest.LogCaptureFixture, text: str, expected: str
) -> None:
    rules, config = files
    clock = _Clock()
    logger = logging.getLogger("policy.web.test-secrets")
    app = web.create_app(
        load_settings(config, env={}),
        rules=[rules],
        resolver=_NoResolver(),  # type: ignore[arg-type]
        clock=clock,
        logger=logger,
    )
    client = app.test_client()
    assert client.get("/readyz").get_json()["settingsError"] is None
    config.write_text(text)
    clock.now += 60
    with caplog.at_level(logging.INFO, logger=logger.name):
        reply = client.get("/readyz")
    body = reply.get_data(as_text=True)
    assert expected.replace('"', '\\"') in body  # the error is there, as JSON text
    assert SECRET not in body
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert '"event": "reload"' in logged and '"result": "error"' in logged
    assert SECRET not in logged


@pytest.mark.parametrize("command", ["check", "resolve"])
@pytest.mark.parametrize(("text", "expected"), CASES, ids=IDS)
def test_cli_stderr_never_shows_a_settings_value(
    files: tuple[Path, Path], command: str, text: str, expected: str
) -> None:
    rules, config = files
    config.write_text(text)
    args = {
        "check": ["check", f"--rules={rules}", "--image=ghcr.io/x/y:1", "--no-cache"],
        "resolve": ["resolve", "ghcr.io/x/y:1"],
    }[command]
    out, err = io.StringIO(), io.StringIO()
    code = main([*args, f"--config={config}"], out=out, err=err)
    assert code == 2
    assert expected in err.getvalue()
    assert SECRET not in err.getvalue() + out.getvalue()
