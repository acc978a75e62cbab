"""policy.scanners.kubernetes: every image in Kubernetes YAML, located at its scalar."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from policy.errors import InputError
from policy.scanners import FoundImage
from policy.scanners import kubernetes as k8s

MANIFESTS = Path(__file__).parent.parent / "data" / "manifests"
APP_DIGEST = "sha256:4c0fdaa8b6341bfdeca5f18f7837462c80cff90527ee35ef185571e1c327beac"
AGENT_DIGEST = "sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4"

# (line, column, image, kind, name, namespace, container, field)
Row = tuple[int, int, str, str, str, str | None, str, str]


def rows(found: list[FoundImage]) -> list[Row]:
    return [
        (f.line, f.column, f.image, f.kind, f.name, f.namespace, f.container, f.field)
        for f in found
    ]


def scan_text(text: str) -> list[Row]:
    return rows(k8s.scan(text, "in.yaml"))


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        (
            "pod.yaml",
            [
                (12, 14, "docker.io/library/busybox:1.36", "Pod", "debug-me", "tools",
                 "wait-for-db", "initContainer"),
                (16, 14, "nginx:1.25", "Pod", "debug-me", "tools", "web", "container"),
                (20, 14, f"ghcr.io/acme/app@{APP_DIGEST}", "Pod", "debug-me", "tools", "app",
                 "container"),
                (23, 14, "localhost:5000/debug:1", "Pod", "debug-me", "tools", "debugger",
                 "ephemeralContainer"),
                (30, 20, "quay.io/acme/models:v3", "Pod", "debug-me", "tools", "models",
                 "volume"),
            ],
        ),
        (
            "deployment.yaml",
            [
                (18, 18, "nginx:1.25", "Deployment", "web", "shop", "nginx", "container"),
                (20, 18, "registry.k8s.io/pause:3.9", "Deployment", "web", "shop", "sidecar",
                 "container"),
            ],
        ),
        (
            "cronjob.yaml",
            [
                (14, 22, "docker.io/curlimages/curl:8.5.0", "CronJob", "nightly-report", None,
                 "fetch", "initContainer"),
                (17, 22, "localhost:5000/app:1", "CronJob", "nightly-report", None, "report",
                 "container"),
            ],
        ),
        (
            "mixed.yaml",
            [
                (28, 35, "postgres:16.1", "StatefulSet", "db", "data", "postgres", "container"),
                (44, 18, f"ghcr.io/acme/agent@{AGENT_DIGEST}", "DaemonSet", "node-agent",
                 "kube-system", "agent", "container"),
            ],
        ),
        (
            "list.yaml",
            [
                (14, 22, "localhost:5000/app:1", "Job", "migrate", None, "migrate", "container"),
                (27, 26, "docker.io/library/busybox", "ReplicaSet", "legacy", None, "legacy",
                 "container"),
                (38, 26, "nginx:1.25", "ReplicationController", "older", "museum", "older",
                 "container"),
                (47, 20, "registry.k8s.io/pause:3.9", "PodTemplate", "template", None, "paused",
                 "container"),
            ],
        ),
    ],
)  # fmt: skip
def test_sample_manifests(filename: str, expected: list[Row]) -> None:
    path = MANIFESTS / filename
    text = path.read_text()
    found = k8s.scan(text, str(path))
    assert rows(found) == expected
    lines = text.splitlines()
    for image in found:
        assert image.file == str(path)
        assert image.location == f"{path}:{image.line}"
        # The column points at the scalar itself (or at its opening quote).
        at = lines[image.line - 1][image.column - 1 :]
        assert at.lstrip("\"'").startswith(image.image)


def test_malformed_sample_error_names_file_and_line() -> None:
    path = MANIFESTS / "malformed.yaml"
    with pytest.raises(InputError, match=rf"^{re.escape(str(path))}:9:6: "):
        k8s.scan(path.read_text(), str(path))


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        *((path.name, True) for path in sorted(MANIFESTS.glob("*.yaml"))),
    ],
)
def test_sample_manifests_look_like_kubernetes(filename: str, expected: bool) -> None:
    assert k8s.looks_like_kubernetes((MANIFESTS / filename).read_text()) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("apiVersion: v1\nkind: Pod\n", True),
        ('{"apiVersion": "v1", "kind": "Pod"}', True),
        ("services:\n  web:\n    image: nginx\n", False),
        ("apiVersion: v2\nname: chart\n", False),
        ("kind: Pod\n", False),
        ("a: 1\n---\nkind: Pod\napiVersion: v1\n", True),
        ("spec:\n  apiVersion: v1\n  kind: Pod\n", False),
        ("- apiVersion: v1\n  kind: Pod\n", False),
        ("", False),
        ("FROM nginx:1.25\nRUN true\n", False),
        # Invalid YAML: judged by unindented keys of one document.
        ("apiVersion: v1\nkind: Pod\nspec: [\n", True),
        ("apiVersion: v1\n---\nkind: Pod\nspec: [\n", False),
        ("x: [\n  apiVersion: v1\n  kind: Pod\n", False),
    ],
)
def test_looks_like_kubernetes(text: str, expected: bool) -> None:
    assert k8s.looks_like_kubernetes(text) is expected


POD = """\
apiVersion: v1
kind: Pod
metadata:
  name: p
