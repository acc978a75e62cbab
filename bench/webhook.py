"""Benchmark 1 — the warm webhook against the ceiling of its stack.

The webhook runs exactly as shipped: `gunicorn -c deploy/gunicorn.conf.py` (the settings of
`policy.server.gunicorn_settings`: one gthread worker with 16 threads, TLS), configured by the
IMAGE_POLICY_* environment. Its images live in the real distribution registry on loopback; a
first review resolves them, so every fact is cached for the measured load (the tag TTL is set
to an hour so none expires mid-run, and the registry requests counted by the webhook's own
metrics during the load prove it). In the same run, `bench/trivial_app.py` — a Flask app
returning one constant allowed AdmissionReview — is served by the same gunicorn config file:
the throughput this stack could reach if reviewing cost nothing. (The stack: bench/stack.py.)

Load: `wrk` over keep-alive TLS connections (like the API server's), POSTing an
AdmissionReview of a Deployment with 3 containers, at concurrency 1, 10 and 50. The load
generator is pinned to CPU 0 and both servers to CPU 1. Each point is measured `repeats`
times, alternating webhook and trivial app, and the medians are reported.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import common
from bench.stack import Stack, counters, webhook_stack
from tests.support.reviews import deployment_review

CONCURRENCY = (1, 10, 50)
DURATION = 10.0
REPEATS = 3
TARGET_RATIO = 0.7
TARGET_P99_MS = 50.0
WRK = "wrk"

Row = tuple[object, ...]

RULES = """\
apiVersion: image-policy/v1
kind: RuleSet
metadata: {{name: bench}}
defaults: {{action: deny, onResolveError: deny, unmatched: deny, platforms: ["linux/amd64"]}}
rules:
  - id: trusted-registries
    match: {{images: ["**"]}}
    require: {{registries: ["{host}"]}}
  - id: no-latest
    match: {{images: ["**"]}}
    require: {{denyTags: ["latest"]}}
  - id: non-root
    match: {{images: ["**"]}}
    require: {{nonRootUser: true}}
  - id: few-layers
    match: {{images: ["**"]}}
    require: {{maxLayers: 30}}
  - id: prod-pinned
    match: {{images: ["**"], namespaces: ["prod"]}}
    require: {{digest: true}}
"""

SETTINGS = (
    "cache: {tagTTL: 1h}\ntimeouts: {request: 5s, decision: 8s}\n"
    # The benchmark's registry (and the relay in front of it) is on loopback, which the
    # webhook's egress policy refuses unless told.
    'egress: {allow: ["127.0.0.0/8"]}\n'
)


WRK_SCRIPT = """\
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

function init(args)
  local f = assert(io.open(args[1], "rb"))
  wrk.body = f:read("*a")
  f:close()
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK {"requests": %d, "duration_us": %d, "p50_us": %d, "p95_us": %d, "p99_us": %d, ' ..
    '"max_us": %d, "connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(95),
    latency:percentile(99), latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
"""


# --- load --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Load:
    """One wrk run's figures (latencies in milliseconds)."""

    requests: int
    rps: float
    p50: float
    p95: float
    p99: float
    max: float
    errors: int


def wrk(url: str, body: Path, script: Path, *, connections: int, duration: float) -> Load:
    """POST `body` to `url` for `duration` seconds over `connections` keep-alive connections
    (one wrk thread, pinned to the load CPU). Errors: connect, read, write, timeout and non-2xx."""
    command = common.pinned(
        [
            WRK,
            "-t1",
            f"-c{connections}",
            f"-d{duration:g}s",
            "--timeout",
            "5s",
            "-s",
            str(script),
            url,
            "--",
            str(body),
        ],
        common.LOAD_CPU,
    )
    done = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr}{done.stdout}")
    line = next((x for x in done.stdout.splitlines() if x.startswith("WRK ")), None)
    if line is None:
        raise RuntimeError(f"no summary from wrk:\n{done.stdout}")
    raw = json.loads(line[4:])
    errors = sum(raw[k] for k in ("connect", "read", "write", "status", "timeout"))
    return Load(
        requests=raw["requests"],
        rps=raw["requests"] / (raw["duration_us"] / 1e6),
        p50=raw["p50_us"] / 1000,
        p95=raw["p95_us"] / 1000,
        p99=raw["p99_us"] / 1000,
        max=raw["max_us"] / 1000,
        errors=errors,
    )


@dataclass(frozen=True)
class Point:
    """The medians of one server's repeats at one concurrency (errors: the total)."""

    server: str
    concurrency: int
    runs: tuple[Load, ...]

    def med(self, attr: str) -> float:
        return common.median([float(getattr(r, attr)) for r in self.runs])

    @property
    def errors(self) -> int:
        return sum(r.errors for r in self.runs)


def check_answers(stack: Stack, body: dict[str, Any]) -> None:
    """The webhook allows the benchmark review (and resolves its images doing so: the warm-up)
    and the trivial app answers; RuntimeError otherwise."""
    assert stack.trivial is not None
    for server in (stack.webhook, stack.trivial):
        with server.session() as s, s.post(f"{server.url}/validate", json=body, timeout=30) as r:
            if r.status_code != 200 or r.json()["response"]["allowed"] is not True:
                raise RuntimeError(f"{server.name} answered {r.status_code} {r.text}")


