"""Benchmark 6 — evaluator: decisions per second of the pure core (`needs` + `evaluate_image`).

Each shipped rule set (rules/default.yaml and rules/examples/*.yaml) judges a realistic mix of
images whose facts are already known: Docker Hub official and unknown-namespace images,
company-registry images pinned by digest, a two-platform index with attestations, tags such as
`latest` and `-dev`, namespaces prod/dev. Single-threaded, pinned to the load CPU; each figure
is the median of 7 runs of ~0.5 s.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType

from bench import common
from policy.evaluate import Context, evaluate_image, needs
from policy.facts import ATTESTATION_PLATFORM, ImageFacts, PlatformFacts
from policy.loader import load_rules
from policy.reference import Reference, parse
from policy.rules import RuleSet

RUNS = 7
RUN_SECONDS = 0.5
NOW = datetime(2025, 6, 1, tzinfo=UTC)
SHA = "sha256:" + "ab" * 32


def _platform(name: str, n: int, *, user: str = "1000") -> PlatformFacts:
    return PlatformFacts(
        platform=name,
        digest="sha256:" + f"{n:02x}" * 32,
        layers=5 + n,
        size=(40 + n) * 1024 * 1024,
        user=user,
        created=datetime(2025, 1, 1 + n, tzinfo=UTC),
        labels=MappingProxyType(
            {
                "org.opencontainers.image.source": "https://git.corp.example/team/app",
                "org.opencontainers.image.revision": "0123456789abcdef",
            }
        ),
        config_known=True,
    )


def workload() -> list[tuple[Reference, ImageFacts, str]]:
    """(reference, facts, namespace) triples: the mix every rule set judges."""
    single = (_platform("linux/amd64", 1),)
    index = (
        _platform("linux/amd64", 2),
        _platform("linux/arm64/v8", 3),
        PlatformFacts(platform=ATTESTATION_PLATFORM, digest="sha256:" + "cd" * 32),
        PlatformFacts(platform=ATTESTATION_PLATFORM, digest="sha256:" + "ef" * 32),
    )
    cases = [
        ("nginx:1.25", "official", index, True, "prod"),
        ("docker.io/library/redis@" + SHA, "official", index, True, "prod"),
        ("bitnami/postgresql:16", "verified_publisher", single, False, "prod-data"),
        ("randomuser/tool:latest", "none", single, False, "dev"),
        ("registry.corp.example/team/api@" + SHA, "none", single, False, "prod"),
        ("registry.corp.example/team/web:2.3.1", "none", index, True, "prod"),
        ("registry.k8s.io/pause:3.9", "none", single, False, "kube-system"),
        ("ghcr.io/org/app:1.0-dev", "none", (_platform("linux/amd64", 4, user=""),), False, "dev"),
    ]
    out = []
    for text, tier, platforms, is_index, namespace in cases:
        facts = ImageFacts(
            digest=SHA,
            media_type="application/vnd.oci.image.index.v1+json" if is_index else None,
            index=is_index,
            tier=tier,
            tier_source="catalog",
            platforms=platforms,
        )
        out.append((parse(text), facts, namespace))
    return out


def rule_sets() -> list[tuple[str, RuleSet]]:
    root = common.ROOT / "rules"
    files = [root / "default.yaml", *sorted((root / "examples").glob("*.yaml"))]
    return [(str(Path(f).relative_to(common.ROOT)), load_rules([f])) for f in files]


def _rate(ruleset: RuleSet, cases: list[tuple[Reference, ImageFacts, str]]) -> float:
    """Decisions per second over RUN_SECONDS (each decision: needs + evaluate_image)."""
    decided = 0
    end = time.perf_counter() + RUN_SECONDS
    start = time.perf_counter()
    while time.perf_counter() < end:
        for ref, facts, namespace in cases:
            context = Context(now=NOW, namespace=namespace)
            needs(ruleset, ref, context)
            evaluate_image(ruleset, ref, facts, context)
        decided += len(cases)
    return decided / (time.perf_counter() - start)


def run() -> common.Result:
    common.pin_load_generator()
    cases = workload()
    rows = []
    data: dict[str, object] = {}
    for name, ruleset in rule_sets():
        _rate(ruleset, cases)  # warm-up
        rates = [_rate(ruleset, cases) for _ in range(RUNS)]
        denied = sum(
            1
            for ref, facts, ns in cases
            if not evaluate_image(ruleset, ref, facts, Context(now=NOW, namespace=ns)).allowed
        )
        rows.append(
            (
                name,
                len(ruleset.rules),
                len(cases),
                denied,
                common.median(rates),
                min(rates),
                max(rates),
                1e6 / common.median(rates),
            )
        )
        data[name] = rates
    table = common.Table(
        "pure-core decisions per second (needs + evaluate_image), one thread",
        ("rule set", "rules", "images", "denied", "median /s", "min /s", "max /s", "µs each"),
        tuple(rows),
    )
    notes = (f"median of {RUNS} runs of {RUN_SECONDS} s each after a warm-up run",)
    return common.Result("evaluator", "6. evaluator", (table,), (), notes, data)