spec:
  containers:
    - name: c
      image: nginx:1.25
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", []),
        ("# only a comment\n", []),
        ("---\n---\n...\n", []),
        ("a: 1\nb: [x]\n", []),  # not a Kubernetes object: no kind
        ("kind: 42\nspec: {containers: [{image: nginx}]}\n", []),
        ("apiVersion: v1\nkind: Service\nspec: {ports: [{port: 80}]}\n", []),
        (POD, [(8, 14, "nginx:1.25", "Pod", "p", None, "c", "container")]),
        (
            "---\n" + POD + "---\n\n---\n" + POD,
            [
                (9, 14, "nginx:1.25", "Pod", "p", None, "c", "container"),
                (20, 14, "nginx:1.25", "Pod", "p", None, "c", "container"),
            ],
        ),
        (
            '{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "j", "namespace": "n"},\n'
            ' "spec": {"containers": [{"name": "c", "image": "nginx:1.25"}]}}\n',
            [(2, 49, "nginx:1.25", "Pod", "j", "n", "c", "container")],
        ),
        (
            "kind: Pod\nspec:\n  containers:\n  - image: 'busybox'\n  - image: \"pause\"\n",
            [
                (4, 12, "busybox", "Pod", "", None, "", "container"),
                (5, 12, "pause", "Pod", "", None, "", "container"),
            ],
        ),
    ],
    ids=[
        "empty",
        "comment",
        "empty-documents",
        "no-kind",
        "kind-not-a-string",
        "service",
        "pod",
        "multi-document",
        "json",
        "quoted-scalars",
    ],
)
def test_documents(text: str, expected: list[Row]) -> None:
    assert scan_text(text) == expected


def test_images_are_ordered_by_position_in_the_file() -> None:
    text = """\
kind: Pod
spec:
  volumes: [{name: v, image: {reference: "v:1"}}]
  initContainers: [{name: i, image: "i:1"}]
  containers: [{name: c, image: "c:1"}]
"""
    assert [(r[0], r[2]) for r in scan_text(text)] == [(3, "v:1"), (4, "i:1"), (5, "c:1")]


def test_nested_lists_and_typed_lists() -> None:
    text = """\
apiVersion: v1
kind: List
items:
  - kind: List
    items:
      - kind: List
        items:
          - kind: Pod
            metadata: {name: deep}
            spec: {containers: [{name: c, image: "deep:1"}]}
  - apiVersion: apps/v1
    kind: DeploymentList
    items:
      - metadata: {name: typed}
        spec: {template: {spec: {containers: [{name: c, image: "typed:1"}]}}}
  - kind: List
    items: null
  - kind: List
    items:
      - metadata: {name: no-kind}
        spec: {containers: [{name: c, image: "skipped:1"}]}
  - kind: PodList
    items:
      - kind: Job
        metadata: {name: explicit}
        spec: {template: {spec: {containers: [{name: c, image: "explicit:1"}]}}}
"""
    assert scan_text(text) == [
        (10, 50, "deep:1", "Pod", "deep", None, "c", "container"),
        (15, 64, "typed:1", "Deployment", "typed", None, "c", "container"),
        (26, 64, "explicit:1", "Job", "explicit", None, "c", "container"),
    ]


def test_an_object_reached_twice_through_aliases_is_reported_once() -> None:
    text = """\
kind: List
items:
  - &pod
    kind: Pod
    spec: {containers: [{image: "nginx:1.25"}]}
  - *pod
  - kind: List
    items: [*pod]
"""
    assert scan_text(text) == [(5, 33, "nginx:1.25", "Pod", "", None, "", "container")]


def test_a_list_containing_itself_terminates() -> None:
    text = "kind: List\nitems: &items\n  - kind: List\n    items: *items\n"
    with pytest.raises(InputError, match=r"^in\.yaml:2:8: recursive alias$"):
        k8s.scan(text, "in.yaml")


