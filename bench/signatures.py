"""Signatures and attestations (#17) — what verifying a signature costs a decision, cold and
warm.

The real registry (distribution 2.8: no OCI referrers API) sits behind the counting relay
(tests/support/relay.py), adding 50 ms to every request. N single-platform images, each in its
own repository, are signed in cosign's `.sig` layout (one ECDSA P-256 signature each). Each
cold decision goes through `Service.decide` with a fresh resolver from `policy.resolver.build`,
twice interleaved: with a rule reading the manifest only (`maxLayers`), and with the same rule
plus `signatures: {keys: [the key]}`.

The protocol minimum per image, signatures added to a rule that already reads the manifest:
the `.sig` manifest (1), one blob per signature layer (1 here), the referrers API (1), and —
only on a registry without that API, as here — the `sha256-<hex>` referrers fallback tag (1):
4 requests, 3 on a registry with the referrers API. Nothing can be skipped: signatures live in
either place, and a payload is only known from its blob. The signature lookups of one image
run once its digest is known (its tag's GET), the `.sig` branch and the referrers branch side
by side, so its critical path grows by two round trips; images are still resolved in
parallel.

Warm: the same decision repeated with the resolver's answers cached: requests per review (0)
and the CPU per review with and without the signature rule.

    python -m bench signatures
"""

from __future__ import annotations

import base64
import time
from collections import Counter

from bench import common
from bench.env import Env, push_small_image, registry_env
from policy.deadline import Deadline
from policy.loader import load_rules_text
from policy.reference import parse
from policy.rules import RuleSet
from policy.service import Item, Service
from tests.support import cosign

LATENCY = 0.05
IMAGES = 3
ROUNDS = 5
WARM_REVIEWS = 2000
KEY = cosign.keypair()

BASE = """
apiVersion: image-policy/v1
kind: RuleSet
defaults: {platforms: ["linux/amd64"], unmatched: deny}
rules:
  - id: few-layers
    match: {images: ["**"]}
    require: {maxLayers: 30}
"""
SIGNED = (
    BASE
    + """  - id: signed
    match: {images: ["**"]}
    require:
      signatures:
        keys:
          - |
"""
    + "".join(f"            {line}\n" for line in KEY.public_pem.splitlines())
)


def _seed(url: str) -> None:
    for i in range(IMAGES):
        repository = f"signed/app{i}"
        digest = push_small_image(url, repository, "1.0", seed=f"sig/{i}")
        body = cosign.payload(digest, f"registry.example/{repository}")
        cosign.push_cosign(
            url, repository, digest, [(body, base64.b64encode(KEY.sign(body)).decode())]
        )


def _kinds(counts: dict[tuple[str, str], int]) -> Counter[str]:
    out: Counter[str] = Counter()
    for (method, path), n in counts.items():
        if path.endswith(".sig"):
            out["GET .sig"] += n
        elif "/referrers/" in path:
            out["GET referrers"] += n
        elif "/manifests/sha256-" in path:
            out["GET fallback tag"] += n
        elif "/blobs/" in path:
            out["GET blob"] += n
        else:
            out[f"{method} manifest"] += n
    return out


