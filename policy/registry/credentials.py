"""Registry credentials: explicit settings, docker `config.json`, credential helpers, k8s secrets.

`CredentialStore.lookup(registry, host)` answers from these sources, first match wins:

1. explicit entries (from settings);
2. the docker `config.json`: `credHelpers[registry]`, then an `auths` entry carrying
   credentials, then the default `credsStore` helper;
3. Kubernetes image-pull secrets mounted as files (`.dockerconfigjson`: `{"auths": {...}}`,
   or legacy `.dockercfg`: `{host: {"auth": ...}}`), in the order given.

Keys are normalized as docker does (`https://index.docker.io/v1/` → `docker.io`: scheme and
path dropped, lowercased, Docker Hub aliases folded). For each source the contacted `host` is
tried before the logical `registry`. Helpers (`docker-credential-<name> get`, server URL on
stdin, `{"Username", "Secret"}` on stdout) run through an injectable `run` with a timeout.
No error message or repr carries a secret.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from policy import reference
from policy.errors import Location, RegistryAuthError, SettingsError

__all__ = [
    "DOCKER_HUB",
    "DOCKER_HUB_SERVER_URL",
    "Credential",
    "CredentialStore",
    "DockerConfig",
    "default_docker_config",
    "normalize_registry_key",
    "parse_docker_config",
]

DOCKER_HUB = "docker.io"
DOCKER_HUB_SERVER_URL = "https://index.docker.io/v1/"
"""The key docker itself uses for Docker Hub, and the server URL given to helpers for it."""

_HELPER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_NOT_FOUND = "credentials not found in native keychain"
_TOKEN_USERNAME = "<token>"

Runner = Callable[..., "subprocess.CompletedProcess[str]"]


@dataclass(frozen=True)
class Credential:
    """What to authenticate with. Exactly one of password, identity token or registry token
    is normally set; `repr` shows the username and which secrets are present, never them."""

    username: str = ""
    password: str = ""
    identity_token: str = ""
    registry_token: str = ""

    def __repr__(self) -> str:
        present = [
            name
            for name, value in (
                ("password", self.password),
                ("identity_token", self.identity_token),
                ("registry_token", self.registry_token),
            )
            if value
        ]
        hidden = ", ".join(f"{name}=<hidden>" for name in present)
        return f"Credential(username={self.username!r}{', ' if hidden else ''}{hidden})"

    __str__ = __repr__

    @property
    def empty(self) -> bool:
        """True when nothing usable is set."""
        return not (self.username or self.password or self.identity_token or self.registry_token)


def normalize_registry_key(key: str) -> str:
    """Reduce an `auths`/`credHelpers` key or registry name to a comparable host[:port].

    Drops the scheme and any path, then makes the host canonical as references are
    (`reference.canonical_host`: lower case, no `:443`, Docker Hub's hosts — including the
    `https://index.docker.io/v1/` docker itself writes — folded to `docker.io`).
    """
    text = key.strip()
    if "://" in text:
        text = text.split("://", 1)[1]
    text = text.split("/", 1)[0].lower().rstrip(".")
    try:
        return reference.canonical_host(text)
    except ValueError:
        return text  # matches no canonical registry name


@dataclass(frozen=True)
class DockerConfig:
    """The credential-bearing parts of one docker config file, keys normalized."""

    auths: Mapping[str, Credential]
    cred_helpers: Mapping[str, str]
    creds_store: str


def _fail(file: str, path: str, problem: str) -> SettingsError:
    return SettingsError(problem, path=f"{file}: {path}" if path else file)


def _credential_from_entry(file: str, path: str, entry: object) -> Credential:
    if not isinstance(entry, dict):
        raise _fail(file, path, "expected an object")
    fields: dict[str, str] = {}
    for name in ("auth", "username", "password", "identitytoken", "registrytoken"):
        value = entry.get(name)
        if value is None:
            continue
        if not isinstance(value, str):
            raise _fail(file, f"{path}.{name}", "expected a string")
        fields[name] = value
    username = fields.get("username", "")
    password = fields.get("password", "")
    if fields.get("auth"):
        try:
            decoded = base64.b64decode(fields["auth"], validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            raise _fail(file, f"{path}.auth", "not valid base64 of UTF-8 text") from None
        if ":" not in decoded:
            raise _fail(file, f"{path}.auth", "expected base64 of 'username:password'")
        username, password = decoded.split(":", 1)
    identity = fields.get("identitytoken", "")
    if identity:
        password = ""
    return Credential(username, password, identity, fields.get("registrytoken", ""))


def _helper_name(file: str, path: str, value: object) -> str:
    if not isinstance(value, str) or not _HELPER_NAME.match(value):
        raise _fail(file, path, "expected a credential helper name (letters, digits, . _ -)")
    return value


def parse_docker_config(text: str, file: str) -> DockerConfig:
    """Parse a docker `config.json`, a `.dockerconfigjson` or a legacy `.dockercfg`.

    The legacy form is recognized by having no `auths` key and only object values. Malformed
    content raises SettingsError naming the file, the key path and the problem (never a value).
    Entries without credentials (`{}`, as docker writes when a `credsStore` holds them) are
    skipped; when two keys normalize to the same registry the first one wins.
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SettingsError(
            f"not valid JSON: {exc.msg}", location=Location(file, exc.lineno, exc.colno)
        ) from None
    if not isinstance(data, dict):
        raise _fail(file, "", "expected a JSON object")
    legacy = "auths" not in data and all(isinstance(v, dict) for v in data.values())
    legacy = legacy and not ({"credHelpers", "credsStore"} & data.keys())
    raw_auths: Any = data if legacy else data.get("auths", {})
    if not isinstance(raw_auths, dict):
        raise _fail(file, "auths", "expected an object mapping registries to credentials")
    auths: dict[str, Credential] = {}
    for key, entry in raw_auths.items():
        path = key if legacy else f"auths.{key}"
        credential = _credential_from_entry(file, path, entry)
        normalized = normalize_registry_key(key)
        if not credential.empty and normalized and normalized not in auths:
            auths[normalized] = credential
    raw_helpers = data.get("credHelpers", {})
    if not isinstance(raw_helpers, dict):
        raise _fail(file, "credHelpers", "expected an object mapping registries to helper names")
    helpers: dict[str, str] = {}
    for key, value in raw_helpers.items():
        name = _helper_name(file, f"credHelpers.{key}", value)
        helpers.setdefault(normalize_registry_key(key), name)
    store = data.get("credsStore", "")
    creds_store = _helper_name(file, "credsStore", store) if store else ""
    return DockerConfig(auths, helpers, creds_store)


