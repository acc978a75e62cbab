"""Benchmark 7 — directory walks on a real-shaped repository: `image-policy check DIR` over a
tree of 5,980 files, most of them not inputs.

The tree (made fresh in a temporary directory) is shaped like a web application's monorepo:
`node_modules/` (3,000 files: package.json, .js, .d.ts, example YAML), `.git/` (500 object
files), 1,500 TypeScript sources, 600 JSON/YAML files that are not manifests (tsconfig.json
with comments, package.json, fixtures, GitHub workflows, Helm values), 100 Helm templates in
10 charts, and the inputs: 200 Kubernetes manifests, 20 compose projects with their .env, 20
Dockerfiles — 5,980 files. It is walked twice: as a plain directory (the skip list) and as a
git work tree (`git ls-files`, with node_modules/ in .gitignore).

In process (the CLI's own functions, CPU pinned when possible) each phase is timed: the walk
(`walk.sources`: listing, skip list or git), then reading and triaging every candidate file
(`walk.read_text`, `detect.triage`), and scanning the inputs (`detect.scan_as`). Reported:
files in the tree per second for the whole run, candidates per second, and the share of the
time spent on files that end up skipped (reading and triaging them). Then the whole command
(`image-policy check --facts`, a subprocess, offline) over the same tree, for the wall time a
user sees. Three rounds, medians.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import common
from policy import cli, walk
from policy.scanners import detect

ROUNDS = 3

MANIFEST = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: svc-{n}
  namespace: team-{team}
  labels: {{app: svc-{n}, tier: backend}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: svc-{n}}}}}
  template:
    metadata: {{labels: {{app: svc-{n}}}}}
    spec:
      containers:
        - name: app
          image: registry.example/team-{team}/svc-{n}:1.{n}
          ports: [{{containerPort: 8080}}]
          resources: {{requests: {{cpu: 100m, memory: 128Mi}}}}
        - name: proxy
          image: envoyproxy/envoy:v1.29.{team}
---
apiVersion: v1
kind: Service
metadata: {{name: svc-{n}}}
spec:
  selector: {{app: svc-{n}}}
  ports: [{{port: 80, targetPort: 8080}}]
"""
COMPOSE = """\
services:
  db:
    image: "postgres:${{PG_VERSION}}"
  app:
    build: .
    image: registry.example/app-{n}:${{TAG:-dev}}
"""
TSCONFIG = """\
/* To learn more about this file see: https://angular.io/config/tsconfig. */
{{
  "compileOnSave": false,
  "compilerOptions": {{
    "outDir": "./dist/out-tsc-{n}",
    // keep strict
    "strict": true,
    "paths": {{"@app/*": ["src/app/*"]}},
  }},
}}
"""
WORKFLOW = """\
name: ci-{n}
on: [push, pull_request]
jobs:
  test:
    runs-on: ubuntu-latest
    container: {{image: "node:20"}}
    steps:
      - uses: actions/checkout@v4
      - run: npm ci && npm test
"""
HELM = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{{{ include "chart.fullname" . }}}}
  labels:
    {{{{- include "chart.labels" . | nindent 4 }}}}
spec:
  replicas: {{{{ .Values.replicaCount }}}}
  template:
    spec:
      containers:
        - name: {{{{ .Chart.Name }}}}-{n}
          image: "{{{{ .Values.image.repository }}}}:{{{{ .Values.image.tag }}}}"
