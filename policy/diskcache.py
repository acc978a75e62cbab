"""The CLI's disk cache: what one CI run learned, kept for the next (shell layer).

```
<root>/v1/blobs/<algorithm>/<hex>        manifest and config bodies, by digest (immutable)
<root>/v1/types/<algorithm>/<hex>        the media type a manifest was served with
<root>/v1/tags/<sha256 of reference>     {"digest", "mediaType", "size", "at"}  (TTL-bound)
<root>/v1/tiers/<namespace>              {"tier", "source", "at"}
```
Bodies are verified against their digest when read, so a corrupted or tampered file is a miss,
never a wrong fact. Writes go through a temporary file and a rename, so concurrent CI jobs
sharing a cache directory never read half a file. Any I/O problem is a miss, not an error: the
registry is asked instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from policy.errors import IntegrityError
from policy.registry import media

VERSION = "v1"


def default_dir(env: Mapping[str, str] | None = None) -> Path:
    """`$XDG_CACHE_HOME/image-policy`, else `~/.cache/image-policy`."""
    env = os.environ if env is None else env
    base = env.get("XDG_CACHE_HOME") or str(Path(env.get("HOME") or Path.home()) / ".cache")
    return Path(base) / "image-policy"


class DiskCache:
    """Manifests, configs, tag answers and tier answers on disk."""

    def __init__(self, root: str | Path, *, wall_clock: Callable[[], float] = time.time) -> None:
        self.root = Path(root) / VERSION
        self._now = wall_clock

    # --- content by digest ----------------------------------------------------------------

    def _blob_path(self, kind: str, digest: str) -> Path | None:
        try:
            algorithm, hex_part = media.parse_digest(digest)
        except IntegrityError:
            return None
        return self.root / kind / algorithm / hex_part

    def get_blob(self, digest: str) -> bytes | None:
        """The verified body stored for `digest`, or None."""
        path = self._blob_path("blobs", digest)
        if path is None:
            return None
        try:
            body = path.read_bytes()
            media.verify_digest(body, digest)
        except (OSError, IntegrityError):
            return None
        return body

    def put_blob(self, digest: str, body: bytes) -> None:
        """Store a body already verified against `digest`."""
        path = self._blob_path("blobs", digest)
        if path is not None and not path.exists():
            self._write(path, body)

    def get_manifest(self, digest: str) -> tuple[bytes, str] | None:
        """`(body, media type)` of a stored manifest, or None."""
        body = self.get_blob(digest)
        path = self._blob_path("types", digest)
        if body is None or path is None:
            return None
        try:
            return body, path.read_text(encoding="utf-8").strip()
        except OSError:
            return None

    def put_manifest(self, digest: str, body: bytes, media_type: str) -> None:
        path = self._blob_path("types", digest)
        if path is None:
            return
        self.put_blob(digest, body)
        if not path.exists():
            self._write(path, media_type.encode())

    # --- answers with an age ----------------------------------------------------------------

    def _keyed(self, kind: str, key: str) -> Path:
        return self.root / kind / hashlib.sha256(key.encode()).hexdigest()

    def _get_json(self, path: Path, max_age: float) -> dict[str, object] | None:
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(document, dict):
            return None
        at = document.get("at")
        if not isinstance(at, int | float) or not 0 <= self._now() - at < max_age:
            return None
        return document

    def get_tag(
        self, registry: str, repository: str, tag: str, *, max_age: float
    ) -> tuple[str, str, int | None, float] | None:
        """`(digest, media type, size, age in seconds)` learned less than `max_age` seconds
        ago, or None."""
        document = self._get_json(self._keyed("tags", f"{registry}/{repository}:{tag}"), max_age)
        if document is None:
            return None
        digest, media_type, size = (
            document.get("digest"),
            document.get("mediaType"),
            document.get("size"),
        )
        if not isinstance(digest, str) or not isinstance(media_type, str):
            return None
        if not media.is_digest(digest):
            return None
        age = self._now() - float(document["at"])  # type: ignore[arg-type]
        return digest, media_type, size if isinstance(size, int) else None, age

    def put_tag(
        self,
        registry: str,
        repository: str,
        tag: str,
        digest: str,
        media_type: str,
        size: int | None,
    ) -> None:
        document = {"digest": digest, "mediaType": media_type, "size": size, "at": self._now()}
        self._write(
            self._keyed("tags", f"{registry}/{repository}:{tag}"), json.dumps(document).encode()
        )

    def get_tier(self, namespace: str, *, max_age: float) -> tuple[str, str] | None:
        """`(tier, source)` of a Docker Hub namespace learned less than `max_age` ago."""
        document = self._get_json(self._keyed("tiers", namespace), max_age)
        if document is None:
            return None
        tier, source = document.get("tier"), document.get("source")
        if not isinstance(tier, str) or not isinstance(source, str):
            return None
        return tier, source

    def put_tier(self, namespace: str, tier: str, source: str) -> None:
        document = {"tier": tier, "source": source, "at": self._now()}
        self._write(self._keyed("tiers", namespace), json.dumps(document).encode())

    # --- plumbing ---------------------------------------------------------------------------

    def _write(self, path: Path, data: bytes) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError:
            return  # a cache that cannot be written only costs a request next time
