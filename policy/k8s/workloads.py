"""Where images stand in Kubernetes workload objects (pure: a parsed JSON/YAML mapping in).

`extract(obj)` is the one walker. It returns an `Extraction`: the image sites it found and
the structural problems it met on the way (a container that is not a mapping, an image that
is not a non-empty string, a workload without its pod spec). It never raises on a malformed
object: callers decide whether a problem is a bad request (the webhook), a bad input file
(the CLI) or a denial. `image_sites(obj)` is the shortcut for callers that only want sites.

The built-in workload kinds are recognized by `kind` alone (not `apiVersion`), so the
extraction also works on objects whose `apiVersion` is missing or old (`extensions/v1beta1`).
Any other kind (a custom resource: Argo `Rollout`, Knative `Service`, OpenKruise `CloneSet`…)
is searched two ways, and `Extraction.how` says which found what:

- by shape: every pod template under `spec` — a mapping at a `template.spec` path (so
  `jobTemplate.spec.template.spec` too) with a `containers` key — is read as a pod spec;
- by table: a `Table` maps (API group, kind) to paths of pod specs and of image strings, for
  kinds whose images stand elsewhere (Tekton `steps`, Argo Workflow `templates`).
  `BUILTIN_TABLE` holds the common ones; the settings' `workloads:` adds to it.

The shape search is bounded (`SEARCH_DEPTH` levels below `spec`, `SEARCH_NODES` values); an
object larger than that is a problem, so the caller fails closed instead of missing images.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, TypeGuard

FieldPath = tuple[str | int, ...]
"""Keys (mapping) and indexes (list) from an object's root down to one value."""

MAPPING = (dict, Mapping)
"""`isinstance` classes of a JSON or YAML object: `dict` first (an exact type check) saves the
slower ABC check for the documents that are all dicts."""

_CONTAINERS = (dict, Mapping, list)

SiteField = Literal["container", "initContainer", "ephemeralContainer", "volume"]

PathPattern = tuple[str | None, ...]
"""Mapping keys from an object's root; None stands for every item of a list (`[*]`)."""


@dataclass(frozen=True)
class KindImages:
    """Where a custom kind holds images: paths to pod specs, and paths to image strings."""

    pod_specs: tuple[PathPattern, ...] = ()
    images: tuple[PathPattern, ...] = ()
    source: str = "built-in table"


Table = Mapping[tuple[str, str], KindImages]
"""(API group, kind) → where its images stand. The core group is ""."""

SEARCH_DEPTH = 24
SEARCH_NODES = 50_000


_PATH = re.compile(r"[A-Za-z0-9_$-]+(?:\[\*\])*(?:\.[A-Za-z0-9_$-]+(?:\[\*\])*)*")
_PATH_TOKEN = re.compile(r"([A-Za-z0-9_$-]+)|\[\*\]")


def parse_path(text: str) -> PathPattern:
    """`spec.steps[*].image` → ("spec", "steps", None, "image"); ValueError when malformed."""
    if not _PATH.fullmatch(text):
        raise ValueError(f"expected a path like spec.steps[*].image, got {text!r}")
    return tuple(m[1] or None for m in _PATH_TOKEN.finditer(text))


def _paths(*texts: str) -> tuple[PathPattern, ...]:
    return tuple(parse_path(t) for t in texts)


_TEKTON_STEPS = ("steps[*].image", "sidecars[*].image", "stepTemplate.image")
_ARGO_TEMPLATES = (
    "container.image",
    "script.image",
    "initContainers[*].image",
    "sidecars[*].image",
    "containerSet.containers[*].image",
)