def run(*, duration: float = DURATION, repeats: int = REPEATS) -> common.Result:
    """Measure the webhook and the trivial app at each concurrency, `repeats` × `duration` s."""
    if not common.can_pin():
        raise RuntimeError("benchmark 1 needs two usable CPUs (load on CPU 0, server on CPU 1)")
    with webhook_stack(rules=RULES, settings=SETTINGS) as stack:
        body, script = prepare_load(stack)
        before_reviews = counters(stack.webhook, "image_policy_reviews")
        before_registry = registry_requests(stack)
        runs = measure(stack, body, script, duration=duration, repeats=repeats)
        after_reviews = counters(stack.webhook, "image_policy_reviews")
        made = registry_requests(stack) - before_registry
        workers = len(stack.webhook.workers())
    outcomes = {
        dict(labels).get("outcome", "?"): value - before_reviews.get(labels, 0.0)
        for labels, value in after_reviews.items()
    }
    points = {key: Point(key[0], key[1], tuple(loads)) for key, loads in runs.items()}
    return report(points, runs, outcomes, made, workers=workers, duration=duration, repeats=repeats)


def prepare_load(stack: Stack) -> tuple[Path, Path]:
    """Check both servers answer the review (the webhook's warm-up), write the review and the
    wrk script to the stack's directory, and warm both servers with 2 s of load; return the
    review's and the script's paths."""
    assert stack.trivial is not None
    review = deployment_review(stack.refs)
    check_answers(stack, review)
    body = stack.directory / "review.json"
    body.write_text(json.dumps(review))
    script = stack.directory / "bench.lua"
    script.write_text(WRK_SCRIPT)
    wrk(f"{stack.webhook.url}/validate", body, script, connections=10, duration=2)
    wrk(f"{stack.trivial.url}/validate", body, script, connections=10, duration=2)
    return body, script


def registry_requests(stack: Stack) -> float:
    """The registry requests the webhook has made so far (its own metrics)."""
    return sum(counters(stack.webhook, "image_policy_registry_requests").values())


def measure(
    stack: Stack, body: Path, script: Path, *, duration: float, repeats: int
) -> dict[tuple[str, int], list[Load]]:
    """`repeats` rounds of a wrk run per concurrency, alternating webhook and trivial app: the
    loads by (server name, concurrency)."""
    assert stack.trivial is not None
    runs: dict[tuple[str, int], list[Load]] = {}
    for _ in range(repeats):
        for c in CONCURRENCY:
            for server in (stack.webhook, stack.trivial):
                load = wrk(
                    f"{server.url}/validate",
                    body,
                    script,
                    connections=c,
                    duration=duration,
                )
                runs.setdefault((server.name, c), []).append(load)
    return runs


def compare(points: Mapping[tuple[str, int], Point]) -> tuple[list[Row], list[common.Target]]:
    """The table's rows (webhook then trivial app per concurrency, with the webhook/trivial
    throughput ratio) and the ratio and p99 targets."""
    rows: list[Row] = []
    targets = []
    for c in CONCURRENCY:
        hook, ceiling = points[("webhook", c)], points[("trivial", c)]
        ratio = hook.med("rps") / ceiling.med("rps")
        for p in (hook, ceiling):
            rows.append(
                (
                    p.server,
                    c,
                    round(p.med("rps")),
                    round(p.med("p50"), 2),
                    round(p.med("p95"), 2),
                    round(p.med("p99"), 2),
                    p.errors,
                    round(ratio, 3) if p is hook else "",
                )
            )
        targets.append(
            common.Target(
                f"webhook/trivial throughput at c={c}", round(ratio, 3), TARGET_RATIO, "×", True
            )
        )
    targets.append(
        common.Target(
            "webhook p99 at c=50",
            round(points[("webhook", 50)].med("p99"), 2),
            TARGET_P99_MS,
            " ms",
        )
    )
    return rows, targets


def report(
    points: Mapping[tuple[str, int], Point],
    runs: Mapping[tuple[str, int], list[Load]],
    outcomes: dict[str, float],
    registry_requests: float,
    *,
    workers: int,
    duration: float,
    repeats: int,
) -> common.Result:
    """The benchmark's result: the comparison table, its targets (plus no errors and every
    review allowed), notes on the load, and every run's figures."""
    rows, targets = compare(points)
    errors = sum(p.errors for p in points.values())
    not_allowed = sum(v for k, v in outcomes.items() if k != "allowed")
    targets.append(common.Target("errors (all runs)", errors, 0))
    targets.append(common.Target("webhook reviews not allowed", not_allowed, 0))
    table = common.Table(
        f"Warm webhook vs trivial Flask app, same gunicorn settings ({workers} worker, "
        f"gthread; medians of {repeats} × {duration:g} s; load CPU 0, server CPU 1)",
        ("server", "concurrency", "req/s", "p50 ms", "p95 ms", "p99 ms", "errors", "ratio"),
        tuple(rows),
    )
    notes = (
        "review: AdmissionReview v1 CREATE of a Deployment with 3 containers (images in the "
        "local distribution registry, all facts cached by a first review)",
        f"registry requests made by the webhook during the load: {registry_requests:g}",
        f"webhook review outcomes during the load: {json.dumps(outcomes)}",
        "load: wrk -t1 over keep-alive TLS connections; server: gunicorn -c "
        "deploy/gunicorn.conf.py (TLS, 1 gthread worker × 16 threads)",
    )
    data = {f"{server}@{c}": [vars(load) for load in loads] for (server, c), loads in runs.items()}
    return common.Result(
        name="webhook",
        title="1. Warm webhook",
        tables=(table,),
        targets=tuple(targets),
        notes=notes,
        data={"runs": data, "registry_requests": registry_requests, "outcomes": outcomes},
    )


if __name__ == "__main__":
    quick = os.environ.get("BENCH_QUICK") == "1"
    result = run(duration=3, repeats=1) if quick else run()
    print(result.render())
