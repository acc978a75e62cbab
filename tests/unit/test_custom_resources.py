"""Custom resources (issue 16): images found in any kind by pod-template shape and by the
workloads table (built-in and settings), in the CLI and the webhook alike, within bounds."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from policy import cli
from policy.errors import SettingsErrors
from policy.k8s import admission, workloads
from policy.settings import parse_settings

DATA = Path(__file__).parent.parent / "data"
CRDS = DATA / "realworld" / "deploy" / "crds"
RULES = str(DATA / "cli" / "rules.yaml")
FACTS = str(DATA / "cli" / "facts.yaml")


def load(name: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((CRDS / name).read_text())
    return document


@pytest.mark.parametrize(
    ("name", "images", "how"),
    [
        ("rollout.yaml", ["argoproj/rollouts-demo:blue"], "pod template at spec.template.spec"),
        (
            "knative-service.yaml",
            ["ghcr.io/knative/helloworld-go:latest"],
            "pod template at spec.template.spec",
        ),
        ("cloneset.yaml", ["nginx:alpine"], "pod template at spec.template.spec"),
        (
            "tekton-task.yaml",
            ["golang:1.22", "golang:1.22", "docker:24-dind", "docker.io/library/alpine:3.19"],
            "image paths from the built-in table",
        ),
        (
            "argo-workflow.yaml",
            ["docker/whalesay", "python:alpine3.6"],
            "image paths from the built-in table",
        ),
    ],
)
def test_the_five_kinds_are_seen(name: str, images: list[str], how: str) -> None:
    extraction = workloads.extract(load(name))
    assert [s.image for s in extraction.sites] == images
    assert extraction.problems == ()
    assert extraction.how == how


def test_sites_carry_paths_and_names() -> None:
    sites = workloads.extract(load("tekton-task.yaml")).sites
    assert [(s.pointer, s.name) for s in sites] == [
        ("/spec/steps/0/image", "build"),
        ("/spec/steps/1/image", "test"),
        ("/spec/sidecars/0/image", "docker"),
        ("/spec/stepTemplate/image", ""),
    ]


def test_a_cronjob_shaped_custom_kind_is_found_through_job_template() -> None:
    obj = {
        "apiVersion": "example.com/v1",
        "kind": "ScheduledThing",
        "spec": {
            "jobTemplate": {
                "spec": {"template": {"spec": {"containers": [{"name": "a", "image": "x:1"}]}}}
            }
        },
    }
    extraction = workloads.extract(obj)
    assert [s.pointer for s in extraction.sites] == [
        "/spec/jobTemplate/spec/template/spec/containers/0/image"
    ]


@pytest.mark.parametrize(
    "obj",
    [
        # Kubernetes' own groups never get a shape search (a CRD's schema is deep and says
        # "containers" everywhere)
        {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "spec": {"template": {"spec": {"containers": [{"image": "schema"}]}}},
        },
        {"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": "b"}},
        # a Kyverno pattern is not a pod template (not under template.spec)
        {
            "apiVersion": "kyverno.io/v1",
            "kind": "ClusterPolicy",
            "spec": {
                "rules": [
                    {"validate": {"pattern": {"spec": {"containers": [{"image": "!*:latest"}]}}}}
                ]
            },
        },
    ],
)
def test_objects_without_pod_templates_have_no_sites(obj: dict[str, Any]) -> None:
    assert workloads.extract(obj) == workloads.Extraction()


def test_a_container_without_image_in_a_custom_template_is_a_problem() -> None:
    obj = load("rollout.yaml")
    del obj["spec"]["template"]["spec"]["containers"][0]["image"]
    problems = workloads.extract(obj).problems
    assert [str(p) for p in problems] == [
        "spec.template.spec.containers[0].image: expected a string, got nothing"
    ]


def test_wrong_types_along_a_table_path_are_problems() -> None:
    obj = {"apiVersion": "tekton.dev/v1", "kind": "Task", "spec": {"steps": {"a": 1}}}
    assert [str(p) for p in workloads.extract(obj).problems] == [
        "spec.steps: expected a list, got a mapping"
    ]


def nested(depth: int) -> dict[str, Any]:
    node: dict[str, Any] = {"template": {"spec": {"containers": [{"name": "a", "image": "x:1"}]}}}
    for _ in range(depth):
        node = {"n": node}
    return {"apiVersion": "example.com/v1", "kind": "Deep", "spec": node}


def test_a_deep_object_is_searched_within_bounds() -> None:
    """A pod template is found down to SEARCH_DEPTH levels; deeper is not searched (a
    controller reading images there is registered with the table). 10,000 levels cost as
    little as 30."""
    assert [s.image for s in workloads.extract(nested(workloads.SEARCH_DEPTH - 3)).sites] == ["x:1"]
    assert workloads.extract(nested(workloads.SEARCH_DEPTH)).sites == ()
    assert workloads.extract(nested(10_000)) == workloads.Extraction()


def test_a_huge_object_is_a_problem_not_a_partial_search() -> None:
    wide = {
        "apiVersion": "example.com/v1",
        "kind": "Wide",
        "spec": {"items": [{}] * (workloads.SEARCH_NODES + 1)},
    }
    problems = workloads.extract(wide).problems
    assert [str(p) for p in problems] == [
        f"too large to search for pod templates (over {workloads.SEARCH_NODES:,} values)"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("spec.steps[*].image", ("spec", "steps", None, "image")),
        ("spec.matrix[*][*].image", ("spec", "matrix", None, None, "image")),
        ("image", ("image",)),
    ],
)
def test_parse_path(text: str, expected: workloads.PathPattern) -> None:
    assert workloads.parse_path(text) == expected


@pytest.mark.parametrize("text", ["", "spec..image", "spec.steps[0].image", "[*]", "spec.", "a b"])
def test_parse_path_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="expected a path like"):
        workloads.parse_path(text)


SETTINGS = """\
workloads:
  ci.example.com/Runner:
    podSpecs: ["spec.pod"]
    images: ["spec.jobs[*].image"]
