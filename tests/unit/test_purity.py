"""The pure core imports only the standard library and PyYAML: never flask, requests, socket or
HTTP clients, gunicorn, or the shell modules that do I/O.

The modules are imported in a fresh interpreter, so imports made by other tests cannot hide (or
cause) a violation.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
POLICY = ROOT / "policy"

CORE = [
    "policy.errors",
    "policy.failures",
    "policy.reference",
    "policy.patterns",
    "policy.units",
    "policy.yamlsrc",
    "policy.jsonbound",
    "policy.egress",
    "policy.rules",
    "policy.checks",
    "policy.signing",
    "policy.attestations",
    "policy.loader",
    "policy.facts",
    "policy.factsfile",
    "policy.evaluate",
    "policy.schema",
    "policy.pin",
    "policy.reports",
    *(
        f"policy.{package}.{info.name}"
        for package in ("k8s", "scanners", "checks", "reports")
        for info in pkgutil.iter_modules([str(POLICY / package)])
    ),
    "policy.k8s",
    "policy.scanners",
]

# Top-level modules the core must never load: web frameworks, HTTP clients, sockets, servers.
FORBIDDEN_TOP = {
    "flask",
    "werkzeug",
    "requests",
    "urllib3",
    "http",
    "socket",
    "ssl",
    "gunicorn",
    "prometheus_client",
    "cryptography",
    "redis",
}
# Shell and edge modules of our own package, which do I/O (or read the clock).
FORBIDDEN_OWN = {
    "policy.registry",
    "policy.resolver",
    "policy.tiers",
    "policy.sharedcache",
    "policy.settings",
    "policy.service",
    "policy.web",
    "policy.server",
    "policy.cli",
    "policy.certs",
}

# Imports each module in turn and records which modules each one added to `sys.modules`, so a
# forbidden import is blamed on the core module that pulled it in.
PROBE = """
import importlib, json, sys
added = {}
for name in sys.argv[1:]:
    before = set(sys.modules)
    importlib.import_module(name)
    added[name] = sorted(set(sys.modules) - before)
print(json.dumps(added))
"""


def imported_by(modules: list[str]) -> dict[str, list[str]]:
    """What importing each module added to `sys.modules`, in one fresh interpreter."""
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, *modules],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    found: dict[str, list[str]] = json.loads(proc.stdout)
    return found


def forbidden(loaded: list[str]) -> list[str]:
    return [
        m
        for m in loaded
        if m.split(".")[0] in FORBIDDEN_TOP
        or any(m == own or m.startswith(own + ".") for own in FORBIDDEN_OWN)
    ]


def test_core_module_list_covers_the_subpackages() -> None:
    assert "policy.k8s.workloads" in CORE
    assert "policy.scanners.kubernetes" in CORE


def test_pure_core_imports_no_io_libraries() -> None:
    found = {name: forbidden(loaded) for name, loaded in imported_by(CORE).items()}
    assert {name: bad for name, bad in found.items() if bad} == {}


def test_probe_detects_a_forbidden_import() -> None:
    """The check itself works: an HTTP client, or a shell module, is seen and blamed."""
    found = imported_by(["policy.errors", "http.client", "policy.deadline", "policy.settings"])
    assert forbidden(found["policy.errors"]) == []
    assert "http.client" in forbidden(found["http.client"])
    assert "socket" in forbidden(found["http.client"])
    assert "policy.settings" in forbidden(found["policy.settings"])
