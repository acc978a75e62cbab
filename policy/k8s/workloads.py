"""Where images stand in Kubernetes workload objects (pure: a parsed JSON/YAML mapping in).

`extract(obj)` is the one walker. It returns an `Extraction`: the image sites it found and
the structural problems it met on the way (a container that is not a mapping, an image that
is not a non-empty string, a workload without its pod spec). It never raises on a malformed
object: callers decide whether a problem is a bad request (the webhook), a bad input file
(the CLI) or a denial. `image_sites(obj)` is the shortcut for callers that only want sites.

Objects are recognized by `kind` alone (not `apiVersion`), so the extraction also works on
objects whose `apiVersion` is missing or old (`extensions/v1beta1`). Unknown kinds have no
sites and no problems.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, TypeGuard

FieldPath = tuple[str | int, ...]
"""Keys (mapping) and indexes (list) from an object's root down to one value."""

MAPPING = (dict, Mapping)
"""`isinstance` classes of a JSON or YAML object: `dict` first (an exact type check) saves the
slower ABC check for the documents that are all dicts."""

SiteField = Literal["container", "initContainer", "ephemeralContainer", "volume"]

_POD_SPEC_PATHS: Mapping[str, tuple[str, ...]] = {
    "Pod": ("spec",),
    "Deployment": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "ReplicationController": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
    "PodTemplate": ("template", "spec"),
}

WORKLOAD_KINDS: frozenset[str] = frozenset(_POD_SPEC_PATHS)
"""The kinds that carry a pod spec, hence images."""

_CONTAINER_LISTS: tuple[tuple[str, SiteField], ...] = (
    ("containers", "container"),
    ("initContainers", "initContainer"),
    ("ephemeralContainers", "ephemeralContainer"),
)


class _Absent:
    """Marks a key that is not there at all (as opposed to an explicit null)."""


_ABSENT = _Absent()


def pod_spec_path(kind: str) -> tuple[str, ...] | None:
    """The path from an object of `kind` to its pod spec, or None if the kind has none."""
    return _POD_SPEC_PATHS.get(kind)


def dotted(path: FieldPath) -> str:
    """Render a path for people: ("spec", "containers", 1, "image") → `spec.containers[1].image`."""
    out = ""
    for step in path:
        if isinstance(step, int):
            out += f"[{step}]"
        else:
            out += f".{step}" if out else step
    return out


def json_pointer(path: FieldPath) -> str:
    """Render a path as an RFC 6901 JSON Pointer (`~` → `~0`, `/` → `~1`): `/spec/containers/1`."""
    return "".join("/" + str(step).replace("~", "~0").replace("/", "~1") for step in path)


# ImageSite and Extraction are named tuples, not frozen dataclasses: the webhook makes them for
# every review, and a frozen dataclass sets each field through `object.__setattr__`.
class ImageSite(NamedTuple):
    """One image string in an object: what is written, where, and in which kind of field."""

    image: str
    path: FieldPath
    field: SiteField
    name: str

    @property
    def pointer(self) -> str:
        """The RFC 6901 JSON Pointer to the image string, ready for a JSONPatch `path`."""
        return json_pointer(self.path)


@dataclass(frozen=True)
class Problem:
    """A structural problem met while looking for images: where, and what was wrong."""

    path: FieldPath
    message: str

    def __str__(self) -> str:
        where = dotted(self.path)
        return f"{where}: {self.message}" if where else self.message


class Extraction(NamedTuple):
    """The image sites of an object, and the problems that may have hidden others.

    A non-empty `problems` means the object may hold images that were not found (a container
    without a string `image`, a pod spec that is not a mapping): callers must not treat the
    sites as complete, and should reject or report the object instead.
    """

    sites: tuple[ImageSite, ...] = ()
    problems: tuple[Problem, ...] = ()


def extract(obj: Mapping[str, object], *, kind: str | None = None) -> Extraction:
    """Find every image site of a workload object; unknown or missing kinds give nothing.

    `kind` overrides `obj["kind"]`, for objects that carry none (the items of a typed list
    such as a `DeploymentList` returned by the API).
    """
    if kind is None:
        declared = obj.get("kind")
        if not isinstance(declared, str):
            return Extraction()
        kind = declared
    spec_path = pod_spec_path(kind)
    if spec_path is None:
        return Extraction()
    current: Mapping[Any, object] = obj
    for depth, key in enumerate(spec_path):
        child = current.get(key, _ABSENT)
        if not isinstance(child, MAPPING):
            return Extraction(problems=(_expected(spec_path[: depth + 1], "a mapping", child),))
        current = child
    return extract_pod_spec(current, spec_path)