"""
RUNNER = {
    "apiVersion": "ci.example.com/v1",
    "kind": "Runner",
    "metadata": {"name": "r"},
    "spec": {
        "pod": {"containers": [{"name": "main", "image": "registry.example/app:1"}]},
        "jobs": [{"name": "lint", "image": "busybox:1.36"}],
    },
}


def test_settings_add_kinds_to_the_built_in_table(tmp_path: Path) -> None:
    settings = parse_settings(SETTINGS, str(tmp_path / "s.yaml"))
    table = settings.workload_table
    assert ("tekton.dev", "Task") in table  # the built-in entries stay
    extraction = workloads.extract(RUNNER, table=table)
    assert [s.image for s in extraction.sites] == ["registry.example/app:1", "busybox:1.36"]
    assert extraction.how == "image paths from the settings (workloads.ci.example.com/Runner)"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("workloads: [a]\n", "workloads: expected a mapping of group/Kind to image paths"),
        ("workloads:\n  example.com/lower: {images: [a]}\n", "expected group/Kind"),
        (
            "workloads:\n  apps/Deployment: {images: [a]}\n",
            "Deployment is a built-in workload kind",
        ),
        ('workloads:\n  x.io/K: {images: ["spec.a[0]"]}\n', "expected a path like"),
        ("workloads:\n  x.io/K: {imgs: [a]}\n", "unknown key"),
    ],
)
def test_settings_workloads_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(SettingsErrors, match=message):
        parse_settings(text, str(tmp_path / "s.yaml"))


def review(obj: dict[str, Any], group: str, kind: str) -> admission.Request:
    return admission.parse_review(
        {
            "apiVersion": admission.API_V1,
            "kind": "AdmissionReview",
            "request": {
                "uid": "u",
                "kind": {"group": group, "version": "v1", "kind": kind},
                "resource": {"group": group, "version": "v1", "resource": kind.lower() + "s"},
                "operation": "CREATE",
                "namespace": "shop",
                "object": obj,
            },
        }
    )


@pytest.mark.parametrize(
    ("name", "group", "count"),
    [
        ("rollout.yaml", "argoproj.io", 1),
        ("knative-service.yaml", "serving.knative.dev", 1),
        ("cloneset.yaml", "apps.kruise.io", 1),
        ("tekton-task.yaml", "tekton.dev", 4),
        ("argo-workflow.yaml", "argoproj.io", 2),
    ],
)
def test_the_webhook_plans_the_same_sites(name: str, group: str, count: int) -> None:
    obj = load(name)
    plan = admission.plan(review(obj, group, obj["kind"]))
    assert [s.image for s in plan.check] == [s.image for s in workloads.extract(obj).sites]
    assert len(plan.check) == count


def test_the_webhook_uses_the_settings_table(tmp_path: Path) -> None:
    table = parse_settings(SETTINGS, str(tmp_path / "s.yaml")).workload_table
    request = review(RUNNER, "ci.example.com", "Runner")
    assert (
        admission.plan(request).skip_reason == "kind ci.example.com/Runner holds no images we check"
    )
    plan = admission.plan(request, table=table)
    assert [s.pointer for s in plan.check] == ["/spec/pod/containers/0/image", "/spec/jobs/0/image"]


def test_the_webhook_denies_a_custom_kind_that_may_hide_images() -> None:
    obj = load("rollout.yaml")
    obj["spec"]["template"]["spec"]["containers"][0]["image"] = 42
    plan = admission.plan(review(obj, "argoproj.io", "Rollout"))
    assert [str(p) for p in plan.problems] == [
        "spec.template.spec.containers[0].image: expected a string, got 42"
    ]


def test_explain_says_how_each_kind_was_read() -> None:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(
        [
            "check",
            "--rules",
            RULES,
            "--facts",
            FACTS,
            "--explain",
            "-q",
            "--format",
            "json",
            str(CRDS),
        ],
        out=out,
        err=err,
    )
    assert code == 1
    lines = err.getvalue().splitlines()
    assert (
        f"{CRDS / 'rollout.yaml'}: Rollout (argoproj.io): pod template at spec.template.spec"
        in lines
    )
    assert (
        f"{CRDS / 'tekton-task.yaml'}: Task (tekton.dev): image paths from the built-in table"
        in lines
    )
    assert f"{CRDS / 'tekton-task.yaml'}: kubernetes, 4 image(s)" in lines
    assert len(json.loads(out.getvalue())["results"]) == 9


def test_explain_names_kinds_without_images() -> None:
    out, err = io.StringIO(), io.StringIO()
    manifest = "apiVersion: example.com/v1\nkind: Widget\nspec: {size: 3}\n"
    import sys

    old = sys.stdin
    sys.stdin = io.StringIO(manifest)
    try:
        cli.main(["check", "--rules", RULES, "--facts", FACTS, "--explain", "-"], out=out, err=err)
    finally:
        sys.stdin = old
    assert (
        "<stdin>: Widget (example.com): no pod template found and not in the workloads table "
        "(add its image paths under `workloads:` in the settings)"
    ) in err.getvalue()
