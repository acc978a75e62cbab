"""The soak: the webhook as shipped (benchmark 1's stack: gunicorn -c deploy/gunicorn.conf.py
over TLS, images in the real registry) under a fixed request rate of mixed reviews for 60 s.

Mix, one `hey` per review kind (each `-c 2 -q rate/12`, all pinned to the load CPU, so the
total rate is fixed): a Pod with an init container, a Deployment with 3 containers, a CronJob,
an UPDATE of a Deployment whose images did not change, an ImageReview, and a Pod whose image
has too many layers (denied: a denial is an answer, not an error). The worker's resident
memory is read from /proc/<pid>/status every 2 s. Targets: zero errors (every request
answered 200 with the expected verdict), the requested rate achieved, and flat memory (the
least-squares slope of RSS after the first 10 s under 1 MiB/min).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Any

from bench import common
from bench.stack import Stack, counters, webhook_stack
from bench.webhook import RULES, SETTINGS
from tests.support import images
from tests.support.reviews import admission_review, deployment, pod_spec

DURATION = 60.0
RATE = 100.0
PER_KIND_CONNECTIONS = 2
SAMPLE_EVERY = 2.0
WARMUP = 10.0
TARGET_SLOPE_KIB_PER_MIN = 1024.0
HEY = "hey"
FAT_LAYERS = 31


@dataclass(frozen=True)
class Kind:
    """One kind of review in the mix: its endpoint, body and expected verdict."""

    name: str
    path: str
    body: dict[str, Any]
    allowed: bool


def mix(stack: Stack, fat: str) -> list[Kind]:
    """The reviews of the soak (images: stack.refs = web, sidecar, tools; `fat` is denied)."""
    web, sidecar, tools = stack.refs
    old = deployment(web, sidecar, tools)
    scaled = deployment(web, sidecar, tools)
    scaled["spec"]["replicas"] = 5
    return [
        Kind(
            "Pod with init container",
            "/validate",
            admission_review(
                {"kind": "Pod", "spec": pod_spec(web, sidecar, init=[tools])}, kind="Pod"
            ),
            True,
        ),
        Kind(
            "Deployment (3 containers)",
            "/validate",
            admission_review(deployment(web, sidecar, tools), kind="Deployment", group="apps"),
            True,
        ),
        Kind(
            "CronJob",
            "/validate",
            admission_review(cronjob(tools), kind="CronJob", group="batch"),
            True,
        ),
        Kind(
            "UPDATE, images unchanged",
            "/validate",
            admission_review(scaled, kind="Deployment", group="apps", operation="UPDATE", old=old),
            True,
        ),
        Kind(
            "ImageReview",
            "/imagereview",
            {
                "apiVersion": "imagepolicy.k8s.io/v1alpha1",
                "kind": "ImageReview",
                "spec": {
                    "containers": [{"image": web}, {"image": sidecar}],
                    "namespace": "shop",
                    "annotations": {},
                },
            },
            True,
        ),
        Kind(
            f"Pod denied ({FAT_LAYERS} layers)",
            "/validate",
            admission_review({"kind": "Pod", "spec": pod_spec(fat)}, kind="Pod"),
            False,
        ),
    ]


def cronjob(image: str) -> dict[str, Any]:
    """A batch/v1 CronJob running `image` nightly."""
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "nightly"},
        "spec": {
            "schedule": "0 3 * * *",
            "jobTemplate": {"spec": {"template": {"spec": pod_spec(image)}}},
        },
    }


def _allowed(path: str, answer: dict[str, Any]) -> bool:
    part = answer["status"] if path == "/imagereview" else answer["response"]
    return bool(part["allowed"])


@dataclass(frozen=True)
class HeyResult:
    """What one `hey` run reports."""

    rps: float
    statuses: dict[int, int]
    errors: dict[str, int]
    p50: float
    p99: float

    @property
    def total(self) -> int:
        return sum(self.statuses.values()) + sum(self.errors.values())


def parse_hey(text: str) -> HeyResult:
    """The summary `hey` prints: requests/s, status codes, errors, latency percentiles (ms)."""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))  # type: ignore[union-attr]
    statuses = {int(c): int(n) for c, n in re.findall(r"\[(\d{3})\]\s+(\d+) responses", text)}
    errors: dict[str, int] = {}
    if "Error distribution:" in text:
        for n, message in re.findall(
            r"^\s+\[(\d+)\]\s+(.+)$", text.split("Error distribution:", 1)[1], re.M
        ):
            errors[message.strip()] = int(n)
    pct = {p: float(s) * 1000 for p, s in re.findall(r"(\d+)%+ in ([\d.]+) secs", text)}
    return HeyResult(
        rps, statuses, errors, pct.get("50", float("nan")), pct.get("99", float("nan"))
    )


def slope_per_minute(samples: list[tuple[float, int]]) -> float:
    """Least-squares slope of (seconds, bytes) samples, in KiB per minute."""
    if len(samples) < 2:
        return 0.0
    n = len(samples)
    mean_t = sum(t for t, _ in samples) / n
    mean_v = sum(v for _, v in samples) / n
    var = sum((t - mean_t) ** 2 for t, _ in samples)
    if var == 0:
        return 0.0
    cov = sum((t - mean_t) * (v - mean_v) for t, v in samples)
    return cov / var * 60 / 1024


def run(*, duration: float = DURATION, rate: float = RATE) -> common.Result:
    """Soak the webhook for `duration` s at `rate` requests/s of mixed reviews."""
    with webhook_stack(rules=RULES, settings=SETTINGS, trivial=False) as stack:
        kinds = mix(stack, push_fat(stack))
        check_verdicts(stack, kinds)
        workers = stack.webhook.workers()
        if len(workers) != 1:
            raise RuntimeError(f"expected one gunicorn worker, found {workers}")
        worker = workers[0]
        before = counters(stack.webhook, "image_policy_reviews")
        per_worker_q = rate / len(kinds) / PER_KIND_CONNECTIONS
        processes = start_load(stack, kinds, duration=duration, per_worker_q=per_worker_q)
        outputs, samples = sample_until_done(processes, worker, duration=duration)
        after = counters(stack.webhook, "image_policy_reviews")
        alive = worker in stack.webhook.workers()
    results = [parse_hey(text) for text in outputs]
    outcomes = {
        ",".join(f"{k}={v}" for k, v in labels): value - before.get(labels, 0.0)
        for labels, value in after.items()
        if value - before.get(labels, 0.0)
    }
    load, errors, achieved = load_table(kinds, results, duration, rate, per_worker_q)
    memory, slope = memory_table(samples)
    targets = (
        common.Target("errors", errors, 0),
        *verdict_targets(kinds, results, outcomes),
        common.Target("rate achieved", round(achieved, 1), rate * 0.95, " req/s", True),
        common.Target(
            "RSS slope after warm-up", round(slope), TARGET_SLOPE_KIB_PER_MIN, " KiB/min"
        ),
        common.Target("worker survived (same pid)", int(alive), 1, "", True),
    )
    return common.Result(
        name="soak",
        title="Soak",
        tables=(load, memory),
        targets=targets,
        notes=(
            f"webhook review outcomes during the soak: {json.dumps(outcomes)}",
            "server: gunicorn -c deploy/gunicorn.conf.py (TLS, 1 gthread worker × 16 threads)",
        ),
        data={
            "samples": samples,
            "outcomes": outcomes,
            "hey": [vars(r) for r in results],
        },
    )


def push_fat(stack: Stack) -> str:
    """Push the image with FAT_LAYERS layers (one too many for the rules); return its reference."""
    images.push_image(
        stack.registry.url,
        "shop/fat",
        "1.0",
        layers=[images.blob_bytes(f"fat/{n}", 128) for n in range(FAT_LAYERS)],
        config=images.image_config("linux/amd64", user="1000"),
    )
    return f"{stack.registry.host}/shop/fat:1.0"


def check_verdicts(stack: Stack, kinds: list[Kind]) -> None:
    """Post each kind once (the warm-up); RuntimeError unless each gets its expected verdict."""
    with stack.webhook.session() as s:
        for kind in kinds:
            with s.post(f"{stack.webhook.url}{kind.path}", json=kind.body, timeout=30) as r:
                if r.status_code != 200 or _allowed(kind.path, r.json()) is not kind.allowed:
                    raise RuntimeError(f"{kind.name}: {r.status_code} {r.text}")


def start_load(
    stack: Stack, kinds: list[Kind], *, duration: float, per_worker_q: float
) -> list[subprocess.Popen[bytes]]:
    """Start one `hey` per kind (PER_KIND_CONNECTIONS connections, each at `per_worker_q`
    requests/s, for `duration` s, pinned to the load CPU), its output piped."""
    processes = []
    for i, kind in enumerate(kinds):
        body = stack.directory / f"soak-{i}.json"
        body.write_text(json.dumps(kind.body))
        command = common.pinned(
            [
                HEY,
                "-z",
                f"{duration:g}s",
                "-c",
                str(PER_KIND_CONNECTIONS),
                "-q",
                f"{per_worker_q:g}",
                "-m",
                "POST",
                "-T",
                "application/json",
                "-t",
                "10",
                "-D",
                str(body),
                f"{stack.webhook.url}{kind.path}",
            ],
            common.LOAD_CPU,
        )
        processes.append(
            subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        )
    return processes


def sample_until_done(
    processes: list[subprocess.Popen[bytes]], worker: int, *, duration: float
) -> tuple[list[str], list[tuple[float, int]]]:
    """Read the worker's VmRSS every SAMPLE_EVERY s until every `hey` has exited (killing them
    all 60 s past `duration`): their outputs, and the (seconds, bytes) samples."""
    outputs: list[str] = [""] * len(processes)

    def drain(i: int) -> None:
        stream = processes[i].stdout
        assert stream is not None
        outputs[i] = stream.read().decode(errors="replace")

    readers = [threading.Thread(target=drain, args=(i,)) for i in range(len(processes))]
    for reader in readers:
        reader.start()
    started = time.monotonic()
    samples: list[tuple[float, int]] = []
    while any(p.poll() is None for p in processes):
        elapsed = time.monotonic() - started
        if elapsed > duration + 60:
            for p in processes:
                p.kill()
            raise RuntimeError("hey did not finish")
        samples.append((elapsed, common.vm_rss_bytes(worker)))
        time.sleep(SAMPLE_EVERY)
    samples.append((time.monotonic() - started, common.vm_rss_bytes(worker)))
    for reader in readers:
        reader.join(timeout=10)
    return outputs, samples


def load_table(
    kinds: list[Kind], results: list[HeyResult], duration: float, rate: float, per_worker_q: float
) -> tuple[common.Table, int, float]:
    """The load table (a row per kind, then all), the errors (non-200 answers and failed
    requests) and the rate achieved."""
    rows: list[tuple[object, ...]] = []
    errors = 0
    for kind, res in zip(kinds, results, strict=True):
        bad = sum(n for code, n in res.statuses.items() if code != 200) + sum(res.errors.values())
        errors += bad
        rows.append(
            (
                kind.name,
                "allowed" if kind.allowed else "denied",
                res.total,
                round(res.rps, 1),
                round(res.p50, 2),
                round(res.p99, 2),
                bad,
            )
        )
    achieved = sum(r.rps for r in results)
    rows.append(("all", "", sum(r.total for r in results), round(achieved, 1), "", "", errors))
    table = common.Table(
        f"Soak: {duration:g} s at {rate:g} req/s of mixed reviews (hey -c "
        f"{PER_KIND_CONNECTIONS} -q {per_worker_q:g} per kind; load CPU 0, server CPU 1)",
        ("review", "verdict", "requests", "req/s", "p50 ms", "p99 ms", "errors"),
        tuple(rows),
    )
    return table, errors, achieved


def memory_table(samples: list[tuple[float, int]]) -> tuple[common.Table, float]:
    """The worker's memory table and its RSS slope after WARMUP (KiB/min)."""
    steady = [(t, v) for t, v in samples if t >= WARMUP]
    slope = slope_per_minute(steady)
    mib = 1024 * 1024
    table = common.Table(
        f"Worker resident memory (VmRSS every {SAMPLE_EVERY:g} s)",
        ("start MiB", f"at {WARMUP:g} s MiB", "end MiB", "max MiB", "slope after warm-up"),
        (
            (
                round(samples[0][1] / mib, 2),
                round((steady[0][1] if steady else samples[0][1]) / mib, 2),
                round(samples[-1][1] / mib, 2),
                round(max(v for _, v in samples) / mib, 2),
                f"{slope:+.0f} KiB/min",
            ),
        ),
    )
    return table, slope


def verdict_targets(
    kinds: list[Kind], results: list[HeyResult], outcomes: dict[str, float]
) -> tuple[common.Target, ...]:
    """Every request must have been decided with its kind's verdict: the webhook's own
    counters show no outcome but allowed, denied and skipped, and as many denials as
    requests of the denied kind."""
    denied_expected = sum(r.total for k, r in zip(kinds, results, strict=True) if not k.allowed)
    denied_seen = sum(v for k, v in outcomes.items() if "outcome=denied" in k)
    unexpected = sum(
        v
        for k, v in outcomes.items()
        if not any(f"outcome={o}" in k for o in ("allowed", "denied", "skipped"))
    )
    return (
        common.Target("unexpected outcomes (webhook metrics)", unexpected, 0),
        common.Target(
            "denials = denied-kind requests", abs(denied_seen - denied_expected), 0, " off"
        ),
    )


if __name__ == "__main__":
    quick = os.environ.get("BENCH_QUICK") == "1"
    print((run(duration=15) if quick else run()).render())
