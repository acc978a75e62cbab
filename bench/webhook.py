"""Benchmark 1 — the warm webhook against the ceiling of its stack.

The webhook runs exactly as shipped: `gunicorn -c deploy/gunicorn.conf.py` (the settings of
`policy.server.gunicorn_settings`: one gthread worker with 16 threads, TLS), configured by the
IMAGE_POLICY_* environment. Its images live in the real distribution registry on loopback; a
first review resolves them, so every fact is cached for the measured load (the tag TTL is set
to an hour so none expires mid-run, and the registry requests counted by the webhook's own
metrics during the load prove it). In the same run, `bench/trivial_app.py` — a Flask app
returning one constant allowed AdmissionReview — is served by the same gunicorn config file:
the throughput this stack could reach if reviewing cost nothing.

Load: `wrk` over keep-alive TLS connections (like the API server's), POSTing an
AdmissionReview of a Deployment with 3 containers, at concurrency 1, 10 and 50. The load
generator is pinned to CPU 0 and both servers to CPU 1. Each point is measured `repeats`
times, alternating webhook and trivial app, and the medians are reported.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from bench import common
from policy import certs
from tests.support import images
from tests.support.procs import child_pids
from tests.support.registry import RunningRegistry, free_port, start_registry

CONCURRENCY = (1, 10, 50)
DURATION = 10.0
REPEATS = 3
TARGET_RATIO = 0.7
TARGET_P99_MS = 50.0
GUNICORN_CONF = common.ROOT / "deploy" / "gunicorn.conf.py"
TRIVIAL_APP = "bench.trivial_app:create_app()"
WRK = "wrk"

# (repository, layers) of the images the reviewed workloads use
IMAGES = (("shop/web", 4), ("shop/sidecar", 2), ("shop/tools", 1))

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


# --- review documents ----------------------------------------------------------------------


def admission_review(
    obj: dict[str, Any],
    *,
    kind: str,
    group: str = "",
    operation: str = "CREATE",
    namespace: str = "shop",
    old: dict[str, Any] | None = None,
    uid: str = "bench-uid",
) -> dict[str, Any]:
    """An AdmissionReview v1 request for `obj` of `kind`, as the API server sends it."""
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": group, "version": "v1", "kind": kind},
            "resource": {"group": group, "version": "v1", "resource": kind.lower() + "s"},
            "name": "web",
            "namespace": namespace,
            "operation": operation,
            "userInfo": {"username": "system:serviceaccount:ci:deployer", "groups": []},
            "object": obj,
            "oldObject": old,
            "dryRun": False,
        },
    }


def pod_spec(*refs: str, init: Sequence[str] = ()) -> dict[str, Any]:
    """A pod spec running `refs` (and `init` as init containers)."""
    spec: dict[str, Any] = {
        "containers": [
            {"name": f"c{i}", "image": ref, "ports": [{"containerPort": 8080 + i}]}
            for i, ref in enumerate(refs)
        ]
    }
    if init:
        spec["initContainers"] = [{"name": f"init{i}", "image": r} for i, r in enumerate(init)]
    return spec


def deployment(*refs: str) -> dict[str, Any]:
    """An apps/v1 Deployment of 3 replicas running `refs`."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"}},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": pod_spec(*refs)},
        },
    }


def deployment_review(refs: Sequence[str]) -> dict[str, Any]:
    """The benchmark's review: CREATE of a Deployment with one container per ref."""
    return admission_review(deployment(*refs), kind="Deployment", group="apps")


# --- gunicorn --------------------------------------------------------------------------------


@dataclass
class Gunicorn:
    """A gunicorn arbiter started with the shipped config file."""

    name: str
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    ca: Path

    def session(self) -> requests.Session:
        s = requests.Session()
        s.trust_env = False
        s.verify = str(self.ca)
        return s

    def workers(self) -> list[int]:
        return child_pids(self.process.pid)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        """SIGTERM (graceful), then SIGKILL after 15 s."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def start_gunicorn(
    name: str,
    directory: Path,
    env: Mapping[str, str],
    *,
    ca: Path,
    app: str | None = None,
    cpu: int | None = common.SERVER_CPU,
    wrapper: Sequence[str] = (),
    ready_seconds: float = 20.0,
) -> Gunicorn:
    """Run `gunicorn -c deploy/gunicorn.conf.py [app]` with `env` added to the environment
    (IMAGE_POLICY_*), pinned to `cpu`; return once `/readyz` answers 200 over TLS."""
    port = free_port()
    full_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("IMAGE_POLICY_")},
        "PYTHONPATH": str(common.ROOT),
        "IMAGE_POLICY_HOST": "127.0.0.1",
        "IMAGE_POLICY_PORT": str(port),
        **env,
    }
    command = [*wrapper, sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONF)]
    if app is not None:
        command.append(app)
    if cpu is not None:
        command = common.pinned(command, cpu)
    log_path = directory / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=common.ROOT,
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    server = Gunicorn(name, f"https://127.0.0.1:{port}", process, log_path, ca)
    try:
        wait_ready(server, ready_seconds)
    except BaseException:
        server.stop()
        raise
    return server


def wait_ready(server: Gunicorn, seconds: float = 20.0) -> None:
    """Poll `/readyz` until it answers 200; RuntimeError with the log after `seconds`."""
    end = time.monotonic() + seconds
    with server.session() as s:
        while time.monotonic() < end:
            if server.process.poll() is not None:
                raise RuntimeError(f"{server.name} exited early:\n{server.log()}")
            try:
                with s.get(f"{server.url}/readyz", timeout=1) as reply:
                    if reply.status_code == 200:
                        return
            except requests.RequestException:
                pass
            time.sleep(0.05)
    raise RuntimeError(f"{server.name} not ready within {seconds} s:\n{server.log()}")


def counters(server: Gunicorn, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples of Prometheus counter `name` (`name_total`) from the server's /metrics,
    by label set."""
    with server.session() as s, s.get(f"{server.url}/metrics", timeout=5) as reply:
        reply.raise_for_status()
        text = reply.text
    out: dict[tuple[tuple[str, str], ...], float] = {}
    pattern = re.compile(rf"^{re.escape(name)}_total(?:\{{(.*)\}})? (\S+)$")
    for line in text.splitlines():
        match = pattern.match(line)
        if match:
            labels = tuple(sorted(re.findall(r'(\w+)="([^"]*)"', match.group(1) or "")))
            out[labels] = float(match.group(2))
    return out


