"""Property tests: the rule loader, the settings loader and the Kubernetes scanner are total.

On any text (valid YAML or not), on any YAML-serialised structure, and on mutations of the
shipped `rules/default.yaml`, each raises only its documented error — `RuleErrors`,
`SettingsErrors`, `InputError` — never a stray `KeyError`, `TypeError` or PyYAML exception.
(The reference parser's properties are in test_reference_properties.py.)
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from policy.errors import InputError, RuleErrors, SettingsErrors
from policy.loader import load_rules_text
from policy.rules import RuleSet
from policy.scanners import kubernetes
from policy.settings import Settings, parse_settings

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_RULES = (ROOT / "rules" / "default.yaml").read_text(encoding="utf-8")
DEFAULT_DOCUMENT: dict[str, Any] = yaml.safe_load(DEFAULT_RULES)

BOUNDED = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Keys the loaders and the scanner give meaning to, so generated structures reach deep code.
KEYS = [
    # rule files
    "apiVersion",
    "kind",
    "metadata",
    "name",
    "defaults",
    "action",
    "platforms",
    "onResolveError",
    "unmatched",
    "rules",
    "id",
    "description",
    "match",
    "images",
    "excludeImages",
    "namespaces",
    "require",
    "message",
    "exceptions",
    "reason",
    "expires",
    "tier",
    "digest",
    "denyTags",
    "maxLayers",
    "maxSize",
    "maxAge",
    "nonRootUser",
    "labels",
    "registries",
    # settings files
    "auth",
    "username",
    "password",
    "passwordFile",
    "mirrors",
    "ca",
    "insecure",
    "tokenRealms",
    "dockerConfig",
    "pullSecrets",
    "dockerHub",
    "api",
    "tierTTL",
    "tiers",
    "official",
    "cache",
    "tagTTL",
    "maxBytes",
    "timeouts",
    "request",
    "decision",
    "excludeNamespaces",
    "recheckUnchanged",
    "breakGlass",
    "mutate",
    "pin",
    # Kubernetes objects
    "spec",
    "template",
    "containers",
    "initContainers",
    "ephemeralContainers",
    "image",
    "items",
    "jobTemplate",
    "namespace",
]
KINDS = [
    "RuleSet",
    "Pod",
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "Job",
    "CronJob",
    "List",
    "PodList",
    "DeploymentList",
]
STRINGS = [
    "image-policy/v1",
    "v1",
    "apps/v1",
    "batch/v1",
    "deny",
    "warn",
    "audit",
    "allow",
    "**",
    "docker.io/**",
    "nginx:1.25",
    "registry.example:5000/app@sha256:" + "a" * 64,
    "linux/amd64",
    "30",
    "10MiB",
    "365d",
    "5m",
    "2027-03-31",
    "https://mirror.example",
    "http://127.0.0.1:5000",
    "registry.example",
    "<<",
    "",
]

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from(STRINGS + KINDS)
    | st.text(max_size=20)
    | st.dates()
    | st.datetimes()
)
keys = st.sampled_from(KEYS) | st.text(max_size=12) | st.integers(-5, 5) | st.none() | st.booleans()
structures = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=6),
    max_leaves=30,
)

# Characters that make YAML interesting: indicators, quotes, tabs, anchors, tags, directives.
YAML_ALPHABET = "ab:- \n\t[]{},#&*!|>'\"%@`?=~0129.\\<"
yaml_text = st.text(YAML_ALPHABET, max_size=120) | st.text(max_size=80)


def dump(value: object) -> str:
    """YAML text for a generated structure (dates and odd keys included)."""
    return yaml.safe_dump(value, default_flow_style=None, allow_unicode=True)


def load_rules(text: str) -> RuleSet | None:
    """load_rules_text, where RuleErrors (with at least one located error) is the one failure."""
    try:
        return load_rules_text(text, "prop.yaml")
    except RuleErrors as errors:
        assert errors.errors, "RuleErrors raised with no errors in it"
        return None


def load_settings(text: str, base: Path) -> Settings | None:
    """parse_settings, where SettingsErrors (with at least one error) is the one failure."""
    try:
        return parse_settings(text, "settings.yaml", base=base, env={})
    except SettingsErrors as errors:
        assert errors.errors, "SettingsErrors raised with no errors in it"
        return None


def scan(text: str) -> None:
    """kubernetes.scan, where InputError is the one failure; images found are located."""
    try:
        found = kubernetes.scan(text, "manifest.yaml")
    except InputError as error:
        assert str(error)
        return
    for image in found:
        assert image.file == "manifest.yaml"
        assert image.line >= 1 and image.column >= 1


# --- the rule loader ---------------------------------------------------------------------------


def test_the_shipped_rules_load() -> None:
    """The baseline the mutations start from is itself valid."""
    ruleset = load_rules(DEFAULT_RULES)
    assert ruleset is not None
    assert len(ruleset.rules) == len(DEFAULT_DOCUMENT["rules"])


# Keys PyYAML's constructor cannot build (the YAML 1.1 value tag, an impossible date) once
# escaped the loaders as ConstructorError / ValueError.
CONSTRUCTOR_KEYS = ("=: 1\n", "2027-02-30: x\n", "rules:\n  - =: 1\n")


@BOUNDED
@given(yaml_text)
@example(CONSTRUCTOR_KEYS[0])
@example(CONSTRUCTOR_KEYS[1])
@example(CONSTRUCTOR_KEYS[2])
def test_rule_loader_on_arbitrary_text(text: str) -> None:
    load_rules(text)


@BOUNDED
@given(structures)
def test_rule_loader_on_arbitrary_structures(value: object) -> None:
    load_rules(dump(value))


@BOUNDED
@given(structures)
def test_rule_loader_on_rule_shaped_structures(rules: object) -> None:
    """A valid header with arbitrary `rules`, so the per-rule validation is exercised."""
    document = {"apiVersion": "image-policy/v1", "kind": "RuleSet", "rules": rules}
    load_rules(dump(document))


def mutate(draw: st.DrawFn, document: Any, changes: int) -> Any:
    """`document` with up to `changes` values deleted or replaced, at any depth."""
    for _ in range(changes):
        path: list[Any] = []
        node: Any = document
        # Walk down a random path, stopping at a random depth.
        while isinstance(node, dict | list) and node and draw(st.booleans()):
            choices = sorted(node, key=str) if isinstance(node, dict) else range(len(node))
            key = draw(st.sampled_from(choices))
            path.append(key)
            node = node[key]
        if not path:
            continue
        parent: Any = document
        for key in path[:-1]:
            parent = parent[key]
        if draw(st.booleans()):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(structures)
    return document


@st.composite
def mutated_default(draw: st.DrawFn) -> dict[str, Any]:
    """rules/default.yaml with a few keys deleted or replaced, at any depth."""
    result: dict[str, Any] = mutate(draw, copy.deepcopy(DEFAULT_DOCUMENT), draw(st.integers(1, 4)))
    return result


@BOUNDED
@given(mutated_default())
def test_rule_loader_on_mutated_default_rules(document: dict[str, Any]) -> None:
    load_rules(dump(document))


@BOUNDED
@given(st.data())
def test_rule_loader_on_default_rules_text_with_a_line_changed(data: st.DataObject) -> None:
    """The shipped file's text with one line deleted, duplicated or replaced by noise."""
    lines = DEFAULT_RULES.splitlines()
    index = data.draw(st.integers(0, len(lines) - 1))
    change = data.draw(st.sampled_from(["delete", "duplicate", "replace"]))
    if change == "delete":
        del lines[index]
    elif change == "duplicate":
        lines.insert(index, lines[index])
    else:
        lines[index] = data.draw(yaml_text).replace("\n", " ")
    load_rules("\n".join(lines) + "\n")


