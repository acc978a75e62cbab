"""The HTTP session every registry, token and Docker Hub request goes through.

`requests` with `trust_env` on (its default) re-reads the environment on every request: the
proxy variables, `NO_PROXY` matching, the CA bundle variables, and `~/.netrc` — a file read and
parsed per request, costing the cold path milliseconds of CPU for each of its requests. Worse,
a `~/.netrc` entry for a registry host makes `requests` put that Basic login over the
`Authorization` header the client set (a Bearer token), so token auth breaks for that user.

`RegistrySession` turns `trust_env` off and reads what the environment says once per
(scheme, host): the proxy for that URL (`HTTPS_PROXY`/`HTTP_PROXY`/`ALL_PROXY`, honouring
`NO_PROXY`), and `REQUESTS_CA_BUNDLE`/`CURL_CA_BUNDLE` for requests that verify with the
default bundle. `.netrc` is never read: credentials come from the docker config, pull secrets
and the settings file only.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import requests
import requests.adapters
import requests.utils

from policy.egress import Address, EgressPolicy, Mode
from policy.registry.transport import GuardedAdapter, Transport

if TYPE_CHECKING:
    from policy.settings import Settings

USER_AGENT = "image-policy/0.1"


class RegistrySession(requests.Session):
    """A `requests.Session` that reads proxies and the CA bundle from the environment once
    per host, and never reads `~/.netrc`."""

    def __init__(self, transport: Transport | None = None) -> None:
        super().__init__()
        self.transport = transport
        self.trust_env = False
        self._proxies: dict[tuple[str, str], dict[str, str]] = {}
        self.ca_bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")

    def request(  # type: ignore[override]  # same signature, keyword arguments passed on
        self, method: str | bytes, url: str | bytes, **kwargs: Any
    ) -> requests.Response:
        text = url.decode() if isinstance(url, bytes) else url
        if kwargs.get("proxies") is None:
            kwargs["proxies"] = self.proxies_for(text)
        if kwargs.get("verify", True) is True and self.ca_bundle:
            kwargs["verify"] = self.ca_bundle
        return super().request(method, url, **kwargs)

    def proxies_for(self, url: str) -> dict[str, str]:
        """The proxies the environment names for `url` ({} when NO_PROXY exempts its host),
        looked up once per scheme and host."""
        parts = urlsplit(url)
        key = (parts.scheme, parts.netloc)
        found = self._proxies.get(key)
        if found is None:
            # what requests does per request with trust_env on (no_proxy=None: from the env)
            found = requests.utils.get_environ_proxies(url, no_proxy=None)
            self._proxies[key] = found  # racing threads store the same answer
        return found


def new_session(transport: Transport | None = None) -> RegistrySession:
    """The session the resolver and the tier lookups share: connection pools sized for the
    resolver's parallel requests, no automatic retries (the client retries itself), every
    connection through `transport` (egress policy, total time per exchange). Without one, the
    strictest policy: the webhook's defaults with nothing configured."""
    transport = transport or Transport(EgressPolicy(mode="webhook"))
    session = RegistrySession(transport)
    adapter = GuardedAdapter(transport, pool_connections=16, pool_maxsize=64, max_retries=0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.headers["User-Agent"] = USER_AGENT
    return session


def egress_policy(settings: Settings, mode: Mode) -> EgressPolicy:
    """The egress policy `settings` describe in `mode`, with this pod's own addresses (refused
    by the webhook; the CLI does not look them up)."""
    return settings.egress_policy(mode, own=own_addresses() if mode == "webhook" else ())


def own_addresses(env: Mapping[str, str] | None = None) -> frozenset[Address]:
    """This pod's addresses: `$POD_IP`/`$POD_IPS` (the downward API) and what the host name
    resolves to."""
    env = os.environ if env is None else env
    found: set[Address] = set()
    texts = [env.get("POD_IP", ""), *env.get("POD_IPS", "").split(",")]
    with contextlib.suppress(OSError):  # no name for this host: only the environment's
        texts += [str(info[4][0]) for info in socket.getaddrinfo(socket.gethostname(), None)]
    for text in texts:
        try:
            found.add(ipaddress.ip_address(text.strip().split("%", 1)[0]))
        except ValueError:
            continue
    return frozenset(found)
