"""Tests for policy/registry/credentials.py: file formats, source priority, credential helpers.

Credential helpers are real executables written into tmp_path and found through the PATH of
the `env` given to the store.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest

from policy.errors import RegistryAuthError, SettingsError
from policy.registry.credentials import (
    Credential,
    CredentialStore,
    default_docker_config,
    normalize_registry_key,
    parse_docker_config,
)

SECRET = "hunter2-very-secret"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


# --------------------------------------------------------------------------------------------
# Credential
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("credential", "shown"),
    [
        (Credential("alice", SECRET), "Credential(username='alice', password=<hidden>)"),
        (Credential(identity_token=SECRET), "Credential(username='', identity_token=<hidden>)"),
        (Credential(registry_token=SECRET), "Credential(username='', registry_token=<hidden>)"),
        (Credential("bob"), "Credential(username='bob')"),
    ],
)
def test_credential_repr_hides_secrets(credential: Credential, shown: str) -> None:
    """repr and str show the username and which secrets exist, never their values."""
    assert repr(credential) == shown
    assert str(credential) == shown
    assert SECRET not in repr([credential])


# --------------------------------------------------------------------------------------------
# normalization and parsing
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "normalized"),
    [
        ("https://index.docker.io/v1/", "docker.io"),
        ("index.docker.io", "docker.io"),
        ("registry-1.docker.io", "docker.io"),
        ("docker.io", "docker.io"),
        ("https://registry.hub.docker.com", "docker.io"),
        ("https://Registry.Example.com:5000/v2/", "registry.example.com:5000"),
        ("http://localhost:5000", "localhost:5000"),
        ("ghcr.io/org/repo", "ghcr.io"),
        ("  quay.io  ", "quay.io"),
        ("registry.example.com.", "registry.example.com"),
        # The same canonical host as references: case, the HTTPS port, every Docker Hub host.
        ("https://Index.Docker.IO:443/v1/", "docker.io"),
        ("ghcr.io:443", "ghcr.io"),
        ("REGISTRY-1.DOCKER.IO", "docker.io"),
        ("hub.docker.com", "hub.docker.com"),
    ],
)
def test_normalize_registry_key(key: str, normalized: str) -> None:
    """Scheme and path dropped, lowercased, Docker Hub aliases folded to docker.io."""
    assert normalize_registry_key(key) == normalized


def test_parse_docker_config_entries() -> None:
    """Every credential form of `auths`, plus credHelpers and credsStore."""
    text = json.dumps(
        {
            "auths": {
                "https://index.docker.io/v1/": {"auth": b64(f"hub-user:{SECRET}")},
                "registry.example.com": {"username": "u", "password": "p"},
                "https://both.example.com/v1/": {
                    "auth": b64("from-auth:pw:with:colons"),
                    "username": "ignored",
                    "password": "ignored",
                },
                "id.example.com": {"username": "u", "identitytoken": "refresh"},
                "rt.example.com": {"registrytoken": "bearer-token"},
                "placeholder.example.com": {},
                "empty-auth.example.com": {"auth": ""},
            },
            "credHelpers": {"gcr.io": "gcloud", "https://123.dkr.ecr.aws/": "ecr-login"},
            "credsStore": "desktop",
            "psFormat": "table",
        }
    )
    config = parse_docker_config(text, "config.json")
    assert dict(config.auths) == {
        "docker.io": Credential("hub-user", SECRET),
        "registry.example.com": Credential("u", "p"),
        "both.example.com": Credential("from-auth", "pw:with:colons"),
        "id.example.com": Credential("u", identity_token="refresh"),
        "rt.example.com": Credential(registry_token="bearer-token"),
    }
    assert dict(config.cred_helpers) == {"gcr.io": "gcloud", "123.dkr.ecr.aws": "ecr-login"}
    assert config.creds_store == "desktop"


def test_parse_legacy_dockercfg() -> None:
    """The legacy `.dockercfg` form: registries at the top level."""
    text = json.dumps(
        {"https://registry.example.com/v1/": {"auth": b64("old:pw"), "email": "a@b.c"}}
    )
    config = parse_docker_config(text, ".dockercfg")
    assert dict(config.auths) == {"registry.example.com": Credential("old", "pw")}


def test_first_of_colliding_keys_wins() -> None:
    """Two keys for the same registry: the first in the file is used."""
    text = json.dumps(
        {
            "auths": {
                "https://index.docker.io/v1/": {"auth": b64("first:1")},
                "docker.io": {"auth": b64("second:2")},
            }
        }
    )
    assert parse_docker_config(text, "f").auths["docker.io"] == Credential("first", "1")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{", r"^conf\.json:1:2: not valid JSON: Expecting property name"),
        ('{"auths": {}} trailing', r"^conf\.json:1:15: not valid JSON: Extra data"),
        ("[]", r"^conf\.json: expected a JSON object$"),
        ('{"auths": []}', r"^conf\.json: auths: expected an object"),
        ('{"auths": {"r.io": "x"}}', r"^conf\.json: auths\.r\.io: expected an object$"),
        ('{"auths": {"r.io": {"auth": 5}}}', r"^conf\.json: auths\.r\.io\.auth: expected a string"),
        (
            '{"auths": {"r.io": {"password": ["p"]}}}',
            r"^conf\.json: auths\.r\.io\.password: expected a string",
        ),
        (
            json.dumps({"auths": {"r.io": {"auth": SECRET + "!"}}}),
            r"^conf\.json: auths\.r\.io\.auth: not valid base64",
        ),
        (
            json.dumps({"auths": {"r.io": {"auth": b64(SECRET)}}}),
            r"^conf\.json: auths\.r\.io\.auth: expected base64 of 'username:password'",
        ),
        (
            json.dumps({"auths": {"r.io": {"auth": base64.b64encode(b"\xff:x").decode()}}}),
            r"auths\.r\.io\.auth: not valid base64 of UTF-8 text",
        ),
        ('{"credHelpers": []}', r"^conf\.json: credHelpers: expected an object"),
        ('{"credHelpers": {"r.io": "../../bin/sh"}}', r"credHelpers\.r\.io: expected a credential"),
        ('{"credHelpers": {"r.io": 1}}', r"credHelpers\.r\.io: expected a credential helper"),
        ('{"credsStore": "a b"}', r"^conf\.json: credsStore: expected a credential helper"),
        ('{"credsStore": 7}', r"credsStore: expected a credential helper"),
    ],
)
def test_parse_docker_config_rejects(text: str, problem: str) -> None:
    """Malformed files raise SettingsError naming the file, key path and problem, no secret."""
    with pytest.raises(SettingsError, match=problem) as caught:
        parse_docker_config(text, "conf.json")
    assert SECRET not in str(caught.value)
    assert b64(SECRET) not in str(caught.value)


# --------------------------------------------------------------------------------------------
# loading from files
# --------------------------------------------------------------------------------------------


def write_json(path: Path, data: object) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return str(path)


def test_from_sources_reads_files_and_directories(tmp_path: Path) -> None:
    """config.json (file or DOCKER_CONFIG-style directory) and mounted secrets (file or dir)."""
    write_json(
        tmp_path / "docker" / "config.json", {"auths": {"a.example.com": {"auth": b64("a:1")}}}
    )
    secret_file = write_json(
        tmp_path / "s1" / ".dockerconfigjson", {"auths": {"b.example.com": {"auth": b64("b:2")}}}
    )
    write_json(tmp_path / "s2" / ".dockercfg", {"c.example.com": {"auth": b64("c:3")}})
    credentials = CredentialStore.from_sources(
        str(tmp_path / "docker"),
        [secret_file, str(tmp_path / "s2")],
        {"d.example.com": Credential("d", "4")},
    )
    assert credentials.lookup("a.example.com", "a.example.com") == Credential("a", "1")
    assert credentials.lookup("b.example.com", "b.example.com") == Credential("b", "2")
    assert credentials.lookup("c.example.com", "c.example.com") == Credential("c", "3")
    assert credentials.lookup("d.example.com", "d.example.com") == Credential("d", "4")
    assert credentials.lookup("e.example.com", "e.example.com") is None


def test_secret_files_ignore_helpers(tmp_path: Path) -> None:
    """Only `auths` counts in a mounted pull secret; helpers there are not run."""
    secret = write_json(tmp_path / "secret.json", {"auths": {}, "credsStore": "evil"})
    ran: list[object] = []

    def run(args: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        ran.append(args)
        return subprocess.CompletedProcess(args, 0, '{"Username": "u", "Secret": "s"}', "")

    credentials = CredentialStore.from_sources(None, [secret], {}, run=run)
    assert credentials.lookup("r.io", "r.io") is None
    assert ran == []


@pytest.mark.parametrize("kind", ["docker", "secret"])
def test_missing_file_is_a_settings_error(tmp_path: Path, kind: str) -> None:
    """A configured file that does not exist is reported with its path."""
    missing = str(tmp_path / "nope.json")
    with pytest.raises(SettingsError, match=r"nope\.json: file not found"):
        if kind == "docker":
            CredentialStore.from_sources(missing, [], {})
        else:
            CredentialStore.from_sources(None, [missing], {})


def test_malformed_secret_file_names_it(tmp_path: Path) -> None:
    """Errors in a mounted secret name that file."""
    write_json(tmp_path / "pull" / ".dockerconfigjson", {"auths": {"r.io": {"auth": "!"}}})
    with pytest.raises(SettingsError, match=r"pull/\.dockerconfigjson: auths\.r\.io\.auth"):
        CredentialStore.from_sources(None, [str(tmp_path / "pull")], {})


def test_default_docker_config(tmp_path: Path) -> None:
    """$DOCKER_CONFIG/config.json, else ~/.docker/config.json, only when the file exists."""
    assert default_docker_config({"HOME": str(tmp_path)}) is None
    path = write_json(tmp_path / ".docker" / "config.json", {})
    assert default_docker_config({"HOME": str(tmp_path)}) == path
    other = write_json(tmp_path / "elsewhere" / "config.json", {})
    env = {"HOME": str(tmp_path), "DOCKER_CONFIG": str(tmp_path / "elsewhere")}
    assert default_docker_config(env) == other


# --------------------------------------------------------------------------------------------
# lookup priority
# --------------------------------------------------------------------------------------------

HELPER = """#!{python}
import json, os, sys, time
server = sys.stdin.read()
with open({log!r}, "a") as log:
    log.write(sys.argv[1] + " " + server + "\\n")