# --- the stack -------------------------------------------------------------------------------


@dataclass
class Stack:
    """The registry with the benchmark's images, the webhook, and (optionally) the trivial app."""

    directory: Path
    registry: RunningRegistry
    refs: tuple[str, ...]
    webhook: Gunicorn
    trivial: Gunicorn | None
    ca: Path


def seed(url: str) -> None:
    """Push IMAGES (linux/amd64, non-root) as tag 1.0."""
    for repository, layers in IMAGES:
        images.push_image(
            url,
            repository,
            "1.0",
            layers=[images.blob_bytes(f"{repository}/{n}", 512) for n in range(layers)],
            config=images.image_config("linux/amd64", user="1000"),
        )


@contextmanager
def webhook_stack(
    *,
    trivial: bool = True,
    settings: str = SETTINGS,
    rules: str = RULES,
    wrapper: Sequence[str] = (),
    ready_seconds: float = 20.0,
) -> Iterator[Stack]:
    """Start the registry (seeded), the webhook and optionally the trivial app, with a fresh
    CA and serving certificate (`image-policy certs`' own `issue`); stop all on exit.
    `wrapper` prefixes both gunicorn commands (benchmark 1b runs them under callgrind)."""
    with ExitStack() as stack:
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-hook-")))
        registry = start_registry(directory / "registry")
        stack.callback(registry.stop)
        common.pin(registry.process.pid, common.SERVER_CPU)
        seed(registry.url)
        bundle = certs.issue(
            "image-policy",
            "image-policy",
            now=datetime.now(UTC),
            days=1,
            extra_names=["127.0.0.1", "localhost"],
        )
        ca, cert, key = certs.write(bundle, directory / "tls")
        (directory / "rules").mkdir()
        (directory / "rules" / "rules.yaml").write_text(rules.format(host=registry.host))
        (directory / "settings.yaml").write_text(settings)
        tls = {"IMAGE_POLICY_TLS_CERT": str(cert), "IMAGE_POLICY_TLS_KEY": str(key)}
        webhook = start_gunicorn(
            "webhook",
            directory,
            {
                **tls,
                "IMAGE_POLICY_RULES": str(directory / "rules"),
                "IMAGE_POLICY_CONFIG": str(directory / "settings.yaml"),
            },
            ca=ca,
            wrapper=wrapper,
            ready_seconds=ready_seconds,
        )
        stack.callback(webhook.stop)
        ceiling = None
        if trivial:
            ceiling = start_gunicorn(
                "trivial",
                directory,
                tls,
                ca=ca,
                app=TRIVIAL_APP,
                wrapper=wrapper,
                ready_seconds=ready_seconds,
            )
            stack.callback(ceiling.stop)
        refs = tuple(f"{registry.host}/{repository}:1.0" for repository, _ in IMAGES)
        yield Stack(directory, registry, refs, webhook, ceiling, ca)


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
    with webhook_stack() as stack:
        assert stack.trivial is not None
        body = deployment_review(stack.refs)
        check_answers(stack, body)
        body_path = stack.directory / "review.json"
        body_path.write_text(json.dumps(body))
        script = stack.directory / "bench.lua"
        script.write_text(WRK_SCRIPT)
        wrk(f"{stack.webhook.url}/validate", body_path, script, connections=10, duration=2)
        wrk(f"{stack.trivial.url}/validate", body_path, script, connections=10, duration=2)
        before_reviews = counters(stack.webhook, "image_policy_reviews")
        before_registry = sum(counters(stack.webhook, "image_policy_registry_requests").values())
        runs: dict[tuple[str, int], list[Load]] = {}
        for _ in range(repeats):
            for c in CONCURRENCY:
                for server in (stack.webhook, stack.trivial):
                    load = wrk(
                        f"{server.url}/validate",
                        body_path,
                        script,
                        connections=c,
                        duration=duration,
                    )
                    runs.setdefault((server.name, c), []).append(load)
        after_reviews = counters(stack.webhook, "image_policy_reviews")
        registry_requests = (
            sum(counters(stack.webhook, "image_policy_registry_requests").values())
            - before_registry
        )
        workers = len(stack.webhook.workers())
    outcomes = {
        dict(labels).get("outcome", "?"): value - before_reviews.get(labels, 0.0)
        for labels, value in after_reviews.items()
    }
    not_allowed = sum(v for k, v in outcomes.items() if k != "allowed")
    points = {key: Point(key[0], key[1], tuple(loads)) for key, loads in runs.items()}
    rows = []
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
    errors = sum(p.errors for p in points.values())
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
