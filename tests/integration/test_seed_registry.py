"""deploy/seed_registry.py (the compose stack's `seed` service) against the real registry:
it pushes the sample images it promises, and each one breaks the compose rule it is meant to
break (deploy/compose/rules.yaml, with the registry renamed to this one)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from policy import cli
from tests.support.registry import RunningRegistry, free_port, require_registry, start_registry

pytestmark = pytest.mark.registry

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "seed_registry.py"


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    require_registry()
    registry = start_registry(tmp_path_factory.mktemp("seed-registry"))
    try:
        yield registry
    finally:
        registry.stop()


def _seed(url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), url, *extra],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def seeded(running: RunningRegistry) -> dict[str, str]:
    """`repository:tag` → digest, from the script's output."""
    done = _seed(running.url, "--wait", "5")
    assert done.returncode == 0, done.stderr
    out: dict[str, str] = {}
    for line in done.stdout.splitlines():
        name, _, digest = line.partition("@")
        out[name.removeprefix(f"{running.host}/")] = digest
    return out


def test_seed_pushes_every_sample_with_stable_digests(
    running: RunningRegistry, seeded: dict[str, str]
) -> None:
    assert set(seeded) == {"demo/app:1.0", "demo/app:latest", "demo/root:1.0", "demo/fat:1.0"}
    assert seeded["demo/app:1.0"] == seeded["demo/app:latest"]
    again = _seed(running.url, "--wait", "5")  # idempotent, same digests
    assert again.returncode == 0, again.stderr
    assert sorted(again.stdout.splitlines()) == sorted(
        f"{running.host}/{name}@{digest}" for name, digest in seeded.items()
    )


@pytest.mark.parametrize(
    ("image", "layers", "user"),
    [("demo/app:1.0", 3, "10001"), ("demo/root:1.0", 2, ""), ("demo/fat:1.0", 40, "1000")],
)
def test_samples_have_the_facts_the_script_documents(
    running: RunningRegistry, seeded: dict[str, str], image: str, layers: int, user: str
) -> None:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(["resolve", f"{running.host}/{image}", "--json"], out=out, err=err)
    assert code == 0, err.getvalue()
    doc = json.loads(out.getvalue())
    assert doc["digest"] == seeded[image]
    (platform,) = doc["platforms"]
    assert (platform["platform"], platform["layers"], platform["user"]) == (
        "linux/amd64",
        layers,
        user,
    )


def test_each_sample_breaks_the_compose_rule_it_is_meant_to(
    running: RunningRegistry, seeded: dict[str, str], tmp_path: Path
) -> None:
    rules = (ROOT / "deploy" / "compose" / "rules.yaml").read_text()
    (tmp_path / "rules.yaml").write_text(rules.replace("registry:5000", running.host))
    out, err = io.StringIO(), io.StringIO()
    argv = ["check", "--rules", str(tmp_path / "rules.yaml"), "--format=json", "--no-cache"]
    argv += [f"--image={running.host}/{name}" for name in sorted(seeded)]
    assert cli.main(argv, out=out, err=err) == 1, err.getvalue()
    denied = {
        r["image"].removeprefix(f"{running.host}/"): sorted(
            {v["rule"] for v in r["violations"] if v["action"] == "deny"}
        )
        for r in json.loads(out.getvalue())["results"]
    }
    assert denied == {
        "demo/app:1.0": [],
        "demo/app:latest": ["no-latest"],
        "demo/fat:1.0": ["few-layers"],
        "demo/root:1.0": ["non-root"],
    }


def test_seed_gives_up_when_the_registry_never_answers() -> None:
    done = _seed(f"http://127.0.0.1:{free_port()}", "--wait", "0.5")
    assert done.returncode == 1
    assert "did not answer within 0.5s" in done.stderr