answers = json.load(open({answers!r}))
answer = answers.get(server)
if answer is None:
    print("credentials not found in native keychain")
    sys.exit(1)
if answer == "fail":
    print("the-secret-on-stdout")
    print("keychain locked", file=sys.stderr)
    sys.exit(3)
if answer == "sleep":
    time.sleep(30)
if answer == "garbage":
    print("not json")
    sys.exit(0)
print(json.dumps(answer))
"""


class Helper:
    """A `docker-credential-<name>` executable in tmp_path/bin answering from a table."""

    def __init__(self, tmp_path: Path, name: str, answers: dict[str, object]) -> None:
        self.bin = tmp_path / "bin"
        self.bin.mkdir(exist_ok=True)
        self.log = tmp_path / f"{name}.log"
        self.log.touch()
        answers_path = tmp_path / f"{name}.answers.json"
        answers_path.write_text(json.dumps(answers))
        program = self.bin / f"docker-credential-{name}"
        program.write_text(
            HELPER.format(python=sys.executable, log=str(self.log), answers=str(answers_path))
        )
        program.chmod(0o755)

    @property
    def env(self) -> dict[str, str]:
        return {"PATH": str(self.bin)}

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines()


def config(**data: object) -> str:
    return json.dumps(data)


def test_lookup_priority(tmp_path: Path) -> None:
    """explicit > credHelpers > auths > credsStore > mounted secrets."""
    helper = Helper(
        tmp_path,
        "test",
        {
            "helped.example.com": {"Username": "from-helper", "Secret": "h"},
            "stored.example.com": {"Username": "from-store", "Secret": "s"},
            "inline.example.com": {"Username": "from-store", "Secret": "s"},
        },
    )
    docker = parse_docker_config(
        config(
            auths={
                "explicit.example.com": {"auth": b64("from-auths:x")},
                "helped.example.com": {"auth": b64("from-auths:x")},
                "inline.example.com": {"auth": b64("from-auths:x")},
            },
            credHelpers={"helped.example.com": "test", "explicit.example.com": "test"},
            credsStore="test",
        ),
        "config.json",
    )
    secret = parse_docker_config(
        config(auths={"secret.example.com": {"auth": b64("from-secret:x")}}), "s"
    )
    credentials = CredentialStore(
        explicit={"explicit.example.com": Credential("from-explicit", "x")},
        docker_config=docker,
        secrets=[secret],
        env=helper.env,
    )

    def user(registry: str) -> str | None:
        found = credentials.lookup(registry, registry)
        return None if found is None else found.username

    assert user("explicit.example.com") == "from-explicit"
    assert user("helped.example.com") == "from-helper"
    assert user("inline.example.com") == "from-auths"
    assert user("stored.example.com") == "from-store"
    assert user("secret.example.com") == "from-secret"
    assert user("none.example.com") is None


def test_lookup_tries_host_then_registry(tmp_path: Path) -> None:
    """A credential for the contacted host wins over the logical registry's."""
    credentials = CredentialStore(
        explicit={
            "localhost:5000": Credential("by-registry", "x"),
            "mirror.example.com": Credential("by-host", "x"),
        }
    )
    assert credentials.lookup("localhost:5000", "127.0.0.1:5000") == Credential("by-registry", "x")
    assert credentials.lookup("localhost:5000", "mirror.example.com") == Credential("by-host", "x")