def image_sites(obj: Mapping[str, object]) -> list[ImageSite]:
    """The image sites of a workload object, in spec order; see `extract` for the problems."""
    return list(extract(obj).sites)


def extract_pod_spec(spec: object, prefix: FieldPath = ()) -> Extraction:
    """Find the image sites of a bare pod spec standing at `prefix` inside its object.

    Sites come in this order: containers, initContainers, ephemeralContainers, then image
    volumes, each list in its own order. Absent or null lists are empty, not problems.
    """
    if not isinstance(spec, MAPPING):
        return Extraction(problems=(_expected(prefix, "a mapping", spec),))
    sites: list[ImageSite] = []
    problems: list[Problem] = []
    # The container lists inline (every review walks them): no generator, no call per entry.
    for key, field in _CONTAINER_LISTS:
        items = spec.get(key)
        if items is None:
            continue
        path = (*prefix, key)
        if not isinstance(items, list):
            problems.append(_expected(path, "a list", items))
            continue
        for index, container in enumerate(items):
            if not isinstance(container, MAPPING):
                problems.append(_expected((*path, index), "a mapping", container))
                continue
            image = container.get("image", _ABSENT)
            if isinstance(image, str) and image:
                name = container.get("name")
                site_name = name if isinstance(name, str) else ""
                sites.append(ImageSite(image, (*path, index, "image"), field, site_name))
            else:
                problems.append(_expected_image((*path, index, "image"), image))
    if spec.get("volumes") is None:
        return Extraction(tuple(sites), tuple(problems))
    for path, volume in _entries(spec, "volumes", prefix, problems):
        source = volume.get("image", _ABSENT)
        if source is _ABSENT or source is None:
            continue  # not an image volume
        if not isinstance(source, MAPPING):
            problems.append(_expected((*path, "image"), "a mapping", source))
            continue
        ref_path = (*path, "image", "reference")
        reference = source.get("reference", _ABSENT)
        if _is_image(reference):
            sites.append(ImageSite(reference, ref_path, "volume", _name(volume)))
        else:
            problems.append(_expected_image(ref_path, reference))
    return Extraction(tuple(sites), tuple(problems))


def pod_spec_sites(spec: object, prefix: FieldPath = ()) -> list[ImageSite]:
    """The image sites of a bare pod spec (e.g. a Pod's `spec` for `pods/ephemeralcontainers`)."""
    return list(extract_pod_spec(spec, prefix).sites)


def _entries(
    spec: Mapping[object, object], key: str, prefix: FieldPath, problems: list[Problem]
) -> Iterator[tuple[FieldPath, Mapping[object, object]]]:
    """The mapping entries of list `spec[key]` with their paths; the others become problems."""
    items = spec.get(key)
    if items is None:
        return
    path = (*prefix, key)
    if not isinstance(items, list):
        problems.append(_expected(path, "a list", items))
        return
    for index, item in enumerate(items):
        if isinstance(item, MAPPING):
            yield (*path, index), item
        else:
            problems.append(_expected((*path, index), "a mapping", item))


def _is_image(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and value != ""


def _name(entry: Mapping[object, object]) -> str:
    name = entry.get("name")
    return name if isinstance(name, str) else ""


def _expected_image(path: FieldPath, value: object) -> Problem:
    if value == "":
        return Problem(path, "expected a non-empty string, got an empty string")
    return _expected(path, "a string", value)


def _expected(path: FieldPath, what: str, value: object) -> Problem:
    return Problem(path, f"expected {what}, got {describe(value)}")


def describe(value: object) -> str:
    """Say what a JSON/YAML value is, briefly: `42`, `"nginx"`, `null`, `a list`, `nothing`."""
    if value is _ABSENT:
        return "nothing"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        text = json.dumps(value)
        return text if len(text) <= 60 else text[:56] + '..."'
    if isinstance(value, list):
        return "a list"
    if isinstance(value, MAPPING):
        return "a mapping"
    return f"a {type(value).__name__}"
