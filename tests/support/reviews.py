"""AdmissionReview documents the webhook tests and benchmarks post."""

from __future__ import annotations

from typing import Any


def pod_review(
    *images: str,
    uid: str = "uid-fault",
    namespace: str = "dev",
    user: str = "system:serviceaccount:ci:deployer",
) -> dict[str, Any]:
    """An `admission.k8s.io/v1` CREATE of a Pod with one container per image."""
    containers = [{"name": f"c{i}", "image": image} for i, image in enumerate(images)]
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
            "object": {"kind": "Pod", "spec": {"containers": containers}},
        },
    }