@pytest.mark.parametrize(
    "key", ["https://index.docker.io/v1/", "index.docker.io", "registry-1.docker.io", "docker.io"]
)
@pytest.mark.parametrize("host", ["registry-1.docker.io", "docker.io"])
def test_docker_hub_aliases(key: str, host: str) -> None:
    """docker.io finds credentials stored under any of Docker Hub's names."""
    docker = parse_docker_config(config(auths={key: {"auth": b64("hub:pw")}}), "c")
    credentials = CredentialStore(docker_config=docker)
    assert credentials.lookup("docker.io", host) == Credential("hub", "pw")


# --------------------------------------------------------------------------------------------
# credential helper protocol
# --------------------------------------------------------------------------------------------


def helper_store(
    helper: Helper, *, timeout: float = 10.0, clock: FakeClock | None = None
) -> CredentialStore:
    docker = parse_docker_config(config(credsStore="test"), "config.json")
    return CredentialStore(
        docker_config=docker,
        env=helper.env,
        helper_timeout=timeout,
        helper_ttl=60,
        clock=clock or FakeClock(),
    )


def test_helper_username_and_secret(tmp_path: Path) -> None:
    """`get` with the server URL on stdin; Username/Secret become username/password."""
    helper = Helper(tmp_path, "test", {"r.example.com": {"Username": "u", "Secret": SECRET}})
    assert helper_store(helper).lookup("r.example.com", "r.example.com") == Credential("u", SECRET)
    assert helper.calls() == ["get r.example.com"]


