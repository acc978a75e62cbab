"""Compose `.env` files: read as `docker compose` reads them, within bounds; the CLI's
precedence (environment over `.env`, `--env-file` instead of `.env`)."""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import pytest

from policy import cli
from policy.errors import InputError
from policy.scanners import dotenv

DATA = Path(__file__).parent.parent / "data"
RULES = str(DATA / "cli" / "rules.yaml")
FACTS = str(DATA / "cli" / "facts.yaml")
PROJECT = DATA / "realworld" / "compose"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A=1\n", {"A": "1"}),
        ("export A=1\n", {"A": "1"}),
        ("# comment\n\nA = 1 \n", {"A": "1"}),
        ("A=1 # trailing comment\n", {"A": "1"}),
        ("A=a#b\n", {"A": "a#b"}),
        ("A='literal ${B} # not a comment'\n", {"A": "literal ${B} # not a comment"}),
        ('A="line\\nbreak \\"q\\""\n', {"A": 'line\nbreak "q"'}),
        ('A="multi\nline"\nB=2\n', {"A": "multi\nline", "B": "2"}),
        ("A=1\nB=${A}-x\nC=${MISSING:-d}\n", {"A": "1", "B": "1-x", "C": "d"}),
        ("B=${FROM_ENV}\n", {"B": "env"}),
        ("B=${NOT_SET}x\n", {"B": "x"}),
        ("A=\n", {"A": ""}),
        ("\ufeffA=1\r\nB=2\r\n", {"A": "1", "B": "2"}),
        ("A=$$literal\n", {"A": "$literal"}),
    ],
)
def test_parse(text: str, expected: dict[str, str]) -> None:
    assert dotenv.parse(text, ".env", environment={"FROM_ENV": "env"}) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("A=1\nnot a pair\n", r"^\.env:2: expected VAR=VALUE, got 'not a pair'$"),
        ('A="open\nB=2\n', r"^\.env:1: A: unterminated \" quote$"),
        ("1A=2\n", r"^\.env:1: expected VAR=VALUE"),
    ],
)
def test_parse_errors_are_located(text: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        dotenv.parse(text, ".env", environment={})


def test_a_value_doubling_each_line_is_stopped() -> None:
    """`B=${A}${A}`, `C=${B}${B}`… would reach 2**40 characters in 40 lines."""
    lines = ["V0=" + "x" * 1024] + [f"V{i}=${{V{i - 1}}}${{V{i - 1}}}" for i in range(1, 41)]
    with pytest.raises(InputError, match=r"^\.env:8: V7: value longer than 65,536 characters$"):
        dotenv.parse("\n".join(lines), ".env", environment={})


def test_a_giant_env_file_is_refused() -> None:
    with pytest.raises(InputError, match=r"larger than 1024 KiB"):
        dotenv.parse("A=1\n" * 300_000, ".env", environment={})


def test_environment_wins_over_env_files_and_later_files_win() -> None:
    merged = dotenv.environment({"a.env": "A=1\nB=1\n", "b.env": "B=2\nC=2\n"}, {"C": "shell"})
    assert merged == {"A": "1", "B": "2", "C": "shell"}


def check(
    tmp_path: Path, *argv: str, env: dict[str, str] | None = None
) -> tuple[int, list[str], str]:
    project = tmp_path / "project"
    if not project.exists():
        shutil.copytree(PROJECT, project)
    out, err = io.StringIO(), io.StringIO()
    saved = dict(os.environ)
    os.environ.update(env or {})
    try:
        code = cli.main(
            ["check", "--rules", RULES, "--facts", FACTS, "--format", "json", *argv, str(project)],
            out=out,
            err=err,
        )
    finally:
        os.environ.clear()
        os.environ.update(saved)
    images = [r["image"] for r in json.loads(out.getvalue())["results"]] if out.getvalue() else []
    return code, images, err.getvalue()


def test_dot_env_beside_the_compose_file_is_read(tmp_path: Path) -> None:
    os.environ.pop("PG_VERSION", None)
    _, images, err = check(tmp_path)
    assert images == ["postgres:16", "redis:7.2"], err


def test_the_environment_wins_over_dot_env(tmp_path: Path) -> None:
    _, images, _ = check(tmp_path, env={"PG_VERSION": "15"})
    assert images == ["postgres:15", "redis:7.2"]


def test_env_file_replaces_dot_env(tmp_path: Path) -> None:
    other = tmp_path / "ci.env"
    other.write_text("PG_VERSION=14\n")
    _, images, _ = check(tmp_path, "--env-file", str(other))
    assert images == ["postgres:14", "redis:7"]  # .env's REDIS_TAG is not read


def test_without_dot_env_an_unset_variable_is_still_reported(tmp_path: Path) -> None:
    check(tmp_path)
    (tmp_path / "project" / ".env").unlink()
    code, images, err = check(tmp_path)
    assert (code, images) == (2, [])
    assert "variable ${PG_VERSION} is not set" in err


def test_a_missing_env_file_is_an_error(tmp_path: Path) -> None:
    code, _, err = check(tmp_path, "--env-file", str(tmp_path / "nope.env"))
    assert code == 2
    assert "nope.env: cannot read" in err
