"""AdmissionReview documents the webhook tests and benchmarks post."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def pod_review(
    *images: str,
    uid: str = "uid-fault",
    namespace: str = "dev",
    user: str = "system:serviceaccount:ci:deployer",
    pod_name: str | None = None,
    names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """An `admission.k8s.io/v1` CREATE of a Pod with one container per image, named c0, c1, …
    (or `names`); the Pod has no metadata unless `pod_name` is given."""
    containers = [
        {"name": name, "image": image}
        for name, image in zip(names or [f"c{i}" for i in range(len(images))], images, strict=True)
    ]
    pod: dict[str, Any] = {"kind": "Pod", "spec": {"containers": containers}}
    if pod_name is not None:
        pod = {"kind": "Pod", "metadata": {"name": pod_name}, "spec": pod["spec"]}
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": user},
            "object": pod,
        },
    }


def workload(kind: str, *images: str) -> dict[str, Any]:
    """A bare object of `kind` (no apiVersion, no metadata) whose pod spec runs `images`, one
    container each: a Pod, a CronJob, a PodTemplate, or any kind with `spec.template`."""
    spec = {"containers": [{"name": f"c{i}", "image": image} for i, image in enumerate(images)]}
    if kind == "Pod":
        return {"kind": kind, "spec": spec}
    if kind == "CronJob":
        return {"kind": kind, "spec": {"jobTemplate": {"spec": {"template": {"spec": spec}}}}}
    if kind == "PodTemplate":
        return {"kind": kind, "template": {"spec": spec}}
    return {"kind": kind, "spec": {"template": {"spec": spec}}}


def admission_review(
    obj: dict[str, Any],
    *,
    kind: str,
    group: str = "",
    operation: str = "CREATE",
    namespace: str = "shop",
    old: dict[str, Any] | None = None,
    uid: str = "bench-uid",
) -> dict[str, Any]:
    """An AdmissionReview v1 request for `obj` of `kind`, as the API server sends it."""
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": group, "version": "v1", "kind": kind},
            "resource": {"group": group, "version": "v1", "resource": kind.lower() + "s"},
            "name": "web",
            "namespace": namespace,
            "operation": operation,
            "userInfo": {"username": "system:serviceaccount:ci:deployer", "groups": []},
            "object": obj,
            "oldObject": old,
            "dryRun": False,
        },
    }


def pod_spec(*refs: str, init: Sequence[str] = ()) -> dict[str, Any]:
    """A pod spec running `refs` (and `init` as init containers)."""
    spec: dict[str, Any] = {
        "containers": [
            {"name": f"c{i}", "image": ref, "ports": [{"containerPort": 8080 + i}]}
            for i, ref in enumerate(refs)
        ]
    }
    if init:
        spec["initContainers"] = [{"name": f"init{i}", "image": r} for i, r in enumerate(init)]
    return spec


def deployment(*refs: str) -> dict[str, Any]:
    """An apps/v1 Deployment of 3 replicas running `refs`."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"}},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": pod_spec(*refs)},
        },
    }


def deployment_review(refs: Sequence[str]) -> dict[str, Any]:
    """The benchmark's review: CREATE of a Deployment with one container per ref."""
    return admission_review(deployment(*refs), kind="Deployment", group="apps")