"""


def make_tree(root: Path) -> dict[str, int]:
    """Write the tree; return how many files of each kind."""
    counts: dict[str, int] = {}

    def write(rel: str, text: str, kind: str) -> None:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        counts[kind] = counts.get(kind, 0) + 1

    for i in range(3_000):
        package = f"node_modules/pkg{i // 10}"
        name = ("package.json", "index.js", "index.d.ts", "README.md", "example.yaml", "lib.js")[
            i % 6
        ]
        write(f"{package}/{i % 10}-{name}", f'{{"name": "pkg{i}"}}\n', "node_modules")
    for i in range(500):
        write(f".git/objects/{i % 256:02x}/{i:038x}", "x" * 200, ".git")
    for i in range(1_500):
        write(f"web/src/app/mod{i // 50}/c{i}.component.ts", f"export const c{i} = {i};\n", "ts")
    for i in range(600):
        kind = i % 4
        if kind == 0:
            write(f"web/projects/p{i}/tsconfig.json", TSCONFIG.format(n=i), "not-input")
        elif kind == 1:
            write(
                f"web/projects/p{i}/package.json",
                f'{{"name": "p{i}", "version": "1"}}\n',
                "not-input",
            )
        elif kind == 2:
            write(
                f"test/fixtures/f{i}.json", json.dumps([{"id": i, "v": "x" * 40}] * 20), "not-input"
            )
        else:
            write(f".github/workflows/ci-{i}.yml", WORKFLOW.format(n=i), "not-input")
    for i in range(100):
        chart = f"charts/c{i // 10}"
        write(f"{chart}/templates/t{i}.yaml", HELM.format(n=i), "helm")
        if i % 10 == 0:
            write(
                f"{chart}/Chart.yaml", f"apiVersion: v2\nname: c{i}\nversion: 0.1.0\n", "not-input"
            )
            write(
                f"{chart}/values.yaml",
                "replicaCount: 1\nimage: {repository: x, tag: y}\n",
                "not-input",
            )
    for i in range(200):
        write(f"deploy/k8s/team{i % 5}/svc-{i}.yaml", MANIFEST.format(n=i, team=i % 5), "manifest")
    for i in range(20):
        write(f"services/s{i}/compose.yaml", COMPOSE.format(n=i), "compose")
        write(f"services/s{i}/.env", f"PG_VERSION=16.{i}\nTAG=1.{i}\n", "dotenv")
        write(f"services/s{i}/Dockerfile", f"FROM python:3.12-slim\nCOPY . /app{i}\n", "dockerfile")
    return counts


def git_init(root: Path) -> None:
    """Make `root` a git work tree with node_modules/ ignored and the rest added."""
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_SYSTEM": os.devnull}
    shutil.move(root / ".git", root.parent / "fake-git-objects")
    (root / ".gitignore").write_text("node_modules/\n")
    for args in (["init", "-q"], ["add", "-A"]):
        subprocess.run(["git", "-C", str(root), *args], check=True, env=env, capture_output=True)


def one_pass(root: Path) -> dict[str, float]:
    """Walk, read, triage and scan as `check` does; seconds per phase and file counts."""
    started = time.perf_counter()
    sources = walk.sources([str(root)])
    walked = time.perf_counter()
    skipped_time = input_time = 0.0
    skipped = inputs = images = 0
    for source in sources:
        t0 = time.perf_counter()
        text = walk.read_text(source)
        assert source.path is not None
        kind = detect.triage(source.name, text, chart_template=cli._in_chart(source.path))
        if kind not in cli._KINDS:
            skipped += 1
            skipped_time += time.perf_counter() - t0
            continue
        env = {"PG_VERSION": "16"} if kind == "compose" else {}
        images += len(detect.scan_as(kind, source.name, text, env=env))  # type: ignore[arg-type]
        inputs += 1
        input_time += time.perf_counter() - t0
    total = time.perf_counter() - started
    return {
        "walk_s": walked - started,
        "skipped_s": skipped_time,
        "inputs_s": input_time,
        "total_s": total,
        "candidates": len(sources),
        "skipped": skipped,
        "inputs": inputs,
        "images": images,
    }


def cli_wall(root: Path, rules: Path, facts: Path) -> float:
    """Wall time of `image-policy check --facts` over the tree (a subprocess, offline)."""
    command = [
        sys.executable,
        "-m",
        "policy",
        "check",
        "--rules",
        str(rules),
        "--facts",
        str(facts),
        "-q",
        "--format",
        "json",
        str(root),
    ]
    return common.run_command(common.pinned(command, common.LOAD_CPU), timeout=600)


def run() -> common.Result:
    common.pin_load_generator()
    rows = []
    data: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="bench-walk-") as tmp:
        base = Path(tmp)
        plain = base / "plain"
        counts = make_tree(plain)
        files = sum(counts.values())
        gitted = base / "git" / "repo"
        gitted.parent.mkdir()
        shutil.copytree(plain, gitted)
        git_init(gitted)
        rules, facts = write_check_inputs(base)
        for label, root in (("plain directory", plain), ("git work tree", gitted)):
            passes = [one_pass(root) for _ in range(ROUNDS)]
            walls = [cli_wall(root, rules, facts) for _ in range(ROUNDS)]
            rows.append(row(label, files, passes, walls))
            data[label] = {"passes": passes, "cli_wall_s": walls}
    return common.Result(
        name="walk",
        title="Benchmark 7 — directory walks on a real-shaped tree",
        tables=(table(rows),),
        notes=(
            f"tree: {', '.join(f'{k} {v:,}' for k, v in sorted(counts.items()))}",
            "node_modules/ and .git/ are never entered; .ts sources are not read (not "
            "candidates); only candidate files (.json/.yaml/.yml, Dockerfiles, compose) are "
            "read and triaged",
        ),
        data=data,
    )


def write_check_inputs(base: Path) -> tuple[Path, Path]:
    """Write the rules (every image pinned by digest) and the empty facts file that `check`
    runs with; return their paths."""
    rules = base / "rules.yaml"
    rules.write_text(
        "apiVersion: image-policy/v1\nkind: RuleSet\nmetadata: {name: b}\n"
        "defaults: {onResolveError: deny}\nrules:\n"
        "  - id: pinned\n    match: {images: ['**']}\n    require: {digest: true}\n"
    )
    facts = base / "facts.yaml"
    facts.write_text("images: {}\n")
    return rules, facts


def row(
    label: str, files: int, passes: list[dict[str, float]], walls: list[float]
) -> tuple[object, ...]:
    """One tree's row: the medians of its in-process passes and of its `check` wall times."""
    med = {k: common.median([p[k] for p in passes]) for k in passes[0]}
    wall = common.median(walls)
    return (
        label,
        files,
        int(med["candidates"]),
        int(med["inputs"]),
        int(med["skipped"]),
        int(med["images"]),
        med["walk_s"] * 1000,
        med["total_s"] * 1000,
        files / med["total_s"],
        med["candidates"] / med["total_s"],
        100 * med["skipped_s"] / med["total_s"],
        100 * med["walk_s"] / med["total_s"],
        wall,
    )


def table(rows: list[tuple[object, ...]]) -> common.Table:
    return common.Table(
        "walk, read, triage and scan (in process; median of 3) and the whole check (subprocess)",
        (
            "tree",
            "files",
            "candidates",
            "inputs",
            "skipped",
            "images",
            "walk ms",
            "total ms",
            "files/s",
            "candidates/s",
            "% time on skipped",
            "% time walking",
            "check wall s",
        ),
        tuple(rows),
    )