def _under(prefix: str, paths: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(f"{prefix}.{p}" for p in paths)


BUILTIN_TABLE: Table = {
    **{
        ("tekton.dev", kind): KindImages(images=_paths(*_under("spec", _TEKTON_STEPS)))
        for kind in ("Task", "ClusterTask")
    },
    ("tekton.dev", "TaskRun"): KindImages(images=_paths(*_under("spec.taskSpec", _TEKTON_STEPS))),
    ("tekton.dev", "Pipeline"): KindImages(
        images=_paths(
            *_under("spec.tasks[*].taskSpec", _TEKTON_STEPS),
            *_under("spec.finally[*].taskSpec", _TEKTON_STEPS),
        )
    ),
    ("tekton.dev", "PipelineRun"): KindImages(
        images=_paths(
            *_under("spec.pipelineSpec.tasks[*].taskSpec", _TEKTON_STEPS),
            *_under("spec.pipelineSpec.finally[*].taskSpec", _TEKTON_STEPS),
        )
    ),
    **{
        ("argoproj.io", kind): KindImages(
            images=_paths(*_under("spec.templates[*]", _ARGO_TEMPLATES))
        )
        for kind in ("Workflow", "WorkflowTemplate", "ClusterWorkflowTemplate")
    },
    ("argoproj.io", "CronWorkflow"): KindImages(
        images=_paths(*_under("spec.workflowSpec.templates[*]", _ARGO_TEMPLATES))
    ),
}
"""Custom kinds whose images do not stand in a pod template."""

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
# every review, and a frozen dataclass sets each field through `object.__setattr__` (1b: ~2.8% and
# ~0.5% of a warm review; the per-review named tuples together ~9%, BENCHMARKS.md).
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
    how: str = ""
    """How the kind was recognised (`--explain`): "built-in", "pod template at …", a table."""


def extract(
    obj: Mapping[str, object], *, kind: str | None = None, table: Table | None = None
) -> Extraction:
    """Find every image site of an object: a built-in workload kind by its pod spec path,
    any other kind as `extract_custom` says; a missing kind gives nothing.

    `kind` overrides `obj["kind"]`, for objects that carry none (the items of a typed list
    such as a `DeploymentList` returned by the API). `table` defaults to BUILTIN_TABLE.
    """
    if kind is None:
        declared = obj.get("kind")
        if not isinstance(declared, str):
            return Extraction()
        kind = declared
    spec_path = pod_spec_path(kind)
    if spec_path is None:
        return extract_custom(obj, group_of(obj), kind, table)
    current: Mapping[Any, object] = obj
    for depth, key in enumerate(spec_path):
        child = current.get(key, _ABSENT)
        if not isinstance(child, MAPPING):
            return Extraction(problems=(_expected(spec_path[: depth + 1], "a mapping", child),))
        current = child
    return extract_pod_spec(current, spec_path)


def group_of(obj: Mapping[str, object]) -> str:
    """The API group of an object's `apiVersion` ("" for the core group or none)."""
    api_version = obj.get("apiVersion")
    if not isinstance(api_version, str) or "/" not in api_version:
        return ""
    return api_version.rsplit("/", 1)[0]


def is_builtin_group(group: str) -> bool:
    """Whether `group` is one of Kubernetes' own (core, `apps`, `batch`, `*.k8s.io`…), whose
    kinds holding pod templates are all in the built-in table."""
    return "." not in group or group.endswith(".k8s.io")


def extract_custom(
    obj: Mapping[str, object], group: str, kind: str, table: Table | None = None
) -> Extraction:
    """The image sites of an object of a kind that is not a built-in workload: the paths
    `table` gives for (group, kind), then every pod template found by shape (not for
    Kubernetes' own groups), each site once."""
    entry = (BUILTIN_TABLE if table is None else table).get((group, kind))
    sites: dict[FieldPath, ImageSite] = {}
    problems: list[Problem] = []
    how: list[str] = []
    if entry is not None:
        for pattern in entry.pod_specs:
            for path, value in _follow(obj, pattern, problems):
                found = extract_pod_spec(value, path)
                sites.update((site.path, site) for site in found.sites)
                problems.extend(found.problems)
        for pattern in entry.images:
            for path, value in _follow(obj, pattern, problems):
                if _is_image(value):
                    holder = _at(obj, path[:-1])
                    name = _name(holder) if isinstance(holder, MAPPING) else ""
                    sites[path] = ImageSite(value, path, "container", name)
                else:
                    problems.append(_expected_image(path, value))
        how.append(f"image paths from the {entry.source}")
    if not is_builtin_group(group):
        templates = _pod_templates(obj, problems)
        for path in templates:
            found = extract_pod_spec(_at(obj, path), path)
            sites.update((site.path, site) for site in found.sites if site.path not in sites)
            problems.extend(found.problems)
        if templates:
            how.append("pod template at " + ", ".join(dotted(p) for p in templates[:3]))
            if len(templates) > 3:
                how[-1] += f" and {len(templates) - 3} more"
    return Extraction(tuple(sites.values()), tuple(problems), "; ".join(how))


def _at(obj: object, path: FieldPath) -> object:
    for step in path:
        obj = obj[step]  # type: ignore[index]
    return obj


def _follow(
    obj: Mapping[str, object], pattern: PathPattern, problems: list[Problem]
) -> Iterator[tuple[FieldPath, object]]:
    """The values at `pattern` (absent or null steps end quietly; a value of the wrong type
    along the way is a problem: it could hide an image)."""
    frontier: list[tuple[FieldPath, object]] = [((), obj)]
    for step in pattern:
        following: list[tuple[FieldPath, object]] = []
        for path, value in frontier:
            if step is None:
                if isinstance(value, list):
                    following.extend(((*path, i), item) for i, item in enumerate(value))
                else:
                    problems.append(_expected(path, "a list", value))
            elif isinstance(value, MAPPING):
                child = value.get(step)
                if child is not None:
                    following.append(((*path, step), child))
            else:
                problems.append(_expected(path, "a mapping", value))
        frontier = following
    yield from frontier


def _pod_templates(obj: Mapping[str, object], problems: list[Problem]) -> list[FieldPath]:
    """Paths of the pod specs under `spec` by shape: a mapping at `….template.spec` with a
    `containers` key. Bounded: SEARCH_DEPTH levels (deeper is not searched) and SEARCH_NODES
    values (more is a problem, so the object is not taken as searched)."""
    spec = obj.get("spec")
    if not isinstance(spec, _CONTAINERS):
        return []
    found: list[FieldPath] = []
    stack: list[tuple[FieldPath, object]] = [(("spec",), spec)]
    visited = 0
    while stack:
        path, value = stack.pop()
        visited += 1
        if visited > SEARCH_NODES:
            problems.append(
                Problem((), f"too large to search for pod templates (over {SEARCH_NODES:,} values)")
            )
            return found
        if len(path) > SEARCH_DEPTH:
            continue
        if isinstance(value, MAPPING):
            if (
                len(path) >= 2
                and path[-1] == "spec"
                and path[-2] == "template"
                and "containers" in value
            ):
                found.append(path)
                continue
            stack.extend(
                ((*path, key), child)
                for key, child in reversed(list(value.items()))
                if isinstance(child, _CONTAINERS) and isinstance(key, str)
            )
        elif isinstance(value, list):
            stack.extend(
                ((*path, i), child)
                for i, child in reversed(list(enumerate(value)))
                if isinstance(child, _CONTAINERS)
            )
    return found


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