def test_helper_token_username_means_identity_token(tmp_path: Path) -> None:
    """Username `<token>` marks the Secret as an identity token."""
    helper = Helper(tmp_path, "test", {"r.io": {"Username": "<token>", "Secret": SECRET}})
    assert helper_store(helper).lookup("r.io", "r.io") == Credential(identity_token=SECRET)


def test_helper_gets_docker_hub_server_url(tmp_path: Path) -> None:
    """For Docker Hub the helper is asked for `https://index.docker.io/v1/`, as docker does."""
    helper = Helper(
        tmp_path, "test", {"https://index.docker.io/v1/": {"Username": "hub", "Secret": "s"}}
    )
    found = helper_store(helper).lookup("docker.io", "registry-1.docker.io")
    assert found == Credential("hub", "s")
    assert helper.calls() == ["get https://index.docker.io/v1/"]


def test_helper_not_found_is_none(tmp_path: Path) -> None:
    """ "credentials not found in native keychain" means no credential, not an error."""
    helper = Helper(tmp_path, "test", {})
    assert helper_store(helper).lookup("r.io", "r.io") is None


def test_helper_answers_are_cached(tmp_path: Path) -> None:
    """A helper runs once per server URL within its TTL, again after it."""
    clock = FakeClock()
    helper = Helper(tmp_path, "test", {"r.io": {"Username": "u", "Secret": "s"}})
    credentials = helper_store(helper, clock=clock)
    for _ in range(3):
        assert credentials.lookup("r.io", "r.io") == Credential("u", "s")
        assert credentials.lookup("none.io", "none.io") is None
    assert helper.calls() == ["get r.io", "get none.io"]
    clock.now += 61
    credentials.lookup("r.io", "r.io")
    assert helper.calls() == ["get r.io", "get none.io", "get r.io"]


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        ("fail", r"docker-credential-test for r\.io failed \(exit 3\): keychain locked$"),
        ("garbage", "printed something other than a JSON object"),
        ({"Username": 1, "Secret": "s"}, "non-string Username or Secret"),
        ("sleep", r"timed out after 0\.5s"),
    ],
)
def test_helper_failures(tmp_path: Path, answer: object, problem: str) -> None:
    """A failing helper raises RegistryAuthError with its stderr, never its stdout."""
    helper = Helper(tmp_path, "test", {"r.io": answer})
    with pytest.raises(RegistryAuthError, match=problem) as caught:
        helper_store(helper, timeout=0.5).lookup("r.io", "r.io")
    assert "the-secret-on-stdout" not in str(caught.value)


