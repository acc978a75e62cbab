"""policy.k8s.workloads: image sites of Kubernetes objects, with paths, pointers and problems."""

from __future__ import annotations

from typing import Any

import pytest

from policy.k8s import workloads
from policy.k8s.workloads import Extraction, ImageSite, Problem

DIGEST = "sha256:4c0fdaa8b6341bfdeca5f18f7837462c80cff90527ee35ef185571e1c327beac"


def one_container(image: object = "nginx:1.25") -> dict[str, Any]:
    return {"containers": [{"name": "web", "image": image}]}


def wrap(spec: dict[str, Any], *path: str) -> dict[str, Any]:
    """Nest `spec` under `path`, innermost key last: wrap(s, "a", "b") == {"a": {"b": s}}."""
    value: dict[str, Any] = spec
    for key in reversed(path):
        value = {key: value}
    return value


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("Pod", ("spec",)),
        ("Deployment", ("spec", "template", "spec")),
        ("ReplicaSet", ("spec", "template", "spec")),
        ("StatefulSet", ("spec", "template", "spec")),
        ("DaemonSet", ("spec", "template", "spec")),
        ("Job", ("spec", "template", "spec")),
        ("ReplicationController", ("spec", "template", "spec")),
        ("CronJob", ("spec", "jobTemplate", "spec", "template", "spec")),
        ("PodTemplate", ("template", "spec")),
        ("Service", None),
        ("pod", None),
        ("List", None),
        ("", None),
    ],
)
def test_pod_spec_path(kind: str, expected: tuple[str, ...] | None) -> None:
    assert workloads.pod_spec_path(kind) == expected


def test_workload_kinds_are_the_nine_kinds_with_a_pod_spec() -> None:
    assert (
        frozenset(
            {
                "Pod",
                "Deployment",
                "ReplicaSet",
                "StatefulSet",
                "DaemonSet",
                "Job",
                "ReplicationController",
                "CronJob",
                "PodTemplate",
            }
        )
        == workloads.WORKLOAD_KINDS
    )


@pytest.mark.parametrize(
    ("kind", "where", "pointer"),
    [
        ("Pod", ("spec",), "/spec/containers/0/image"),
        ("Deployment", ("spec", "template", "spec"), "/spec/template/spec/containers/0/image"),
        ("ReplicaSet", ("spec", "template", "spec"), "/spec/template/spec/containers/0/image"),
        ("StatefulSet", ("spec", "template", "spec"), "/spec/template/spec/containers/0/image"),
        ("DaemonSet", ("spec", "template", "spec"), "/spec/template/spec/containers/0/image"),
        ("Job", ("spec", "template", "spec"), "/spec/template/spec/containers/0/image"),
        (
            "ReplicationController",
            ("spec", "template", "spec"),
            "/spec/template/spec/containers/0/image",
        ),
        (
            "CronJob",
            ("spec", "jobTemplate", "spec", "template", "spec"),
            "/spec/jobTemplate/spec/template/spec/containers/0/image",
        ),
        ("PodTemplate", ("template", "spec"), "/template/spec/containers/0/image"),
    ],
)
def test_each_workload_kind_finds_its_container_image(
    kind: str, where: tuple[str, ...], pointer: str
) -> None:
    obj = {"apiVersion": "v1", "kind": kind, **wrap(one_container(), *where)}
    assert workloads.image_sites(obj) == [
        ImageSite("nginx:1.25", (*where, "containers", 0, "image"), "container", "web")
    ]
    assert workloads.image_sites(obj)[0].pointer == pointer


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            {"containers": [{"name": "a", "image": "nginx:1.25"}]},
            [ImageSite("nginx:1.25", ("spec", "containers", 0, "image"), "container", "a")],
        ),
        (
            {"initContainers": [{"name": "i", "image": "docker.io/library/busybox"}]},
            [
                ImageSite(
                    "docker.io/library/busybox",
                    ("spec", "initContainers", 0, "image"),
                    "initContainer",
                    "i",
                )
            ],
        ),
        (
            {"ephemeralContainers": [{"name": "e", "image": "localhost:5000/app:1"}]},
            [
                ImageSite(
                    "localhost:5000/app:1",
                    ("spec", "ephemeralContainers", 0, "image"),
                    "ephemeralContainer",
                    "e",
                )
            ],
        ),
        (
            {"volumes": [{"name": "v", "image": {"reference": f"ghcr.io/acme/app@{DIGEST}"}}]},
            [
                ImageSite(
                    f"ghcr.io/acme/app@{DIGEST}",
                    ("spec", "volumes", 0, "image", "reference"),
                    "volume",
                    "v",
                )
            ],
        ),
        (
            {"volumes": [{"name": "c", "emptyDir": {}}, {"name": "n", "image": None}]},
            [],
        ),
        ({"containers": None, "initContainers": [], "volumes": None}, []),
        (
            {"containers": [{"image": "registry.k8s.io/pause:3.9"}]},
            [
                ImageSite(
                    "registry.k8s.io/pause:3.9", ("spec", "containers", 0, "image"), "container", ""
                )
            ],
        ),
        (
            {"containers": [{"name": 7, "image": "nginx"}]},
            [ImageSite("nginx", ("spec", "containers", 0, "image"), "container", "")],
        ),
    ],
    ids=[
        "container",
        "initContainer",
        "ephemeralContainer",
        "image-volume",
        "other-volumes",
        "null-and-empty-lists",
        "no-name",
        "name-not-a-string",
    ],
)
def test_pod_spec_fields(spec: dict[str, Any], expected: list[ImageSite]) -> None:
    extraction = workloads.extract({"kind": "Pod", "spec": spec})
    assert list(extraction.sites) == expected
    assert extraction.problems == ()


