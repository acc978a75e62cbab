"""A counting proxy in front of the real registry that also serves the OCI 1.1 referrers API,
which the distribution 2.8 registry lacks: `GET /v2/<name>/referrers/<digest>` answers an
image index of the descriptors the test listed (an empty index when none, as the spec says),
or an `override` (status, content type, body) for hostile answers."""

from __future__ import annotations

import json
import re
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.support.proxy import CountingProxy

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
_REFERRERS = re.compile(r"/v2/(?P<name>.+)/referrers/(?P<digest>[a-z0-9]+:[a-f0-9]+)")


class ReferrersProxy(CountingProxy):
    def __init__(self, upstream: str) -> None:
        self.listed: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.overrides: dict[tuple[str, str], tuple[int, str, bytes]] = {}
        super().__init__(upstream)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self
        forward = super()._handler()

        class Handler(forward):  # type: ignore[misc, valid-type]
            def do_GET(self) -> None:
                found = _REFERRERS.fullmatch(self.path.split("?", 1)[0])
                if found is None:
                    self._forward()
                    return
                proxy._record(self.command, self.path)
                key = (found["name"], found["digest"])
                status, kind, body = proxy.overrides.get(key) or (
                    200,
                    OCI_INDEX,
                    json.dumps(
                        {
                            "schemaVersion": 2,
                            "mediaType": OCI_INDEX,
                            "manifests": proxy.listed.get(key, []),
                        }
                    ).encode(),
                )
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler
