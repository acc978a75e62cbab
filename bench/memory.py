"""Benchmark 4 — memory: resident memory after caching 10,000 distinct digests, and under churn.

Each measurement runs in a fresh interpreter (`python -m bench.memory WORKER BOUND`), so one
configuration's freed-but-kept arenas cannot flatter another. The worker builds a
`RegistryResolver` with `cache_max_bytes=BOUND` over `SyntheticClient` — a local stand-in for
`RegistryClient`, used only here, that answers every manifest and config GET with a distinct,
realistic document (3 layers, labels, user) generated from the digest, so the registry's speed
does not matter and 50,000 distinct images take seconds. Images are referenced by digest, so
the manifest, config and whole-answer caches grow; the tag→digest cache (its share of the same
byte budget) is measured separately in the `tags` note.

Fixed overhead = the VmRSS of the very same run with caches that keep nothing
(`cache_max_bytes=0`): the interpreter, the modules, the resolver's worker threads and their
allocator arenas, and the allocator slack the stream of short-lived documents leaves — what the
process costs whatever the bound. The caches' cost = VmRSS − that fixed overhead at the same
point (after 10,000 distinct digests, at the peak, after the churn); the target is that it
stays within `cache.maxBytes`. Also reported: growth over the process's own RSS after WARMUP
images (the first measure), and "accounted", the `bytes` all five resolver caches say they hold.
"""

from __future__ import annotations

import gc
import hashlib
import json
import subprocess
import sys
from collections.abc import Sequence

from bench import common
from policy.deadline import Deadline
from policy.facts import Needs
from policy.reference import parse
from policy.registry import media
from policy.registry.client import Limits, Manifest, ManifestHead, RateLimit
from policy.resolver import RegistryResolver
from policy.tiers import Tiers

MiB = 1024 * 1024
REGISTRY = "registry.example"
NEEDS = Needs(digest=True, manifest=True, config=True, select=("*",))
DISTINCT = 10_000
CHURN = 50_000
BATCH = 100
WARMUP = 32  # one batch: starts every worker thread of both pools
CONFIGS = ((8 * MiB, "bound < 10,000 images"), (64 * MiB, "bound > 10,000 images"))


def _hex(seed: str) -> str:
    return hashlib.sha256(seed.encode()).hexdigest()


class SyntheticClient:
    """Answers like `RegistryClient` for any digest, generating the document from it.

    Only for this memory benchmark: no I/O, so what is measured is the resolver's caches.
    """

    limits = Limits()

    def rate_limit(self, registry: str) -> RateLimit | None:
        return None

    def listen(self, listener: object) -> None:
        """(No requests are sent: no request events to tell.)"""

    def head_manifest(
        self, registry: str, repository: str, reference: str, *, deadline: Deadline
    ) -> ManifestHead:
        digest = "sha256:" + _hex(f"{repository}:{reference}")
        return ManifestHead(digest, media.DOCKER_MANIFEST, 600)

    def get_manifest(
        self, registry: str, repository: str, reference: str, *, deadline: Deadline
    ) -> Manifest:
        document = {
            "schemaVersion": 2,
            "mediaType": media.DOCKER_MANIFEST,
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "digest": "sha256:" + _hex(f"config/{reference}"),
                "size": 1200,
            },
            "layers": [
                {
                    "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    "digest": "sha256:" + _hex(f"layer/{reference}/{n}"),
                    "size": 1_000_000 + n,
                }
                for n in range(3)
            ],
        }
        body = json.dumps(document, separators=(",", ":")).encode()
        parsed = media.parse_manifest(body, media.DOCKER_MANIFEST)
        return Manifest(
            digest=reference, media_type=media.DOCKER_MANIFEST, body=body, document=parsed
        )

    def get_blob(
        self, registry: str, repository: str, digest: str, *, deadline: Deadline, max_bytes: int
    ) -> bytes:
        config = {
            "architecture": "amd64",
            "os": "linux",
            "created": "2024-05-01T12:00:00Z",
            "config": {
                "User": "1000",
                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                "Labels": {
                    "org.opencontainers.image.source": f"https://git.example/{digest[7:19]}",
                    "org.opencontainers.image.revision": digest[7:47],
                },
            },
            "rootfs": {
                "type": "layers",
                "diff_ids": [f"sha256:{_hex(digest + str(n))}" for n in range(3)],
            },
        }
        return json.dumps(config).encode()


def _refs(start: int, stop: int) -> list[str]:
    return [f"{REGISTRY}/mem/app@sha256:{_hex(f'image/{i}')}" for i in range(start, stop)]


def _fill(resolver: RegistryResolver, start: int, stop: int) -> None:
    for first in range(start, stop, BATCH):
        items = [(parse(r), NEEDS) for r in _refs(first, min(first + BATCH, stop))]
        for facts in resolver.resolve(items, deadline=Deadline(60.0)):
            assert not facts.errors and facts.platforms[0].layers == 3, facts


def _accounted(resolver: RegistryResolver) -> int:
    """Bytes all the resolver's caches say they hold."""
    return sum(c.bytes for c in resolver.caches().values())


def worker(bound: int) -> dict[str, int]:
    """Run one configuration in this process; return the VmRSS figures (bytes)."""
    common.pin_load_generator()
    resolver = RegistryResolver(
        SyntheticClient(),  # type: ignore[arg-type]
        tiers=Tiers(()),
        cache_max_bytes=bound,
        max_workers=8,
    )
    _fill(resolver, 0, WARMUP)
    gc.collect()
    base = common.vm_rss_bytes()
    _fill(resolver, WARMUP, DISTINCT)
    gc.collect()
    after_distinct = common.vm_rss_bytes()
    accounted_distinct = _accounted(resolver)
    peak = after_distinct
    for start in range(DISTINCT, CHURN, 5_000):
        _fill(resolver, start, start + 5_000)
        peak = max(peak, common.vm_rss_bytes())
    gc.collect()
    after_churn = common.vm_rss_bytes()
    stats = resolver.stats()
    resolver.close()
    return {
        "bound": bound,
        "base": base,
        "after_distinct": after_distinct,
        "after_churn": after_churn,
        "peak": peak,
        "accounted_distinct": accounted_distinct,
        "accounted_churn": _accounted(resolver),
        "manifest_misses": stats.manifest_misses,
    }