def test_sites_come_in_spec_order_containers_init_ephemeral_volumes() -> None:
    spec = {
        "volumes": [{"name": "v", "image": {"reference": "quay.io/acme/models:v3"}}],
        "ephemeralContainers": [{"name": "e", "image": "e:1"}],
        "initContainers": [{"name": "i1", "image": "i:1"}, {"name": "i2", "image": "i:2"}],
        "containers": [{"name": "c1", "image": "c:1"}, {"name": "c2", "image": "c:2"}],
    }
    sites = workloads.image_sites({"kind": "Pod", "spec": spec})
    assert [(s.pointer, s.field, s.name, s.image) for s in sites] == [
        ("/spec/containers/0/image", "container", "c1", "c:1"),
        ("/spec/containers/1/image", "container", "c2", "c:2"),
        ("/spec/initContainers/0/image", "initContainer", "i1", "i:1"),
        ("/spec/initContainers/1/image", "initContainer", "i2", "i:2"),
        ("/spec/ephemeralContainers/0/image", "ephemeralContainer", "e", "e:1"),
        ("/spec/volumes/0/image/reference", "volume", "v", "quay.io/acme/models:v3"),
    ]


@pytest.mark.parametrize(
    ("obj", "sites", "problems"),
    [
        (
            {"kind": "Pod", "spec": {"containers": [{"image": "a:1"}, {"image": 42}]}},
            ["/spec/containers/0/image"],
            ["spec.containers[1].image: expected a string, got 42"],
        ),
        (
            {"kind": "Pod", "spec": {"containers": [{"name": "x"}]}},
            [],
            ["spec.containers[0].image: expected a string, got nothing"],
        ),
        (
            {"kind": "Pod", "spec": {"containers": [{"image": ""}, {"image": None}]}},
            [],
            [
                "spec.containers[0].image: expected a non-empty string, got an empty string",
                "spec.containers[1].image: expected a string, got null",
            ],
        ),
        (
            {"kind": "Pod", "spec": {"containers": {"name": "web", "image": "nginx"}}},
            [],
            ["spec.containers: expected a list, got a mapping"],
        ),
        (
            {"kind": "Pod", "spec": {"containers": ["nginx:1.25", {"image": "a:1"}]}},
            ["/spec/containers/1/image"],
            ['spec.containers[0]: expected a mapping, got "nginx:1.25"'],
        ),
        (
            {"kind": "Pod", "spec": {"initContainers": "busybox", "containers": [{"image": "a"}]}},
            ["/spec/containers/0/image"],
            ['spec.initContainers: expected a list, got "busybox"'],
        ),
        (
            {"kind": "Pod", "spec": {"volumes": [{"name": "v", "image": "nginx"}]}},
            [],
            ['spec.volumes[0].image: expected a mapping, got "nginx"'],
        ),
        (
            {"kind": "Pod", "spec": {"volumes": [{"image": {"pullPolicy": "Always"}}, True]}},
            [],
            [
                "spec.volumes[0].image.reference: expected a string, got nothing",
                "spec.volumes[1]: expected a mapping, got true",
            ],
        ),
        ({"kind": "Pod"}, [], ["spec: expected a mapping, got nothing"]),
        ({"kind": "Pod", "spec": None}, [], ["spec: expected a mapping, got null"]),
        ({"kind": "Pod", "spec": ["x"]}, [], ["spec: expected a mapping, got a list"]),
        (
            {"kind": "Deployment", "spec": {"replicas": 1}},
            [],
            ["spec.template: expected a mapping, got nothing"],
        ),
        (
            {"kind": "CronJob", "spec": {"jobTemplate": {"spec": {"template": 3.5}}}},
            [],
            ["spec.jobTemplate.spec.template: expected a mapping, got 3.5"],
        ),
        (
            {"kind": "PodTemplate", "template": {"spec": "x" * 100}},
            [],
            ['template.spec: expected a mapping, got "' + "x" * 55 + '..."'],
        ),
    ],
    ids=[
        "image-an-int",
        "image-missing",
        "image-empty-or-null",
        "containers-a-mapping",
        "container-a-string",
        "initContainers-a-string",
        "volume-image-a-string",
        "volume-reference-missing-and-volume-a-bool",
        "spec-missing",
        "spec-null",
        "spec-a-list",
        "template-missing",
        "cronjob-template-a-float",
        "long-string-shortened",
    ],
)
def test_malformed_shapes_are_problems_not_crashes(
    obj: dict[str, Any], sites: list[str], problems: list[str]
) -> None:
    extraction = workloads.extract(obj)
    assert [site.pointer for site in extraction.sites] == sites
    assert [str(problem) for problem in extraction.problems] == problems


