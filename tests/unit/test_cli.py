"""`image-policy check`, `lint` and `schema` end to end on sample manifests and facts files."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from policy import cli

DATA = Path(__file__).parent.parent / "data"
RULES = str(DATA / "cli" / "rules.yaml")
FACTS = str(DATA / "cli" / "facts.yaml")
MANIFESTS = DATA / "manifests"


def run(*argv: str, stdin: str | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    if stdin is not None:
        old = sys.stdin
        sys.stdin = io.StringIO(stdin)
        try:
            code = cli.main(list(argv), out=out, err=err)
        finally:
            sys.stdin = old
    else:
        code = cli.main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def check_json(*argv: str) -> tuple[int, dict[str, object]]:
    code, out, err = run("check", "--rules", RULES, "--facts", FACTS, "--format", "json", *argv)
    assert err == "", err
    return code, json.loads(out)


def results_by_source(report: dict[str, object]) -> dict[str, dict[str, object]]:
    results = report["results"]
    assert isinstance(results, list)
    return {f"{r['source']} {r['image']}": r for r in results}


def test_check_reports_every_image_with_its_line_and_verdict() -> None:
    code, report = check_json(
        str(MANIFESTS / "deployment.yaml"),
        str(MANIFESTS / "pod.yaml"),
        str(MANIFESTS / "list.yaml"),
    )
    assert code == 1
    assert report["allowed"] is False
    by = results_by_source(report)
    busybox = by[f"{MANIFESTS / 'pod.yaml'}:12 docker.io/library/busybox:1.36"]
    assert busybox["allowed"] is False
    assert busybox["violations"] == [
        {
            "rule": "few-layers",
            "check": "maxLayers",
            "action": "deny",
            "message": (
                "docker.io/library/busybox:1.36 has 11 layers; rule few-layers allows at most 10"
            ),
        }
    ]
    quay = by[f"{MANIFESTS / 'pod.yaml'}:30 quay.io/acme/models:v3"]
    assert quay["allowed"] is False
    assert quay["violations"][0]["rule"] == "trusted-registries"  # type: ignore[index]
    nginx = by[f"{MANIFESTS / 'deployment.yaml'}:18 nginx:1.25"]
    assert nginx["allowed"] is True
    assert nginx["reference"] == "docker.io/library/nginx:1.25"
    assert nginx["digest"] == "sha256:" + "1" * 64
    # The Deployment runs in namespace shop, where rule shop-pinned audits unpinned images.
    assert [v["rule"] for v in nginx["violations"]] == ["shop-pinned"]  # type: ignore[index]
    assert nginx["violations"][0]["action"] == "audit"  # type: ignore[index]
    summary = report["summary"]
    assert summary == {
        "images": 11,
        "allowed": 9,
        "denied": 2,
        "warnings": 1,
        "audits": 5,
        "skipped": 0,
    }


def test_only_the_amd64_entry_is_read_and_attestations_never_count() -> None:
    # nginx's arm64 entry has 12 layers (over 10) but the rules read linux/amd64 only.
    code, report = check_json("--image", "nginx:1.25", "--namespace", "default")
    assert code == 0
    assert report["results"][0]["violations"] == []  # type: ignore[index]


def test_namespace_flag_overrides_manifest_namespace() -> None:
    code, report = check_json(str(MANIFESTS / "deployment.yaml"), "--namespace", "web")
    assert code == 0
    assert all(r["violations"] == [] for r in report["results"])  # type: ignore[union-attr]


def test_warn_only_is_allowed_with_exit_zero() -> None:
    code, report = check_json("--image", "busybox", "--namespace", "default")
    assert code == 0
    result = report["results"][0]  # type: ignore[index]
    assert result["allowed"] is True
    assert result["violations"][0]["action"] == "warn"


def test_unknown_image_is_decided_by_on_resolve_error() -> None:
    code, report = check_json("--image", "ghcr.io/acme/unknown:1", "--namespace", "default")
    assert code == 1
    violations = report["results"][0]["violations"]  # type: ignore[index]
    assert [(v["message"], v["detail"]) for v in violations] == [
        (
            "cannot check ghcr.io/acme/unknown:1: image manifest could not be fetched "
            "(not recorded in the facts file); onResolveError is deny",
            "ghcr.io/acme/unknown:1 is not in the facts file",
        )
    ]


def test_invalid_reference_is_denied_with_the_reason() -> None:
    code, report = check_json("--image", "nginx:Bad Tag", "--namespace", "default")
    assert code == 1
    result = report["results"][0]  # type: ignore[index]
    assert result["allowed"] is False
    assert "invalid image reference" in result["violations"][0]["message"]


def test_text_format_groups_by_file() -> None:
    code, out, _ = run("check", "--rules", RULES, "--facts", FACTS, str(MANIFESTS / "pod.yaml"))
    assert code == 1
    lines = out.splitlines()
    assert lines[0] == str(MANIFESTS / "pod.yaml")
    assert "  12:14 docker.io/library/busybox:1.36  DENIED" in lines
    assert lines[-1] == "5 images, 3 allowed, 2 denied"


def test_stdin_input() -> None:
    manifest = (MANIFESTS / "deployment.yaml").read_text()
    code, out, err = run(
        "check", "--rules", RULES, "--facts", FACTS, "--format", "json", "-", stdin=manifest
    )
    assert code == 0, err
    assert json.loads(out)["results"][0]["source"] == "<stdin>:18"


def test_directory_input_is_scanned_recursively(tmp_path: Path) -> None:
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    (nested / "deploy.yaml").write_text((MANIFESTS / "deployment.yaml").read_text())
    (nested / "notes.txt").write_text("image: evil:latest\n")
    code, report = check_json(str(tmp_path))
    assert code == 0
    assert [r["image"] for r in report["results"]] == ["nginx:1.25", "registry.k8s.io/pause:3.9"]  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["check", "--rules", RULES, "--facts", FACTS], "give manifest files"),
        (["check", "--facts", FACTS, "--image", "nginx"], "--rules"),
        (
            ["check", "--rules", RULES, "--facts", FACTS, str(MANIFESTS / "malformed.yaml")],
            "malformed.yaml:",
        ),
        (
            ["check", "--rules", RULES, "--facts", "/nonexistent/facts.yaml", "--image", "x"],
            "cannot read",
        ),
        (
            ["check", "--rules", "/nonexistent/rules.yaml", "--facts", FACTS, "--image", "x"],
            "cannot read",
        ),
        (["check", "--rules", RULES, "--facts", FACTS, "/nonexistent.yaml"], "cannot read"),
        (["nonsense"], "invalid choice"),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(argv: list[str], expected: str) -> None:
    code, _, err = run(*argv)
    assert code == 2
    assert expected in err
    assert "Traceback" not in err


def test_bad_rules_are_reported_with_location(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: image-policy/v1\nkind: RuleSet\nrules:\n"
        "  - id: x\n    match: {images: ['**']}\n    require: {maxLayers: ten}\n"
    )
    code, _, err = run("check", "--rules", str(bad), "--facts", FACTS, "--image", "nginx")
    assert code == 2
    assert err.strip() == (
        f'{bad}:6:26: rules[0].require.maxLayers: expected a positive integer, got "ten"'
    )


def test_lint_reports_all_errors_at_once(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: image-policy/v1\nkind: RuleSet\nrules:\n"
        "  - id: x\n    match: {images: ['**']}\n    require: {maxLayer: 3, maxSize: 1XB}\n"
    )
    code, _, err = run("lint", str(bad))
    assert code == 2
    assert 'unknown key "maxLayer" (did you mean "maxLayers"?)' in err
    assert "unknown size unit 'XB'" in err
    assert err.strip().endswith("2 error(s)")


def test_lint_shipped_rules_are_clean() -> None:
    root = Path(__file__).parent.parent.parent / "rules"
    for path in [root, *sorted((root / "examples").glob("*.yaml"))]:
        code, out, err = run("lint", str(path))
        assert (code, out, err) == (0, "ok\n", ""), path


def test_schema_is_json() -> None:
    code, out, _ = run("schema")
    assert code == 0
    assert json.loads(out)["title"] == "image-policy RuleSet"


def test_python_dash_m_and_console_script_work() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "policy", "lint", str(Path(RULES))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (proc.returncode, proc.stdout) == (0, "ok\n")
    script = Path(sys.executable).parent / "image-policy"
    proc = subprocess.run(
        [str(script), "check", "--rules", RULES, "--facts", FACTS, "--image", "quay.io/x/y:1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    assert "DENIED" in proc.stdout


# --- inputs, formats, output, rule tests (issue 6) -----------------------------------------------


def test_compose_and_dockerfile_inputs_are_detected(tmp_path: Path) -> None:
    (tmp_path / "compose.yaml").write_text(
        "services:\n  web:\n    image: nginx:${TAG:-1.25}\n  api:\n    build: .\n"
    )
    (tmp_path / "Dockerfile").write_text(
        "ARG BASE=registry.k8s.io/pause:3.9\nFROM ${BASE} AS base\nFROM base\nFROM scratch\n"
    )
    code, report = check_json(str(tmp_path), "--namespace", "default")
    assert code == 0
    assert [(r["image"], r["source"]) for r in report["results"]] == [  # type: ignore[union-attr]
        ("registry.k8s.io/pause:3.9", f"{tmp_path / 'Dockerfile'}:2"),
        ("nginx:1.25", f"{tmp_path / 'compose.yaml'}:3"),
    ]


def test_unset_compose_variable_is_bad_input(tmp_path: Path) -> None:
    compose = tmp_path / "docker-compose.yml"
    compose.write_text("services:\n  api:\n    image: ghcr.io/acme/api:${API_TAG}\n")
    code, _, err = run("check", "--rules", RULES, "--facts", FACTS, str(compose))
    assert code == 2
    assert f"{compose}:3:12: services.api.image: variable ${{API_TAG}} is not set" in err


def test_build_args_feed_dockerfiles(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("ARG TAG\nFROM nginx:${TAG}\n")
    code, _, err = run("check", "--rules", RULES, "--facts", FACTS, str(dockerfile))
    assert code == 2 and "TAG" in err
    code, report = check_json(str(dockerfile), "--build-arg", "TAG=1.25", "--namespace", "x")
    assert code == 0
    assert report["results"][0]["image"] == "nginx:1.25"  # type: ignore[index]


def test_a_dockerfile_arg_bomb_is_bad_input_with_its_location(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    chain = [f"ARG A{i}=${{A{i - 1}}}${{A{i - 1}}}" for i in range(1, 39)]
    dockerfile.write_text("\n".join(["ARG A0=x", *chain, "FROM alpine:${A38}"]) + "\n")
    code, out, err = run("check", "--rules", RULES, "--facts", FACTS, str(dockerfile))
    assert code == 2
    assert err.strip() == (
        f"image-policy check: {dockerfile}:18:1: ARG A17: value longer than 65536 characters "
        "once its variables are substituted (ARGs that double each other?)"
    )
    assert out == ""


def test_images_from_a_list(tmp_path: Path) -> None:
    listing = tmp_path / "images.txt"
    listing.write_text("# release images\nnginx:1.25\n\nquay.io/acme/models:v3  # GPU\n")
    code, report = check_json("--images-from", str(listing), "--namespace", "default")
    assert code == 1
    assert [(r["image"], r["allowed"]) for r in report["results"]] == [  # type: ignore[union-attr]
        ("nginx:1.25", True),
        ("quay.io/acme/models:v3", False),
    ]


@pytest.mark.parametrize("fmt", ["sarif", "junit", "github", "json", "text"])
def test_every_format_to_an_output_file(tmp_path: Path, fmt: str) -> None:
    target = tmp_path / f"report.{fmt}"
    code, out, err = run(
        "check",
        "--rules",
        RULES,
        "--facts",
        FACTS,
        "--format",
        fmt,
        "--output",
        str(target),
        str(MANIFESTS / "pod.yaml"),
    )
    assert (code, out, err) == (1, "", "")
    text = target.read_text()
    if fmt == "sarif":
        doc = json.loads(text)
        assert doc["version"] == "2.1.0"
        rule_ids = {r["ruleId"] for r in doc["runs"][0]["results"]}
        assert rule_ids == {"few-layers", "trusted-registries"}
    elif fmt == "junit":
        import xml.etree.ElementTree as ET

        root = ET.fromstring(text)
        assert len(root.findall(".//testcase")) == 5
        assert len(root.findall(".//failure")) == 2
    elif fmt == "github":
        errors = [line for line in text.splitlines() if line.startswith("::error ")]
        assert len(errors) == 2
        assert "line=12" in errors[0]
    elif fmt == "json":
        assert json.loads(text)["summary"]["denied"] == 2
    else:
        assert text.endswith("5 images, 3 allowed, 2 denied\n")


def test_quiet_text_lists_only_findings() -> None:
    code, out, _ = run(
        "check", "--rules", RULES, "--facts", FACTS, "--quiet", str(MANIFESTS / "pod.yaml")
    )
    assert code == 1
    assert "nginx:1.25" not in out
    assert "docker.io/library/busybox:1.36  DENIED" in out
    assert out.endswith("5 images, 3 allowed, 2 denied\n")


def test_rule_tests_pass_and_fail(tmp_path: Path) -> None:
    root = Path(__file__).parent.parent.parent
    code, out, err = run(
        "test", str(root / "rules" / "default.yaml"), str(root / "rules" / "tests")
    )
    assert code == 0, out + err
    assert out.splitlines()[-1].endswith(" passed, 0 failed")
    failing = tmp_path / "failing_test.yaml"
    failing.write_text(
        "apiVersion: image-policy/v1\nkind: RuleTest\nfacts: {images: {}}\ncases:\n"
        "  - name: latest nginx is allowed (wrong on purpose)\n"
        "    image: nginx:latest\n    expect: allowed\n"
    )
    code, out, _ = run("test", str(root / "rules" / "default.yaml"), str(failing))
    assert code == 1
    assert "FAIL" in out and out.splitlines()[-1] == "0 passed, 1 failed"
    broken = tmp_path / "broken_test.yaml"
    broken.write_text("apiVersion: image-policy/v1\nkind: RuleTest\ncases: nope\n")
    code, _, err = run("test", str(root / "rules" / "default.yaml"), str(broken))
    assert code == 2
    assert f"{broken}:3:" in err


def test_pre_commit_hooks_name_real_commands() -> None:
    import re

    import yaml

    root = Path(__file__).parent.parent.parent
    hooks = yaml.safe_load((root / ".pre-commit-hooks.yaml").read_text())
    commands = set(cli.build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    for hook in hooks:
        program, command = hook["entry"].split()[:2]
        assert program == "image-policy"
        assert command in commands
        re.compile(hook["files"])
    assert {h["id"] for h in hooks} == {
        "image-policy-check",
        "image-policy-lint",
        "image-policy-pin",
    }


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["check", "--rules", RULES, "--image", "nginx", "--timeout", value], "--timeout")
        for value in ("-1", "0", "nan", "inf", "-inf", "1e400", "ten", "86401")
    ]
    + [
        (["resolve", "nginx", "--timeout", "nan"], "--timeout"),
        (["pin", "x.yaml", "--timeout", "inf"], "--timeout"),
        (["tiers", "export", "nginx", "--timeout", "-5"], "--timeout"),
        (["check", "--rules", RULES, "--image", "nginx", "--jobs", "0"], "--jobs"),
        (["check", "--rules", RULES, "--image", "nginx", "--jobs", "99999999999"], "--jobs"),
        (["serve", "--rules", RULES, "--port", "70000"], "--port"),
        (["serve", "--rules", RULES, "--port", "-1"], "--port"),
        (["serve", "--rules", RULES, "--workers", "0"], "--workers"),
        (["serve", "--rules", RULES, "--threads", "nan"], "--threads"),
        (["certs", "--check", "d", "--days", "-3"], "--days"),
    ],
)
def test_numeric_flags_are_validated_with_the_flags_name(argv: list[str], flag: str) -> None:
    """`--timeout -1`, `nan` or `inf` once crashed with a traceback and exit 1 (= denied)."""
    code, out, err = run(*argv)
    assert code == 2
    assert out == ""
    assert f"error: argument {flag}: expected" in err
    assert "Traceback" not in err


def test_a_valid_timeout_is_taken() -> None:
    code, _, err = run(
        "check", "--rules", RULES, "--facts", FACTS, "--image", "nginx:1.25", "--timeout", "2.5"
    )
    assert code == 0, err


def test_a_missing_rules_file_says_who_and_why_in_words(tmp_path: Path) -> None:
    code, out, err = run("check", "--rules", str(tmp_path / "nope.yaml"), "--image", "nginx")
    assert (code, out) == (2, "")
    assert err == (
        f"image-policy check: {tmp_path / 'nope.yaml'}: cannot read rule file: "
        "no such file or directory\n"
    )


def test_help_words(capsys: pytest.CaptureFixture[str]) -> None:
    """check --help names every input kind; pin --help does not say "in place"."""
    run("check", "--help")
    flat = " ".join(capsys.readouterr().out.split())
    for words in ("compose files", "Dockerfiles", "Helm templates", "--strict", "--env-file"):
        assert words in flat, words
    run("--help")
    out = " ".join(capsys.readouterr().out.split())
    assert "in place" not in out
    assert "show the diff pinning tag references to tag@digest (--write applies it)" in out


def test_pin_says_the_reference_once(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:  # a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    image = f"127.0.0.1:{port}/team/app:1.0"
    manifest = tmp_path / "pod.yaml"
    manifest.write_text(
        f"apiVersion: v1\nkind: Pod\nspec:\n  containers: [{{name: a, image: {image}}}]\n"
    )
    code, out, err = run("pin", "--no-cache", "--timeout", "3", str(manifest))
    assert (code, out) == (2, "")
    first = err.splitlines()[0]
    assert first.startswith(f"image-policy pin: {image}: cannot reach 127.0.0.1:{port}")
    assert first.count(image) == 1