def _read_file(file: str) -> str:
    try:
        return Path(file).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise _fail(file, "", "file not found") from None
    except UnicodeDecodeError:
        raise _fail(file, "", "not UTF-8 text") from None
    except OSError as exc:
        raise _fail(file, "", f"cannot be read ({exc.strerror or type(exc).__name__})") from None


def _resolve_config_path(path: str, names: Sequence[str]) -> str:
    """A directory stands for the first of `names` inside it (DOCKER_CONFIG, secret mounts)."""
    if Path(path).is_dir():
        for name in names:
            candidate = Path(path) / name
            if candidate.is_file():
                return str(candidate)
        return str(Path(path) / names[0])
    return path


class CredentialStore:
    """Looks up the credential for a registry, from the sources in the module docstring.

    Helper answers (found or not) are cached for `helper_ttl` seconds of `clock`.
    """

    def __init__(
        self,
        *,
        explicit: Mapping[str, Credential] | None = None,
        docker_config: DockerConfig | None = None,
        secrets: Sequence[DockerConfig] = (),
        run: Runner = subprocess.run,
        env: Mapping[str, str] | None = None,
        helper_timeout: float = 10.0,
        helper_ttl: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._explicit = {normalize_registry_key(k): v for k, v in (explicit or {}).items()}
        self._docker = docker_config
        self._secrets = tuple(secrets)
        self._run = run
        self._env = dict(env) if env is not None else None
        self._helper_timeout = helper_timeout
        self._helper_ttl = helper_ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._helper_cache: dict[tuple[str, str], tuple[float, Credential | None]] = {}

    @classmethod
    def from_sources(
        cls,
        docker_config: str | None,
        secret_files: Sequence[str],
        explicit: Mapping[str, Credential],
        *,
        run: Runner = subprocess.run,
        env: Mapping[str, str] | None = None,
        helper_timeout: float = 10.0,
    ) -> CredentialStore:
        """Load the docker config (a file, or a directory holding `config.json`) and the
        mounted pull secrets (files, or directories holding `.dockerconfigjson`/`.dockercfg`).

        Raises SettingsError for a missing or malformed file, naming it and the problem.
        """
        docker = None
        if docker_config:
            path = _resolve_config_path(docker_config, ["config.json"])
            docker = parse_docker_config(_read_file(path), path)
        secrets = []
        for file in secret_files:
            path = _resolve_config_path(file, [".dockerconfigjson", ".dockercfg"])
            parsed = parse_docker_config(_read_file(path), path)
            secrets.append(DockerConfig(parsed.auths, {}, ""))
        return cls(
            explicit=explicit,
            docker_config=docker,
            secrets=secrets,
            run=run,
            env=env,
            helper_timeout=helper_timeout,
        )

    def lookup(self, registry: str, host: str) -> Credential | None:
        """The credential for `registry` reached at `host`, or None when none is configured.

        Raises RegistryAuthError when a configured credential helper fails (other than
        answering "credentials not found").
        """
        names = list(
            dict.fromkeys([normalize_registry_key(host), normalize_registry_key(registry)])
        )
        for name in names:
            if name in self._explicit:
                return self._explicit[name]
        if self._docker is not None:
            for name in names:
                helper = self._docker.cred_helpers.get(name)
                if helper:
                    found = self._from_helper(helper, name)
                    if found is not None:
                        return found
            for name in names:
                if name in self._docker.auths:
                    return self._docker.auths[name]
            if self._docker.creds_store:
                for name in names:
                    found = self._from_helper(self._docker.creds_store, name)
                    if found is not None:
                        return found
        for secret in self._secrets:
            for name in names:
                if name in secret.auths:
                    return secret.auths[name]
        return None

    def _from_helper(self, helper: str, name: str) -> Credential | None:
        key = (helper, name)
        now = self._clock()
        with self._lock:
            cached = self._helper_cache.get(key)
            if cached is not None and cached[0] > now:
                return cached[1]
        found = self._run_helper(helper, name)
        with self._lock:
            self._helper_cache[key] = (now + self._helper_ttl, found)
        return found

    def _run_helper(self, helper: str, name: str) -> Credential | None:
        program = f"docker-credential-{helper}"
        server_url = DOCKER_HUB_SERVER_URL if name == DOCKER_HUB else name
        try:
            done = self._run(
                [program, "get"],
                input=server_url,
                capture_output=True,
                text=True,
                timeout=self._helper_timeout,
                env=self._env,
                check=False,
            )
        except FileNotFoundError:
            raise RegistryAuthError(
                f"credential helper {program} for {name} is not on PATH", registry=name
            ) from None
        except subprocess.TimeoutExpired:
            raise RegistryAuthError(
                f"credential helper {program} for {name} timed out after {self._helper_timeout:g}s",
                registry=name,
            ) from None
        except OSError as exc:
            raise RegistryAuthError(
                f"credential helper {program} for {name} could not run "
                f"({exc.strerror or type(exc).__name__})",
                registry=name,
            ) from None
        stdout = done.stdout or ""
        if done.returncode != 0:
            if _NOT_FOUND in stdout or _NOT_FOUND in (done.stderr or ""):
                return None
            message = " ".join((done.stderr or "").split())[:200]
            raise RegistryAuthError(
                f"credential helper {program} for {name} failed (exit {done.returncode})"
                + (f": {message}" if message else ""),
                registry=name,
            )
        return _parse_helper_output(stdout, program, name)


def _parse_helper_output(stdout: str, program: str, name: str) -> Credential | None:
    """`{"Username": ..., "Secret": ...}`; username `<token>` means an identity token."""
    try:
        data = json.loads(stdout)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise RegistryAuthError(
            f"credential helper {program} for {name} printed something other than a JSON object",
            registry=name,
        )
    username = data.get("Username", "")
    secret = data.get("Secret", "")
    if not isinstance(username, str) or not isinstance(secret, str):
        raise RegistryAuthError(
            f"credential helper {program} for {name} printed a non-string Username or Secret",
            registry=name,
        )
    if not secret and not username:
        return None
    if username == _TOKEN_USERNAME:
        return Credential(identity_token=secret)
    return Credential(username=username, password=secret)


def default_docker_config(env: Mapping[str, str] | None = None) -> str | None:
    """The docker config path docker would read (`$DOCKER_CONFIG/config.json` or
    `~/.docker/config.json`), if that file exists."""
    environ = os.environ if env is None else env
    base = environ.get("DOCKER_CONFIG") or str(
        Path(environ.get("HOME", "~")).expanduser() / ".docker"
    )
    path = Path(base) / "config.json"
    return str(path) if path.is_file() else None
