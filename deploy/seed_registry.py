#!/usr/bin/env python3
"""Push a few small sample images to a distribution registry, for trying policies locally.

    python deploy/seed_registry.py [http://localhost:5000] [--wait SECONDS]

Standard library only (it runs in the compose stack's one-shot `seed` service). Each image is
single-platform (linux/amd64), with deterministic made-up layers, so the digests are the same
on every run; what differs between them is what rules look at:

    demo/app:1.0, demo/app:latest   3 layers, runs as user 10001
    demo/root:1.0                   2 layers, runs as root
    demo/fat:1.0                    40 layers, runs as user 1000

Prints one `repository:tag@digest` line per image. Exit 1 when the registry does not answer
in time or refuses a push.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG = "application/vnd.docker.container.image.v1+json"
LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
CREATED = "2025-06-01T00:00:00Z"


@dataclass(frozen=True)
class Sample:
    repository: str
    tags: tuple[str, ...]
    layers: int
    user: str


SAMPLES = (
    Sample("demo/app", ("1.0", "latest"), 3, "10001"),
    Sample("demo/root", ("1.0",), 2, ""),
    Sample("demo/fat", ("1.0",), 40, "1000"),
)


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _layer(seed: str, size: int = 1024) -> bytes:
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}/{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


def _request(
    method: str, url: str, data: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str]]:
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers)
    except urllib.error.HTTPError as exc:
        body = exc.read(500).decode("utf-8", "replace")
        raise RuntimeError(f"{method} {url}: HTTP {exc.code} {body}") from exc


def wait_for(base: str, seconds: float) -> None:
    """Return once `base/v2/` answers; RuntimeError after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            _request("GET", f"{base}/v2/")
            return
        except (OSError, RuntimeError) as exc:
            if time.monotonic() >= deadline:
                raise RuntimeError(f"{base} did not answer within {seconds:g}s: {exc}") from exc
            time.sleep(0.5)


def push_blob(base: str, repository: str, data: bytes) -> str:
    """Monolithic upload: POST opens it, PUT with ?digest= stores the bytes."""
    digest = _digest(data)
    _, headers = _request("POST", f"{base}/v2/{repository}/blobs/uploads/", b"")
    location = urllib.parse.urljoin(base + "/", headers["Location"])
    separator = "&" if "?" in location else "?"
    _request(
        "PUT",
        f"{location}{separator}digest={digest}",
        data,
        {"Content-Type": "application/octet-stream"},
    )
    return digest


def _canonical(document: dict[str, object]) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def push_sample(base: str, sample: Sample) -> str:
    """Push one sample under all its tags; returns its manifest digest."""
    layers = [_layer(f"{sample.repository}/{i}") for i in range(sample.layers)]
    config = _canonical(
        {
            "architecture": "amd64",
            "os": "linux",
            "created": CREATED,
            "config": {"User": sample.user, "Labels": {"org.example.sample": sample.repository}},
            "rootfs": {"type": "layers", "diff_ids": [_digest(layer) for layer in layers]},
        }
    )
    manifest = _canonical(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": {
                "mediaType": CONFIG,
                "digest": push_blob(base, sample.repository, config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": LAYER,
                    "digest": push_blob(base, sample.repository, layer),
                    "size": len(layer),
                }
                for layer in layers
            ],
        }
    )
    for tag in sample.tags:
        _request(
            "PUT",
            f"{base}/v2/{sample.repository}/manifests/{tag}",
            manifest,
            {"Content-Type": MANIFEST},
        )
    return _digest(manifest)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("registry", nargs="?", default="http://localhost:5000")
    parser.add_argument("--wait", type=float, default=60.0, help="seconds to wait for it")
    args = parser.parse_args(argv)
    base = args.registry.rstrip("/")
    host = urllib.parse.urlsplit(base).netloc
    try:
        wait_for(base, args.wait)
        for sample in SAMPLES:
            digest = push_sample(base, sample)
            for tag in sample.tags:
                print(f"{host}/{sample.repository}:{tag}@{digest}")
    except (OSError, RuntimeError) as exc:
        print(f"seed_registry: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
