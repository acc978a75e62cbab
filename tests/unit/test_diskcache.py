"""The CLI's disk cache: verified on read, aged by the wall clock, a miss on any trouble."""

from __future__ import annotations

import hashlib
from pathlib import Path

from policy.diskcache import DiskCache, default_dir


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def digest_of(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


def test_blobs_round_trip_and_are_verified_on_read(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path)
    body = b'{"schemaVersion": 2}'
    digest = digest_of(body)
    assert cache.get_blob(digest) is None
    cache.put_blob(digest, body)
    assert cache.get_blob(digest) == body
    # A tampered file is a miss, never a wrong answer.
    (tmp_path / "v1" / "blobs" / "sha256" / digest.split(":")[1]).write_bytes(b"evil")
    assert cache.get_blob(digest) is None


def test_manifests_keep_their_media_type(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path)
    body = b"{}"
    cache.put_manifest(digest_of(body), body, "application/vnd.oci.image.index.v1+json")
    assert cache.get_manifest(digest_of(body)) == (body, "application/vnd.oci.image.index.v1+json")
    assert DiskCache(tmp_path).get_manifest(digest_of(b"other")) is None


def test_bad_digests_are_misses(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path)
    cache.put_blob("sha256:../../etc/passwd", b"x")
    assert cache.get_blob("sha256:../../etc/passwd") is None
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_tags_expire_with_the_wall_clock(tmp_path: Path) -> None:
    clock = Clock()
    cache = DiskCache(tmp_path, wall_clock=clock)
    digest = digest_of(b"m")
    cache.put_tag("r.io", "a/b", "1", digest, "application/vnd.oci.image.manifest.v1+json", 12)
    assert cache.get_tag("r.io", "a/b", "1", max_age=300) == (
        digest,
        "application/vnd.oci.image.manifest.v1+json",
        12,
        0.0,
    )
    clock.now += 100
    assert cache.get_tag("r.io", "a/b", "1", max_age=300)[3] == 100  # type: ignore[index]
    assert cache.get_tag("r.io", "a/b", "2", max_age=300) is None
    clock.now += 200
    assert cache.get_tag("r.io", "a/b", "1", max_age=300) is None
    clock.now -= 400  # written in the future: the clock moved back; do not trust it
    assert cache.get_tag("r.io", "a/b", "1", max_age=300) is None


def test_tiers_expire(tmp_path: Path) -> None:
    clock = Clock()
    cache = DiskCache(tmp_path, wall_clock=clock)
    cache.put_tier("acme", "verified_publisher", "Docker Hub search")
    assert cache.get_tier("acme", max_age=60) == ("verified_publisher", "Docker Hub search")
    clock.now += 61
    assert cache.get_tier("acme", max_age=60) is None


def test_garbage_files_are_misses(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path)
    cache.put_tier("acme", "none", "Docker Hub org")
    for path in (tmp_path / "v1" / "tiers").iterdir():
        path.write_text("[not, an, object")
    assert cache.get_tier("acme", max_age=60) is None


def test_unwritable_directory_is_not_an_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cache = DiskCache(blocker)  # a file where the directory should be
    cache.put_blob(digest_of(b"a"), b"a")
    assert cache.get_blob(digest_of(b"a")) is None


def test_default_dir_follows_xdg() -> None:
    assert default_dir({"XDG_CACHE_HOME": "/c"}) == Path("/c/image-policy")
    assert default_dir({"HOME": "/home/u"}) == Path("/home/u/.cache/image-policy")