def test_helper_not_on_path(tmp_path: Path) -> None:
    """A configured helper that is not installed is a clear error."""
    (tmp_path / "bin").mkdir()
    docker = parse_docker_config(config(credHelpers={"r.io": "absent"}), "config.json")
    credentials = CredentialStore(docker_config=docker, env={"PATH": str(tmp_path / "bin")})
    with pytest.raises(
        RegistryAuthError, match=r"docker-credential-absent for r\.io is not on PATH"
    ):
        credentials.lookup("r.io", "r.io")


def test_helper_receives_run_arguments() -> None:
    """The injected runner gets the program, `get`, stdin, a timeout and the env."""
    seen: list[tuple[object, dict[str, object]]] = []

    def run(args: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        seen.append((args, kwargs))
        return subprocess.CompletedProcess(args, 0, '{"Username": "u", "Secret": "s"}', "")

    docker = parse_docker_config(config(credHelpers={"r.io": "x"}), "config.json")
    credentials = CredentialStore(
        docker_config=docker, run=run, env={"PATH": "/nowhere"}, helper_timeout=3
    )
    assert credentials.lookup("r.io", "r.io") == Credential("u", "s")
    [(args, kwargs)] = seen
    assert args == ["docker-credential-x", "get"]
    assert kwargs["input"] == "r.io"
    assert kwargs["timeout"] == 3
    assert kwargs["env"] == {"PATH": "/nowhere"}