def test_merge_keys_and_anchors_locate_the_image_where_it_is_written() -> None:
    text = """\
kind: Pod
x-defaults:
  base: &base
    image: nginx:1.25
    name: base
  other: &other
    image: ignored:1
    name: other
spec:
  containers:
    - <<: *base
      name: merged
    - <<: [*base, *other]
      name: first-source-wins
    - <<: *base
      image: own:1
    - image: &img busybox
    - image: *img
"""
    assert scan_text(text) == [
        (4, 12, "nginx:1.25", "Pod", "", None, "merged", "container"),
        (4, 12, "nginx:1.25", "Pod", "", None, "first-source-wins", "container"),
        (16, 14, "own:1", "Pod", "", None, "base", "container"),
        (17, 14, "busybox", "Pod", "", None, "", "container"),
        (17, 14, "busybox", "Pod", "", None, "", "container"),
    ]


def test_a_duplicate_key_keeps_its_last_value_like_kubectl() -> None:
    text = "kind: Pod\nspec:\n  containers:\n  - image: first:1\n    image: last:1\n"
    assert scan_text(text) == [(5, 12, "last:1", "Pod", "", None, "", "container")]


def test_odd_scalars_elsewhere_do_not_break_the_scan() -> None:
    text = """\
kind: Pod
metadata:
  annotations:
    date: 2020-13-45
    when: 2024-01-02T03:04:05Z
    yaml11-value: =
    octal: 0o17
    flag: yes
    huge: 1e999
    binary: !!binary aGVsbG8=
    custom: !thing value
spec:
  containers: [{image: "nginx:1.25"}]
"""
    assert [r[2] for r in scan_text(text)] == ["nginx:1.25"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # YAML syntax errors, located at the problem.
        ("kind: Pod\nspec:\n  a: b\n   c: d\n", r"^in\.yaml:4:5: "),
        ("kind: Pod\nspec: [a, b\n", r"^in\.yaml:3:1: .*flow sequence at 2:7"),
        ("kind: Pod\nname: 'open\n", r"^in\.yaml:3:1: .*quoted scalar"),
        ("kind: Pod\nimage: *missing\n", r"^in\.yaml:2:8: found undefined alias"),
        ("kind: Pod\n\tspec: {}\n", r"^in\.yaml:2:1: "),
        ("kind: Pod\nnote: é\x00\n", r"^in\.yaml:2:8: control characters are not allowed$"),
        # Values that cannot be read.
        ("kind: Pod\nreplicas: !!int many\n", r"^in\.yaml:2:11: invalid int 'many'$"),
        ("kind: Pod\nx: !!bool maybe\n", r"^in\.yaml:2:4: invalid bool 'maybe'$"),
        ("kind: Pod\n? [a, b]\n: c\n", r"^in\.yaml:2:3: a mapping key must be a scalar$"),
        ("kind: Pod\n<<: 5\n", r"^in\.yaml:2:5: expected a mapping or a list of mappings"),
        ("a: &a [*a]\n", r"^in\.yaml:1:4: recursive alias$"),
        ("a: " + "[" * 900 + "]" * 900 + "\n", r"^in\.yaml:1:1: document nested too deeply$"),
        # Documents that are not mappings.
        ("- kind: Pod\n", r"^in\.yaml:1:1: expected a Kubernetes object \(a mapping\), got a list"),
        (POD + "---\njust text\n", r'^in\.yaml:10:1: .*got "just text"$'),
        ("---\n42\n", r"^in\.yaml:2:1: expected a Kubernetes object \(a mapping\), got 42$"),
    ],
)  # fmt: skip
def test_input_errors_are_located(text: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        k8s.scan(text, "in.yaml")


def test_every_structural_problem_of_a_file_is_reported_with_its_location() -> None:
    text = """\
kind: Deployment
metadata: {name: web}
spec:
  template:
    spec:
      containers:
        - name: ok
          image: nginx:1.25
        - name: number
          image: 42
        - name: missing
---
kind: List
items:
  - 3
  - kind: CronJob
    spec: {}
---
kind: List
items: {kind: Pod}
"""
    with pytest.raises(InputError) as caught:
        k8s.scan(text, "in.yaml")
    assert str(caught.value).splitlines() == [
        "in.yaml:10:18: spec.template.spec.containers[1].image: expected a string, got 42",
        "in.yaml:11:11: spec.template.spec.containers[2].image: expected a string, got nothing",
        "in.yaml:15:5: items[0]: expected a mapping, got 3",
        "in.yaml:17:11: items[1].spec.jobTemplate: expected a mapping, got nothing",
        "in.yaml:20:8: items: expected a list, got a mapping",
    ]


def test_found_image_location() -> None:
    found = FoundImage(
        image="nginx:1.25",
        file="k8s/web.yaml",
        line=12,
        column=14,
        kind="Deployment",
        name="web",
        namespace=None,
        container="nginx",
        field="container",
    )
    assert found.location == "k8s/web.yaml:12"