# --- the settings loader -----------------------------------------------------------------------


@BOUNDED
@given(yaml_text)
@example(CONSTRUCTOR_KEYS[0])
@example(CONSTRUCTOR_KEYS[1])
@example("registries:\n  =: {}\n")
def test_settings_loader_on_arbitrary_text(
    tmp_path_factory: pytest.TempPathFactory, text: str
) -> None:
    load_settings(text, tmp_path_factory.getbasetemp())


@BOUNDED
@given(structures)
def test_settings_loader_on_arbitrary_structures(
    tmp_path_factory: pytest.TempPathFactory, value: object
) -> None:
    load_settings(dump(value), tmp_path_factory.getbasetemp())


registry_settings = st.dictionaries(
    st.sampled_from(["registry.example", "127.0.0.1:5000", "docker.io", "bad host", "*"]),
    structures,
    max_size=3,
)


@BOUNDED
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "registries": registry_settings,
            "cache": structures,
            "timeouts": structures,
            "dockerHub": structures,
            "tiers": structures,
            "mutate": structures,
            "excludeNamespaces": structures,
            "pullSecrets": structures,
        },
    )
)
def test_settings_loader_on_settings_shaped_structures(
    tmp_path_factory: pytest.TempPathFactory, document: dict[str, Any]
) -> None:
    load_settings(dump(document), tmp_path_factory.getbasetemp())


# --- the Kubernetes scanner --------------------------------------------------------------------


@BOUNDED
@given(yaml_text)
@example(CONSTRUCTOR_KEYS[0])
@example(CONSTRUCTOR_KEYS[1])
def test_kubernetes_scanner_on_arbitrary_text(text: str) -> None:
    scan(text)


@st.composite
def workload_shaped(draw: st.DrawFn) -> object:
    """A well-formed workload of a random kind, then (usually) damaged in a few places."""
    kind = draw(st.sampled_from(KINDS[1:]))
    container = st.fixed_dictionaries(
        {"name": st.text(max_size=8), "image": st.sampled_from(STRINGS) | scalars}
    )
    pod_spec = {"containers": draw(st.lists(container, max_size=3))}
    if draw(st.booleans()):
        pod_spec["initContainers"] = draw(st.lists(container, max_size=2))
    obj: dict[str, Any] = {"apiVersion": "v1", "kind": kind, "metadata": {"name": "x"}}
    if kind == "Pod":
        obj["spec"] = pod_spec
    elif kind == "CronJob":
        obj["spec"] = {"jobTemplate": {"spec": {"template": {"spec": pod_spec}}}}
    elif kind.endswith("List"):
        obj["items"] = [{"kind": "Pod", "spec": pod_spec}, {"spec": {"template": {"spec": {}}}}]
    else:
        obj["spec"] = {"template": {"spec": pod_spec}}
    return mutate(draw, obj, draw(st.integers(0, 3)))


@BOUNDED
@given(st.lists(workload_shaped() | structures, min_size=1, max_size=3))
def test_kubernetes_scanner_on_arbitrary_documents(documents: list[object]) -> None:
    scan(yaml.safe_dump_all(documents, allow_unicode=True))
