"""Benchmark 5 — the CLI at scale: `image-policy check DIR` over 1,000 manifests that reference
200 distinct images in the real registry, cold and then again with the disk cache.

The registry (20 repositories × 10 tags, single-platform images) runs behind a counting relay
in a server process on the server CPU; the CLI runs as a subprocess pinned to the load CPU with
`rules/default.yaml` (which reads manifests and configs) and `--cache-dir` pointing at a fresh
directory. The second run over the same cache must make zero manifest or config GETs (tags
are within their TTL too, so it makes no HEAD either). Three repetitions, medians reported.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bench import common
from bench.env import RemoteEnv, push_small_image

MANIFESTS = 1_000
REPOSITORIES = 20
TAGS = 10
IMAGES = REPOSITORIES * TAGS
ROUNDS = 3
BINARY = Path(
    shutil.which("image-policy", path=str(common.ROOT / ".venv" / "bin")) or "image-policy"
)

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: app-{n}
  namespace: team-{team}
spec:
  template:
    spec:
      containers:
        - name: app
          image: {main}
        - name: sidecar
          image: {sidecar}
"""


def image(host: str, n: int) -> str:
    return f"{host}/scale/repo{n % REPOSITORIES}:v{n // REPOSITORIES}"


def _seed(url: str) -> None:
    for n in range(IMAGES):
        repository, tag = image("", n)[1:].split(":")
        push_small_image(url, repository, tag, seed=f"scale/{n}", layers=1)


def write_manifests(directory: Path, host: str) -> None:
    """1,000 Deployments; manifest k runs image k mod 200 and a sidecar (7k+3) mod 200."""
    directory.mkdir(parents=True)
    for n in range(MANIFESTS):
        text = DEPLOYMENT.format(
            n=n,
            team=n % 17,
            main=image(host, n % IMAGES),
            sidecar=image(host, (7 * n + 3) % IMAGES),
        )
        (directory / f"deploy-{n:04}.yaml").write_text(text)


def _check(work: Path, cache: Path) -> tuple[float, str]:
    command = common.pinned(
        [
            str(BINARY),
            "check",
            str(work / "manifests"),
            "--rules",
            str(common.ROOT / "rules" / "default.yaml"),
            "--config",
            str(work / "settings.yaml"),
            "--cache-dir",
            str(cache),
            "--format",
            "json",
        ],
        common.LOAD_CPU,
    )
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=110)
    seconds = time.perf_counter() - start
    if done.returncode not in (0, 1):
        raise RuntimeError(f"image-policy check exited {done.returncode}: {done.stderr}")
    return seconds, done.stdout


def run() -> common.Result:
    rows = []
    data: dict[str, object] = {}
    warm_gets = 0
    with (
        RemoteEnv(_seed, token_auth=False, latency=0.0) as env,
        tempfile.TemporaryDirectory(prefix="image-policy-bench-cli-") as tmp,
    ):
        work = Path(tmp)
        write_manifests(work / "manifests", env.host)
        (work / "docker-config.json").write_text('{"auths": {}}')
        (work / "settings.yaml").write_text(f"dockerConfig: {work / 'docker-config.json'}\n")
        for n in range(ROUNDS):
            cache = work / f"cache-{n}"
            for phase in ("cold", "disk cache"):
                env.reset()
                seconds, stdout = _check(work, cache)
                seen = env.counts()
                unresolved = stdout.count("could not be fetched")
                rows.append(
                    (
                        n + 1,
                        phase,
                        seconds,
                        seen["HEAD manifest"],
                        seen["GET manifest"],
                        seen["GET blob"],
                        unresolved,
                    )
                )
                data[f"{n + 1}/{phase}"] = {"seconds": seconds, "requests": dict(seen)}
                if phase != "cold":
                    warm_gets = max(warm_gets, seen["GET manifest"] + seen["GET blob"])
                if unresolved:
                    raise RuntimeError(
                        f"{unresolved} images could not be resolved:\n{stdout[:2000]}"
                    )
    cold = common.median([r[2] for r in rows if r[1] == "cold"])
    warm = common.median([r[2] for r in rows if r[1] != "cold"])
    table = common.Table(
        f"image-policy check over {MANIFESTS:,} manifests ({2 * MANIFESTS:,} containers, "
        f"{IMAGES} distinct images)",
        ("round", "run", "wall s", "HEAD manifest", "GET manifest", "GET blob", "unresolved"),
        tuple(rows),
    )
    summary = common.Table(
        "medians",
        ("run", "wall s"),
        (("cold", cold), ("disk cache", warm), ("cold / disk cache", cold / warm)),
    )
    targets = (
        common.Target("manifest + config GETs with the disk cache (worst round)", warm_gets, 0),
    )
    notes = (
        "the CLI is a fresh process each run (interpreter start, imports and YAML parsing of "
        "1,000 files included); --jobs 16 (default); no added latency",
    )
    return common.Result("cli_scale", "5. CLI at scale", (table, summary), targets, notes, data)
