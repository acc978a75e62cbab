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

import os
from typing import Any
from urllib.parse import urlsplit

import requests
import requests.adapters
import requests.utils

USER_AGENT = "image-policy/0.1"


class RegistrySession(requests.Session):
    """A `requests.Session` that reads proxies and the CA bundle from the environment once
    per host, and never reads `~/.netrc`."""

    def __init__(self) -> None:
        super().__init__()
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


def new_session() -> RegistrySession:
    """The session the resolver and the tier lookups share: connection pools sized for the
    resolver's parallel requests, no automatic retries (the client retries itself)."""
    session = RegistrySession()
    adapter = requests.adapters.HTTPAdapter(pool_connections=16, pool_maxsize=64, max_retries=0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.headers["User-Agent"] = USER_AGENT
    return session
