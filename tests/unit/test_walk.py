"""Directory walks on real trees (issue 16): what is an input, what is skipped and said, and
the bounds (symlink loops, file counts, file sizes)."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from policy import cli, walk
from policy.errors import InputError

DATA = Path(__file__).parent.parent / "data"
TREE = DATA / "realworld"
RULES = str(DATA / "cli" / "rules.yaml")
FACTS = str(DATA / "cli" / "facts.yaml")

JUDGED = {
    "compose/compose.yaml": ["postgres:16", "redis:7.2"],
    "deploy/crds/argo-workflow.yaml": ["docker/whalesay", "python:alpine3.6"],
    "deploy/crds/cloneset.yaml": ["nginx:alpine"],
    "deploy/crds/knative-service.yaml": ["ghcr.io/knative/helloworld-go:latest"],
    "deploy/crds/rollout.yaml": ["argoproj/rollouts-demo:blue"],
    "deploy/crds/tekton-task.yaml": [
        "docker.io/library/alpine:3.19",
        "golang:1.22",
        "golang:1.22",
        "docker:24-dind",
    ],
    "deploy/k8s/web.yaml": ["nginx:1.25"],
}
HELM = "a Helm template: render it first (`helm template CHART | image-policy check -`)"
NOT_INPUT = "not a Kubernetes object or compose file"
SKIPPED = {
    ".github/workflows/ci.yml": NOT_INPUT,
    "data/regions.json": NOT_INPUT,
    "deploy/chart/Chart.yaml": NOT_INPUT,
    "deploy/chart/templates/deployment.yaml": HELM,
    "deploy/chart/templates/service.yaml": HELM,
    "deploy/chart/values.yaml": NOT_INPUT,
    "web/package.json": NOT_INPUT,
    "web/tsconfig.app.json": NOT_INPUT,
    "web/tsconfig.json": NOT_INPUT,
}


def run(*argv: str, cwd: Path | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    old = Path.cwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        code = cli.main(list(argv), out=out, err=err)
    finally:
        os.chdir(old)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """The real-world tree outside any git work tree, with its `.git` directory (stored as
    `_git`: git cannot hold a `.git` directory)."""
    root = tmp_path / "repo"
    shutil.copytree(TREE, root)
    (root / "_git").rename(root / ".git")
    return root


def relative(report: dict[str, object], root: Path) -> tuple[dict[str, list[str]], dict[str, str]]:
    judged: dict[str, list[str]] = {}
    for r in report["results"]:  # type: ignore[attr-defined]
        file = r["source"].rsplit(":", 1)[0]
        judged.setdefault(Path(file).relative_to(root).as_posix(), []).append(r["image"])
    skipped = {
        Path(s["file"]).relative_to(root).as_posix(): s["reason"]
        for s in report["skipped"]  # type: ignore[attr-defined]
    }
    return judged, skipped


def test_a_real_tree_is_checked_and_what_is_not_an_input_is_listed(tree: Path) -> None:
    """tsconfig.json (comments, trailing commas), a JSON data file, a GitHub workflow, a Helm
    chart, node_modules/, vendor/ and .git/: the run judges every manifest, compose file and
    custom resource, and lists the skipped files with why, instead of stopping at the first."""
    code, out, err = run("check", "--rules", RULES, "--facts", FACTS, "--format", "json", str(tree))
    report = json.loads(out)
    judged, skipped = relative(report, tree)
    assert judged == JUDGED
    assert skipped == SKIPPED
    assert report["summary"]["skipped"] == len(SKIPPED)
    assert code == 1  # facts are missing for most images: denied, not a usage error
    assert err == ""


def test_text_summary_lists_skipped_files(tree: Path) -> None:
    code, out, _ = run("check", "--rules", RULES, "--facts", FACTS, str(tree))
    assert code == 1
    assert out.rstrip().endswith("12 images, 1 allowed, 11 denied; 9 files skipped")
    assert f"  {tree / 'deploy/chart/templates/deployment.yaml'}: {HELM}" in out
    quiet = run("check", "--rules", RULES, "--facts", FACTS, "-q", str(tree))[1]
    assert "tsconfig" not in quiet and quiet.rstrip().endswith("; 9 files skipped")


def test_strict_makes_skipped_files_errors(tree: Path) -> None:
    code, out, err = run("check", "--rules", RULES, "--facts", FACTS, "--strict", str(tree))
    assert code == 2
    assert out == ""
    assert f"image-policy check: {tree / 'web/tsconfig.json'}: {NOT_INPUT}" in err
    assert "9 file(s) skipped (--strict)" in err


def test_files_given_explicitly_are_triaged_like_walked_ones(tree: Path) -> None:
    """The pre-commit hook passes every changed .yaml file: a Helm template or a workflow is
    skipped and said, the manifests beside them are judged."""
    files = [
        tree / "deploy/chart/templates/deployment.yaml",
        tree / ".github/workflows/ci.yml",
        tree / "deploy/k8s/web.yaml",
    ]
    code, out, err = run(
        "check", "--rules", RULES, "--facts", FACTS, "--format", "json", *map(str, files)
    )
    assert code == 0, err
    report = json.loads(out)
    assert [r["image"] for r in report["results"]] == ["nginx:1.25"]
    assert [s["reason"] for s in report["skipped"]] == [HELM, NOT_INPUT]


def test_an_explicit_file_that_cannot_be_read_is_still_an_error(tree: Path) -> None:
    code, _, err = run("check", "--rules", RULES, "--facts", FACTS, str(tree / "missing.yaml"))
    assert code == 2
    assert "missing.yaml: cannot read" in err
    bad = tree / "latin1.yaml"
    bad.write_bytes(b"apiVersion: v1\nkind: Pod\n# caf\xe9\n")
    code, _, err = run("check", "--rules", RULES, "--facts", FACTS, str(bad))
    assert code == 2
    assert f"image-policy check: {bad}: cannot read: not UTF-8 text" in err


def test_a_walked_file_that_cannot_be_read_is_skipped_and_said(tree: Path) -> None:
    (tree / "deploy/k8s/latin1.yaml").write_bytes(b"apiVersion: v1\nkind: Pod\n# caf\xe9\n")
    code, out, _ = run("check", "--rules", RULES, "--facts", FACTS, "--format", "json", str(tree))
    _, skipped = relative(json.loads(out), tree)
    assert skipped["deploy/k8s/latin1.yaml"].startswith("cannot read: not UTF-8")
    assert code == 1


def test_a_broken_manifest_in_a_tree_is_still_an_error(tree: Path) -> None:
    """Skipping is for files that are not manifests; a manifest with a YAML error is reported."""
    (tree / "deploy/k8s/broken.yaml").write_text("apiVersion: v1\nkind: Pod\nspec: [\n")
    code, _, err = run("check", "--rules", RULES, "--facts", FACTS, str(tree))
    assert code == 2
    assert "broken.yaml:" in err


def test_no_images_but_skipped_files_says_so(tmp_path: Path) -> None:
    (tmp_path / "tsconfig.json").write_text('{\n  // c\n  "a": 1,\n}\n')
    code, out, err = run("check", "--rules", RULES, "--facts", FACTS, str(tmp_path))
    assert (code, out) == (0, "")
    assert "no images found in the inputs (1 file(s) skipped)" in err
    assert f"skipped {tmp_path / 'tsconfig.json'}: {NOT_INPUT}" in err


def git(root: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(root), *args],
        check=True,
        capture_output=True,
        env={**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_SYSTEM": os.devnull},
    )


@pytest.mark.skipif(shutil.which("git") is None and not os.environ.get("CI"), reason="no git")
def test_gitignore_is_honoured_in_a_git_work_tree(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    shutil.copytree(TREE, root)
    shutil.rmtree(root / "_git")
    git(root, "init", "-q")
    (root / ".gitignore").write_text("generated/\n*.local.yaml\n")
    (root / "generated").mkdir()
    pod = (TREE / "node_modules/left-pad/examples/pod.yaml").read_text()
    (root / "generated" / "pod.yaml").write_text(pod)
    (root / "deploy/k8s/dev.local.yaml").write_text(pod)
    (root / "deploy/k8s/untracked.yaml").write_text(pod.replace("evil:latest", "nginx:1.25"))
    paths = {p.relative_to(root).as_posix() for p in walk.walk(root)}
    assert "deploy/k8s/untracked.yaml" in paths  # untracked but not ignored: an input
    assert not {"generated/pod.yaml", "deploy/k8s/dev.local.yaml"} & paths
    assert not any(p.startswith(("node_modules/", "vendor/")) for p in paths)
    # from a subdirectory: paths relative to it, the ignore rules of the repository
    sub = {p.relative_to(root).as_posix() for p in walk.walk(root / "deploy")}
    assert sub == {p for p in paths if p.startswith("deploy/")}
    # an ignored directory named on purpose is walked (without git)
    assert walk.walk(root / "generated") == [root / "generated" / "pod.yaml"]


def test_without_git_the_skip_list_applies(tree: Path) -> None:
    paths = {p.relative_to(tree).as_posix() for p in walk.walk(tree)}
    assert paths == set(JUDGED) | set(SKIPPED)


def test_symlink_loops_and_links_to_directories_are_not_followed(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "pod.yaml").write_text("apiVersion: v1\nkind: List\nitems: []\n")
    (tmp_path / "a" / "loop").symlink_to(tmp_path / "a")
    (tmp_path / "self.yaml").symlink_to(tmp_path / "self.yaml")
    (tmp_path / "dangling.yaml").symlink_to(tmp_path / "nowhere.yaml")
    assert walk.walk(tmp_path) == [tmp_path / "a" / "pod.yaml"]


def test_a_huge_tree_is_refused_with_the_reason(tmp_path: Path) -> None:
    for i in range(30):
        (tmp_path / f"f{i}.txt").write_text("")
    with pytest.raises(InputError, match=r"more than 20 files under this directory"):
        walk.walk(tmp_path, max_files=20)
    assert walk.walk(tmp_path, max_files=40) == []


def test_a_file_over_the_size_limit_is_not_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = tmp_path / "big.yaml"
    big.write_text("a: 1\n" * 100)
    monkeypatch.setattr(walk, "MAX_FILE_BYTES", 100)
    with pytest.raises(InputError, match=r"big\.yaml: larger than"):
        walk.read_text(walk.Source(str(big), big, True))


def test_pin_walks_the_same_way(tree: Path) -> None:
    """pin over a tree skips what check skips (it would otherwise stop at tsconfig.json)."""
    code, out, err = run("pin", "--no-cache", "--timeout", "0.5", str(tree / "web"))
    assert (code, out) == (0, "")
    assert "nothing to pin" in err


def test_cli_runs_as_a_program_on_the_tree(tree: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "policy",
            "check",
            "--rules",
            RULES,
            "--facts",
            FACTS,
            "-q",
            str(tree),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert result.stdout.rstrip().endswith("9 files skipped")


def test_a_huge_git_listing_is_stopped_too(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q")
    for i in range(30):
        (root / f"f{i}.yaml").write_text("")
    with pytest.raises(InputError, match=r"more than 20 files under this directory"):
        walk.walk(root, max_files=20)
    assert len(walk.walk(root, max_files=40)) == 30