def tags_worker(count: int) -> dict[str, int]:
    """RSS growth of putting `count` tags in the tag→digest cache (default cache_max_bytes)."""
    resolver = RegistryResolver(SyntheticClient(), tiers=Tiers(()), max_workers=8)  # type: ignore[arg-type]
    needs = Needs(digest=True)
    _ = [resolver.resolve([(parse(f"{REGISTRY}/mem/app:t0"), needs)], deadline=Deadline(5))]
    gc.collect()
    base = common.vm_rss_bytes()
    for first in range(0, count, BATCH):
        items = [(parse(f"{REGISTRY}/mem/app:t{i}"), needs) for i in range(first, first + BATCH)]
        resolver.resolve(items, deadline=Deadline(60.0))
    gc.collect()
    after = common.vm_rss_bytes()
    stats = resolver.caches()["tags"].stats
    resolver.close()
    return {
        "base": base,
        "after": after,
        "entries": stats.entries,
        "bytes": stats.bytes,
        "max_bytes": resolver.caches()["tags"].max_bytes or 0,
    }


def _spawn(args: Sequence[str]) -> dict[str, int]:
    out = subprocess.run(
        common.pinned([sys.executable, "-m", "bench.memory", *args], common.LOAD_CPU),
        cwd=common.ROOT,
        check=True,
        capture_output=True,
        text=True,
        timeout=110,
    ).stdout
    result: dict[str, int] = json.loads(out.splitlines()[-1])
    return result


def run() -> common.Result:
    rows: list[tuple[object, ...]] = []
    targets = []
    data: dict[str, object] = {}
    fixed = _spawn(["worker", "0"])  # the same run, caches keeping nothing
    data["no cache (fixed overhead)"] = fixed
    rows.append(
        (
            "no cache: the fixed overhead",
            0,
            fixed["base"] / MiB,
            fixed["after_distinct"] / MiB,
            fixed["peak"] / MiB,
            fixed["after_churn"] / MiB,
            fixed["accounted_churn"] / MiB,
            "",
            "",
            "",
            "",
        )
    )
    for bound, label in CONFIGS:
        r = _spawn(["worker", str(bound)])
        data[label] = r
        row, target = _bounded(label, bound, r, fixed)
        rows.append(row)
        targets.append(target)
    tags = _spawn(["tags", str(100_000)])
    data["tags"] = tags
    return common.Result("memory", "4. memory", (_table(rows),), tuple(targets), _notes(tags), data)


def _bounded(
    label: str, bound: int, r: dict[str, int], fixed: dict[str, int]
) -> tuple[tuple[object, ...], common.Target]:
    """One bounded configuration's row (its RSS over the fixed overhead at each point) and its
    target: the worst of those within the bound."""
    cost = {k: r[k] - fixed[k] for k in ("after_distinct", "peak", "after_churn")}
    worst = max(cost.values())
    row = (
        label,
        bound / MiB,
        r["base"] / MiB,
        r["after_distinct"] / MiB,
        r["peak"] / MiB,
        r["after_churn"] / MiB,
        r["accounted_churn"] / MiB,
        cost["after_distinct"] / MiB,
        cost["peak"] / MiB,
        cost["after_churn"] / MiB,
        (r["after_churn"] - r["base"]) / MiB,
    )
    target = common.Target(
        f"{label}: RSS over the fixed overhead (worst of @10k, peak, @50k) vs bound",
        round(worst / MiB, 2),
        bound / MiB,
        " MiB",
    )
    return row, target


def _table(rows: list[tuple[object, ...]]) -> common.Table:
    return common.Table(
        f"resolver caches: {DISTINCT:,} distinct digests, then churn to {CHURN:,} inserts",
        (
            "configuration",
            "bound MiB",
            "RSS after warm-up MiB",
            f"RSS @{DISTINCT // 1000}k MiB",
            "RSS peak MiB",
            f"RSS @{CHURN // 1000}k MiB",
            f"accounted @{CHURN // 1000}k MiB",
            f"over fixed @{DISTINCT // 1000}k MiB",
            "over fixed at peak MiB",
            f"over fixed @{CHURN // 1000}k MiB",
            f"growth since warm-up @{CHURN // 1000}k MiB",
        ),
        tuple(rows),
    )


def _notes(tags: dict[str, int]) -> tuple[str, ...]:
    return (
        "fixed overhead = the RSS of the same run (fresh interpreter, same images, same 8+8 "
        "worker threads) with cache.maxBytes 0, at the same point; over fixed = RSS − that",
        "accounted = bytes charged in all five caches (manifests 1/2 of the bound, configs 1/4, "
        "tags 1/8, answers 1/16, 404s 1/16)",
        f"tag→digest cache, default cache.maxBytes (256 MiB; tags get 1/8 = "
        f"{tags['max_bytes'] / MiB:.0f} MiB): 100,000 tags put, {tags['entries']:,} kept, "
        f"{tags['bytes'] / MiB:.1f} MiB accounted, RSS grew "
        f"{(tags['after'] - tags['base']) / MiB:.1f} MiB",
    )


def main(argv: Sequence[str]) -> None:
    kind, value = argv
    result = worker(int(value)) if kind == "worker" else tags_worker(int(value))
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