def run() -> common.Result:
    common.pin_load_generator()
    data: dict[str, object] = {}
    with registry_env(_seed, token_auth=False, latency=LATENCY) as env:
        refs = [f"{env.host}/signed/app{i}:1.0" for i in range(IMAGES)]
        items = [Item(parse(r)) for r in refs]
        rulesets = {"manifest only": load_rules_text(BASE), "+ signatures": load_rules_text(SIGNED)}
        times, counts = _cold(env, items, rulesets)
        rows = _cold_rows(times, counts, data)
        extra = (
            sum(counts["+ signatures"].values()) - sum(counts["manifest only"].values())
        ) / IMAGES
        targets = [common.Target("extra requests per new image (no referrers API)", extra, 4)]
        warm_rows = _warm(env, items, rulesets, targets, data)
    cold = common.median(times["+ signatures"]) / common.median(times["manifest only"])
    return common.Result(
        "signatures",
        "Signatures and attestations (#17): cold and warm cost of signature checks",
        (
            common.Table(
                f"cold decisions of {IMAGES} new signed images (+{LATENCY * 1000:.0f} ms per "
                f"request, median of {ROUNDS}, interleaved)",
                ("rules", "images", "median ms", "min ms", "requests", "per image", "by kind"),
                tuple(rows),
            ),
            common.Table(
                "warm reviews (every answer cached)",
                ("rules", "images", "reviews", "requests", "CPU µs per review"),
                tuple(warm_rows),
            ),
        ),
        tuple(targets),
        (
            f"cold latency with signatures / without: {cold:.2f}× (the signature lookups "
            "of an image follow its tag's GET: the .sig branch (manifest, payload) and the "
            "referrers branch (API, fallback tag) run side by side, 2 round trips)",
            "the registry has no referrers API: each image also pays the fallback tag (404)",
        ),
        data,
    )


def _cold(
    env: Env, items: list[Item], rulesets: dict[str, RuleSet]
) -> tuple[dict[str, list[float]], dict[str, Counter[str]]]:
    """ROUNDS cold decisions of `items` per rule set, interleaved, each with a fresh resolver
    (after a round 0 not counted): the wall times, and the requests of the last round, by rule
    set."""
    times: dict[str, list[float]] = {k: [] for k in rulesets}
    counts: dict[str, Counter[str]] = {}
    for round_ in range(ROUNDS + 1):  # round 0 warms imports and the registry's file cache
        for label, ruleset in rulesets.items():
            env.reset()
            resolver = env.resolver()
            try:
                service = Service(ruleset, resolver)
                started = time.perf_counter()
                decisions = service.decide(items, deadline=Deadline(30.0))
                elapsed = time.perf_counter() - started
            finally:
                env.close(resolver)
            assert all(d.allowed for d in decisions), decisions
            if round_:
                times[label].append(elapsed)
                counts[label] = _kinds(env.proxy.counts())
    return times, counts


def _cold_rows(
    times: dict[str, list[float]], counts: dict[str, Counter[str]], data: dict[str, object]
) -> list[tuple[object, ...]]:
    """The cold table's rows, a rule set each; their figures go to `data` too."""
    rows: list[tuple[object, ...]] = []
    for label in times:
        seen = counts[label]
        rows.append(
            (
                label,
                IMAGES,
                common.median(times[label]) * 1000,
                min(times[label]) * 1000,
                sum(seen.values()),
                sum(seen.values()) / IMAGES,
                ", ".join(f"{k} {v}" for k, v in sorted(seen.items())),
            )
        )
        data[f"cold/{label}"] = {"seconds": times[label], "requests": dict(seen)}
    return rows


def _warm(
    env: Env,
    items: list[Item],
    rulesets: dict[str, RuleSet],
    targets: list[common.Target],
    data: dict[str, object],
) -> list[tuple[object, ...]]:
    """Per rule set, one resolver with its answers cached, the same review WARM_REVIEWS times:
    the warm table's rows; a target per rule set (no requests) goes to `targets`, the figures
    to `data`."""
    warm_rows: list[tuple[object, ...]] = []
    for label, ruleset in rulesets.items():
        resolver = env.resolver()
        try:
            service = Service(ruleset, resolver)
            service.decide(items, deadline=Deadline(30.0))
            env.reset()
            before = time.process_time()
            for _ in range(WARM_REVIEWS):
                service.decide(items, deadline=Deadline(30.0))
            cpu = (time.process_time() - before) / WARM_REVIEWS
            made = env.proxy.total()
        finally:
            env.close(resolver)
        warm_rows.append((label, IMAGES, WARM_REVIEWS, made, cpu * 1e6))
        data[f"warm/{label}"] = {"cpu_per_review": cpu, "requests": made}
        targets.append(common.Target(f"warm requests ({label})", made, 0))
    return warm_rows
