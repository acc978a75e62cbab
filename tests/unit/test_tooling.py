"""The test tooling itself: a hang fails its test (pytest-timeout) instead of eating CI."""

from __future__ import annotations

import subprocess
import sys
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_hanging_test_fails_within_its_timeout(tmp_path: Path) -> None:
    (tmp_path / "test_hang.py").write_text("import time\n\ndef test_hangs():\n    time.sleep(60)\n")
    started = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-o",
            "timeout=2",
            str(tmp_path / "test_hang.py"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Timeout" in done.stdout + done.stderr
    assert time.monotonic() - started < 30


def test_every_test_has_a_timeout_by_default() -> None:
    options = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert 0 < int(options["timeout"]) <= 600


def test_install_lines_name_the_git_repository() -> None:
    """`pip install image-policy` would fetch another project from the public index: every
    install line in the docs spells the name with its git URL."""
    import re

    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for line in doc.read_text().splitlines():
            bare = re.search(r"pip install\s+[\"']?image-policy(?![\w.-])(?!\s*@)", line)
            assert bare is None, f"{doc.name}: {line.strip()}"
    readme = (ROOT / "README.md").read_text()
    assert 'pip install "image-policy @ git+https://' in readme


def test_the_license_is_an_spdx_expression() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0"