@pytest.mark.parametrize(
    "obj",
    [
        {},
        {"kind": "Service", "spec": {"containers": [{"image": "nginx"}]}},
        {"kind": 42, "spec": one_container()},
        {"kind": None, "spec": one_container()},
        {"spec": one_container()},
        {"kind": "pod", "spec": one_container()},
    ],
    ids=["empty", "not-a-workload", "kind-an-int", "kind-null", "kind-missing", "kind-lowercase"],
)
def test_unknown_kinds_have_no_sites_and_no_problems(obj: dict[str, Any]) -> None:
    assert workloads.extract(obj) == Extraction()
    assert workloads.image_sites(obj) == []


def test_kind_argument_overrides_a_missing_kind() -> None:
    item = wrap(one_container(), "spec", "template", "spec")
    assert workloads.image_sites(item) == []
    sites = workloads.extract(item, kind="Deployment").sites
    assert [site.pointer for site in sites] == ["/spec/template/spec/containers/0/image"]


def test_pod_spec_sites_for_the_ephemeralcontainers_subresource() -> None:
    pod = {
        "kind": "Pod",
        "spec": {
            "containers": [{"name": "app", "image": "nginx:1.25"}],
            "ephemeralContainers": [{"name": "debugger", "image": "docker.io/library/busybox"}],
        },
    }
    sites = workloads.pod_spec_sites(pod["spec"], ("spec",))
    assert sites == workloads.image_sites(pod)
    assert sites[1] == ImageSite(
        "docker.io/library/busybox",
        ("spec", "ephemeralContainers", 0, "image"),
        "ephemeralContainer",
        "debugger",
    )
    assert workloads.pod_spec_sites(pod["spec"])[0].path == ("containers", 0, "image")


@pytest.mark.parametrize(
    ("spec", "prefix", "problem"),
    [
        (None, ("spec",), "spec: expected a mapping, got null"),
        ("x", (), 'expected a mapping, got "x"'),
    ],
)
def test_extract_pod_spec_of_a_non_mapping(spec: object, prefix: tuple[str], problem: str) -> None:
    extraction = workloads.extract_pod_spec(spec, prefix)
    assert extraction.sites == ()
    assert [str(p) for p in extraction.problems] == [problem]
    assert workloads.pod_spec_sites(spec, prefix) == []


@pytest.mark.parametrize(
    ("path", "pointer", "dotted"),
    [
        ((), "", ""),
        (
            ("spec", "containers", 0, "image"),
            "/spec/containers/0/image",
            "spec.containers[0].image",
        ),
        (("items", 3, "spec"), "/items/3/spec", "items[3].spec"),
        (("a/b", "c~d", "~/"), "/a~1b/c~0d/~0~1", "a/b.c~d.~/"),
        (("",), "/", ""),
    ],
)
def test_pointer_and_dotted_paths(path: tuple[str | int, ...], pointer: str, dotted: str) -> None:
    assert workloads.json_pointer(path) == pointer
    assert ImageSite("nginx", path, "container", "").pointer == pointer
    assert workloads.dotted(path) == dotted


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "null"),
        (True, "true"),
        (False, "false"),
        (42, "42"),
        (1.5, "1.5"),
        ("nginx", '"nginx"'),
        ("", '""'),
        ([1], "a list"),
        ({"a": 1}, "a mapping"),
        (b"x", "a bytes"),
    ],
)
def test_describe(value: object, text: str) -> None:
    assert workloads.describe(value) == text


def test_problem_without_a_path_is_just_its_message() -> None:
    assert str(Problem((), "expected a mapping, got null")) == "expected a mapping, got null"
    assert str(Problem(("spec",), "m")) == "spec: m"
