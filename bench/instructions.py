"""Benchmark 1b — what one warm review costs in CPU instructions, without the machine's noise.

Benchmark 1 compares requests per second, which on this shared 2-core machine move by ±15%
from run to run. Instructions do not: `valgrind --tool=callgrind` counts those executed, the
same for the same code, inputs and interpreter whatever else the machine does.

Each configuration runs in its own interpreter under callgrind with instrumentation off; the
worker builds the app in-process (the real webhook app over the real registry, every fact
cached by warm-up reviews, or the trivial app), makes WARMUP requests, turns instrumentation on
with `callgrind_control -i on`, makes MEASURED direct WSGI calls with the benchmark's
AdmissionReview (the Deployment with 3 containers), and turns it off. Every thread of the
process is counted, so the decision log's writer thread is included (its pending lines are
flushed before counting starts and before it stops, so each run counts the same work). gunicorn
and TLS are not: they cost both apps the same per request and are measured by benchmark 1.

The second table counts the whole gunicorn worker — TLS, gunicorn's HTTP parsing, the app,
every thread — as shipped (`gunicorn -c deploy/gunicorn.conf.py` under callgrind), for the
webhook and the trivial app: each server is started twice, answers 200 warm-up reviews from
`hey -c 1` and then SPAN[0] or SPAN[1] more, and the difference between the two runs' totals,
divided by SPAN[1] − SPAN[0], is what one more review costs (start-up and warm-up cancel out).
Its ratio is benchmark 1's throughput ratio with the machine's noise and the kernel's share
(about the same for both apps) taken out.

    python -m bench instructions
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from bench import common
from bench import stack as bench_stack
from bench import webhook as webhook_bench
from bench.env import Unavailable
from bench.soak import HEY
from tests.support.reviews import deployment_review

WARMUP = 300
MEASURED = 1000
CONFIGS = (
    ("trivial", "trivial Flask app (the ceiling of benchmark 1)"),
    ("webhook", "webhook, as shipped"),
    ("webhook-nolog", "webhook, decision log off (INFO disabled)"),
)

SPAN = (100, 400)
"""Reviews after warm-up in the two whole-worker runs."""
WORKER_WARMUP = 200

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def _call(app: WsgiApp, body: bytes) -> bytes:
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/validate",
        "SERVER_NAME": "image-policy",
        "SERVER_PORT": "8443",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.url_scheme": "https",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.version": (1, 0),
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    status: list[str] = []
    out = app(environ, lambda s, headers, exc_info=None: status.append(s))
    data = b"".join(out)
    close = getattr(out, "close", None)
    if close is not None:
        close()
    if not status or not status[0].startswith("200"):
        raise RuntimeError(f"review answered {status}: {data[:300]!r}")
    return data


def worker(config: str) -> None:
    """Run inside callgrind: build the app, warm up, count MEASURED requests."""
    from bench import trivial_app
    from policy import settings as settings_mod
    from policy import web
    from tests.support.registry import start_registry

    directory = Path(tempfile.mkdtemp(prefix="bench-instr-"))
    registry = start_registry(directory / "registry")
    try:
        bench_stack.seed(registry.url)
        refs = [f"{registry.host}/{repository}:1.0" for repository, _ in bench_stack.IMAGES]
        body = json.dumps(deployment_review(refs)).encode()
        (directory / "rules.yaml").write_text(webhook_bench.RULES.format(host=registry.host))
        (directory / "settings.yaml").write_text(webhook_bench.SETTINGS)
        # decision lines go where gunicorn's would: the app's own stderr handler
        sys.stderr = (directory / "stderr.log").open("w")
        if config == "webhook-nolog":
            logging.getLogger(web.LOGGER).setLevel(logging.WARNING)
        app: WsgiApp
        if config == "trivial":
            app = trivial_app.create_app()
        else:
            settings = settings_mod.load_settings(directory / "settings.yaml")
            app = web.create_app(settings, rules=[str(directory / "rules.yaml")])
            answer = json.loads(_call(app, body))
            if answer["response"]["allowed"] is not True:
                raise RuntimeError(f"the benchmark review was not allowed: {answer}")
        for _ in range(WARMUP):
            _call(app, body)
        flush = _flusher(app)
        flush()  # the warm-up's decision lines are written before counting starts
        pid = str(os.getpid())
        subprocess.run(["callgrind_control", "-i", "on", pid], check=True, capture_output=True)
        for _ in range(MEASURED):
            _call(app, body)
        flush()  # ... and the measured ones before it stops, whatever the writer's timing
        subprocess.run(["callgrind_control", "-i", "off", pid], check=True, capture_output=True)
    finally:
        registry.stop()
        shutil.rmtree(directory, ignore_errors=True)


def _flusher(app: WsgiApp) -> Callable[[], None]:
    """What writes the app's pending decision log lines now (nothing for the trivial app).

    The log's writer thread encodes lines every 100 ms: without a flush at both ends of the
    measured window, how many of its batches fall inside moved the count by several percent
    from run to run."""
    extensions = getattr(app, "extensions", {})
    log = extensions.get("image_policy_log")
    return log.flush if log is not None else lambda: None


def _count(config: str, directory: Path) -> int:
    out = directory / f"{config}.callgrind"
    subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={out}",
            sys.executable,
            "-m",
            "bench.instructions",
            config,
        ],
        cwd=common.ROOT,
        check=True,
        capture_output=True,
        timeout=600,
    )
    return _totals(out)


def _worker_totals(directory: Path, reviews: int) -> dict[str, int]:
    """Instructions the gunicorn worker of each server executed, start to exit, having answered
    WORKER_WARMUP + `reviews` reviews."""
    out = directory / f"worker-{reviews}.%p.callgrind"
    wrapper = ("valgrind", "--tool=callgrind", f"--callgrind-out-file={out}")
    workers: dict[str, list[int]] = {}
    with bench_stack.webhook_stack(
        rules=webhook_bench.RULES,
        settings=webhook_bench.SETTINGS,
        wrapper=wrapper,
        ready_seconds=600,
    ) as stack:
        assert stack.trivial is not None
        body = stack.directory / "review.json"
        body.write_text(json.dumps(deployment_review(stack.refs)))
        for server in (stack.webhook, stack.trivial):
            command = [HEY, "-n", str(WORKER_WARMUP + reviews), "-c", "1", "-m", "POST"]
            command += ["-T", "application/json", "-D", str(body), f"{server.url}/validate"]
            done = subprocess.run(
                common.pinned(command, common.LOAD_CPU),
                capture_output=True,
                text=True,
                timeout=1800,
                check=True,
            )
            if f"[200]\t{WORKER_WARMUP + reviews} responses" not in done.stdout:
                raise RuntimeError(f"{server.name} did not answer every review:\n{done.stdout}")
            workers[server.name] = server.workers()
        for server in (stack.webhook, stack.trivial):
            server.stop()  # the worker exits, and callgrind writes its file
    totals: dict[str, int] = {}
    for name, pids in workers.items():
        totals[name] = sum(_totals(Path(str(out).replace("%p", str(pid)))) for pid in pids)
    return totals


def _totals(path: Path) -> int:
    for line in path.read_text().splitlines():
        if line.startswith("totals:"):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {path}")


def run() -> common.Result:
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise Unavailable("benchmark 1b needs valgrind (apt-get install valgrind)")
    with tempfile.TemporaryDirectory(prefix="bench-callgrind-") as tmp:
        per_request = {name: _count(name, Path(tmp)) / MEASURED for name, _ in CONFIGS}
        low, high = (_worker_totals(Path(tmp), n) for n in SPAN)
    whole = {name: (high[name] - low[name]) / (SPAN[1] - SPAN[0]) for name in high}
    base = per_request["trivial"]
    rows = tuple(
        (label, round(per_request[name]), round(per_request[name] / base, 2))
        for name, label in CONFIGS
    )
    table = common.Table(
        f"CPU instructions per warm review, in process (callgrind, {MEASURED} requests after "
        f"{WARMUP})",
        ("app", "instructions / request", "× trivial"),
        rows,
    )
    worker_table = common.Table(
        "Instructions per review of the whole gunicorn worker (TLS, HTTP, app; callgrind, "
        f"{SPAN[1]} − {SPAN[0]} reviews after {WORKER_WARMUP}, hey -c 1)",
        ("server", "instructions / review", "trivial / this"),
        tuple(
            (name, round(whole[name]), round(whole["trivial"] / whole[name], 3))
            for name in ("webhook", "trivial")
        ),
    )
    notes = (
        "direct WSGI calls with the benchmark 1 review; gunicorn and TLS excluded (the same "
        "for both apps); every thread counted (the decision log's writer included)",
        "whole worker: `gunicorn -c deploy/gunicorn.conf.py` (TLS, 1 gthread worker) under "
        "callgrind, the worker process only; what the kernel does for it (syscalls, TCP) is not "
        "counted",
    )
    return common.Result(
        "instructions",
        "1b. Instructions per warm review",
        (table, worker_table),
        (),
        notes,
        {"per_request": per_request, "whole_worker": whole},
    )


def main(argv: Sequence[str]) -> None:
    (config,) = argv
    worker(config)


if __name__ == "__main__":
    main(sys.argv[1:])
