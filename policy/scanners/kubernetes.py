"""Find every image in Kubernetes YAML (or JSON) manifests, each located at its scalar.

The text is composed with PyYAML (the C composer when available) and the nodes are turned
into Python values here rather than by PyYAML's constructor, for two reasons: each value
keeps a link to the node it came from (so an image found by `policy.k8s.workloads` is
reported at its line and column), and odd scalars that PyYAML's constructor chokes on
(`date: 2020-13-45`, the YAML 1.1 `=` value) stay plain strings, as they do for kubectl.

Scalars resolve as YAML 1.1 (what kubectl's YAML reader speaks): null, bool, int and float
become Python values; every other scalar, timestamps and unknown tags included, stays the
string written. Merge keys (`<<`) are honoured; a duplicate key keeps its last value.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from policy.errors import InputError, Location
from policy.k8s import workloads
from policy.k8s.workloads import FieldPath, Problem
from policy.scanners import FoundImage

_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_TAG = "tag:yaml.org,2002:"
_STR, _NULL, _BOOL, _INT, _FLOAT, _MERGE = (
    _TAG + name for name in ("str", "null", "bool", "int", "float", "merge")
)

# Fallback for `looks_like_kubernetes` on text that is not valid YAML.
_DOCUMENT_SEPARATOR = re.compile(r"^---", re.MULTILINE)
_TOP_LEVEL_KEY = re.compile(r"""^["']?(apiVersion|kind)["']?[ \t]*:""", re.MULTILINE)


def scan(
    text: str,
    filename: str,
    *,
    table: workloads.Table | None = None,
    explain: list[str] | None = None,
) -> list[FoundImage]:
    """Every image in the Kubernetes objects of `text`, ordered by line and column.

    Handles multi-document files, empty documents, `kind: List` and any `<Kind>List` with
    `items` (nested too; items of a typed list without a `kind` take the list's item kind),
    and every kind in `workloads.WORKLOAD_KINDS`. Documents without a string `kind` are not
    Kubernetes objects and are skipped. Custom kinds are searched as `workloads.extract_custom`
    says, with `table` (default: the built-in table); `explain`, when given, gets one line per
    kind met saying how its images were found. Raises InputError, located as `file:line:col: …`, for
    invalid YAML, a document that is not a mapping, and for structural problems that could
    hide an image (a container whose `image` is not a non-empty string, a Deployment without
    `spec.template.spec`, …), all of a file's problems in one error, one per line.
    """
    found: list[FoundImage] = []
    problems: list[str] = []
    for root in _compose(text, filename):
        document = _Document(filename, root)
        value = document.value
        if value is None:
            continue
        if not isinstance(value, Mapping):
            raise InputError(
                f"{document.locate(())}: expected a Kubernetes object (a mapping), "
                f"got {workloads.describe(value)}"
            )
        for prefix, obj, kind in _objects(value, (), None, set(), problems, document):
            extraction = workloads.extract(obj, kind=kind, table=table)
            if explain is not None:
                _explain(explain, filename, kind, obj, extraction)
            for problem in extraction.problems:
                path = (*prefix, *problem.path)
                problems.append(f"{document.locate(path)}: {Problem(path, problem.message)}")
            name, namespace = _metadata(obj)
            for site in extraction.sites:
                where = document.locate((*prefix, *site.path))
                found.append(
                    FoundImage(
                        image=site.image,
                        file=filename,
                        line=where.line,
                        column=where.column,
                        kind=kind,
                        name=name,
                        namespace=namespace,
                        container=site.name,
                        field=site.field,
                    )
                )
    if problems:
        raise InputError("\n".join(problems))
    found.sort(key=lambda image: (image.line, image.column))
    return found


def _explain(
    explain: list[str],
    filename: str,
    kind: str,
    obj: Mapping[str, object],
    extraction: workloads.Extraction,
) -> None:
    """Say once per file how the images of `kind` (and its API group) were found."""
    group = workloads.group_of(obj)
    shown = f"{kind} ({group})" if group else kind
    line = f"{filename}: {shown}: {_how(kind, obj, extraction)}"
    if line not in explain:
        explain.append(line)


def looks_like_kubernetes(text: str) -> bool:
    """True if some document has both `apiVersion` and `kind` as top-level keys.

    Text that is not valid YAML is judged by its unindented lines, so that a broken
    manifest is still sent to this scanner, which then reports where it is broken.
    """
    try:
        for root in yaml.compose_all(text, Loader=_LOADER):
            if is_object_root(root):
                return True
    except (yaml.YAMLError, RecursionError):
        return any(
            {"apiVersion", "kind"} <= set(_TOP_LEVEL_KEY.findall(chunk))
            for chunk in _DOCUMENT_SEPARATOR.split(text)
        )
    return False


def is_object_root(root: Node | None) -> bool:
    """Whether a composed YAML document is a mapping with `apiVersion` and `kind` keys."""
    if not isinstance(root, MappingNode):
        return False
    keys = {key.value for key, _ in root.value if isinstance(key, ScalarNode)}
    return {"apiVersion", "kind"} <= keys


def _compose(text: str, filename: str) -> Iterator[Node]:
    """The root node of each document; YAML errors become located InputErrors."""
    try:
        yield from yaml.compose_all(text, Loader=_LOADER)
    except yaml.MarkedYAMLError as error:
        raise InputError(_yaml_message(error, filename)) from error
    except yaml.reader.ReaderError as error:
        where = _location_of_byte(text, error.position, filename)
        raise InputError(f"{where}: {error.reason}") from error
    except yaml.YAMLError as error:
        raise InputError(f"{filename}: {error}") from error


def _yaml_message(error: yaml.MarkedYAMLError, filename: str) -> str:
    mark = error.problem_mark or error.context_mark
    where = str(_location(filename, mark)) if mark is not None else filename
    message = error.problem or error.context or "invalid YAML"
    if error.problem and error.context:
        context_mark = error.context_mark
        started = (
            f" at {context_mark.line + 1}:{context_mark.column + 1}"
            if context_mark is not None and context_mark is not mark
            else ""
        )
        message = f"{error.problem} ({error.context}{started})"
    return f"{where}: {message}"


def _location_of_byte(text: str, position: int, filename: str) -> Location:
    """Locate a reader error: the C reader counts UTF-8 bytes, the Python reader characters."""
    if _LOADER is yaml.SafeLoader:
        before = text[:position]
    else:
        before = text.encode("utf-8", "surrogatepass")[:position].decode("utf-8", "ignore")
    line = before.count("\n") + 1
    column = len(before) - (before.rfind("\n") + 1) + 1
    return Location(filename, line, column)


def _location(filename: str, mark: yaml.Mark) -> Location:
    return Location(filename, mark.line + 1, mark.column + 1)


class _Document:
    """One document turned into Python values, remembering which node each value came from."""

    def __init__(self, filename: str, root: Node) -> None:
        self.filename = filename
        self.root = root
        # id(dict or list) → its child nodes by key or index. Every container made is kept
        # alive by `_done`, so the ids stay valid for the life of the document.
        self._children: dict[int, dict[object, Node] | list[Node]] = {}
        self._done: dict[int, object] = {}
        self._active: set[int] = set()
        self._scalars = yaml.constructor.SafeConstructor()
        try:
            self.value = self._convert(root)
        except RecursionError:
            raise InputError(f"{self._where(root)}: document nested too deeply") from None

    def locate(self, path: FieldPath) -> Location:
        """Where the value at `path` starts, or the deepest existing value along it."""
        node = self.root
        value = self.value
        for step in path:
            children = self._children.get(id(value))
            if children is None or not isinstance(value, dict | list):
                break
            try:
                node = children[step]  # type: ignore[index]
                value = value[step]  # type: ignore[index]
            except (KeyError, IndexError, TypeError):
                break
        return self._where(node)

    def _where(self, node: Node) -> Location:
        return _location(self.filename, node.start_mark)

    def _fail(self, node: Node, message: str) -> InputError:
        return InputError(f"{self._where(node)}: {message}")

    def _convert(self, node: Node) -> object:
        key = id(node)
        if key in self._done:  # an alias: share the value, keeping conversion linear
            return self._done[key]
        if key in self._active:
            raise self._fail(node, "recursive alias")
        self._active.add(key)
        value: object
        if isinstance(node, ScalarNode):
            value = self._scalar(node)
        elif isinstance(node, SequenceNode):
            value = self._sequence(node)
        elif isinstance(node, MappingNode):
            value = self._mapping(node)
        else:  # pragma: no cover - the composer makes only these three
            raise self._fail(node, f"unexpected YAML node {type(node).__name__}")
        self._active.discard(key)
        self._done[key] = value
        return value

    def _scalar(self, node: ScalarNode) -> object:
        tag = node.tag
        if tag == _NULL:
            return None
        try:
            if tag == _BOOL:
                return yaml.constructor.SafeConstructor.bool_values[node.value.lower()]
            if tag == _INT:
                return self._scalars.construct_yaml_int(node)
            if tag == _FLOAT:
                return self._scalars.construct_yaml_float(node)
        except (KeyError, ValueError):
            kind = tag.removeprefix(_TAG)
            raise self._fail(node, f"invalid {kind} {node.value!r}") from None
        text: str = node.value
        return text

    def _sequence(self, node: SequenceNode) -> list[object]:
        children: list[Node] = list(node.value)
        result = [self._convert(child) for child in children]
        self._children[id(result)] = children
        return result

    def _mapping(self, node: MappingNode) -> dict[object, object]:
        result: dict[object, object] = {}
        children: dict[object, Node] = {}
        own: list[tuple[Node, Node]] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                for source in self._merge_sources(value_node):
                    merged = self._convert(source)
                    assert isinstance(merged, dict)  # a MappingNode converts to a dict
                    result.update(merged)
                    merged_children = self._children[id(merged)]
                    assert isinstance(merged_children, dict)
                    children.update(merged_children)
            else:
                own.append((key_node, value_node))
        for key_node, value_node in own:
            if not isinstance(key_node, ScalarNode):
                raise self._fail(key_node, "a mapping key must be a scalar")
            key = self._convert(key_node)
            result[key] = self._convert(value_node)
            children[key] = value_node
        self._children[id(result)] = children
        return result

    def _merge_sources(self, node: Node) -> list[MappingNode]:
        """The mappings a `<<` merges, lowest priority first (the first listed wins)."""
        if isinstance(node, MappingNode):
            return [node]
        if isinstance(node, SequenceNode) and all(isinstance(n, MappingNode) for n in node.value):
            return list(reversed(node.value))
        raise self._fail(node, "expected a mapping or a list of mappings to merge")


def _objects(
    value: Mapping[Any, object],
    prefix: FieldPath,
    kind: str | None,
    seen: set[int],
    problems: list[str],
    document: _Document,
) -> Iterator[tuple[FieldPath, Mapping[str, object], str]]:
    """The Kubernetes objects in a document: itself, or the items of a list, recursively.

    Yields (path from the document root, object, kind). An object reached twice through
    YAML aliases is yielded once: its images stand at one place in the file.
    """
    if kind is None:
        declared = value.get("kind")
        if not isinstance(declared, str):
            return
        kind = declared
    if id(value) in seen:
        return
    seen.add(id(value))
    if not (kind.endswith("List") and "items" in value):
        yield prefix, value, kind
        return
    items = value["items"]
    items_path = (*prefix, "items")
    if items is None:
        return
    if not isinstance(items, list):
        problem = Problem(items_path, f"expected a list, got {workloads.describe(items)}")
        problems.append(f"{document.locate(items_path)}: {problem}")
        return
    item_kind = kind.removesuffix("List")
    for index, item in enumerate(items):
        path = (*items_path, index)
        if not isinstance(item, Mapping):
            problem = Problem(path, f"expected a mapping, got {workloads.describe(item)}")
            problems.append(f"{document.locate(path)}: {problem}")
            continue
        declared = item.get("kind")
        if isinstance(declared, str):
            yield from _objects(item, path, declared, seen, problems, document)
        elif item_kind and "kind" not in item:
            yield from _objects(item, path, item_kind, seen, problems, document)


def _how(kind: str, obj: Mapping[str, object], extraction: workloads.Extraction) -> str:
    if workloads.pod_spec_path(kind) is not None:
        return "built-in workload kind"
    if extraction.how:
        return extraction.how
    group = workloads.group_of(obj)
    if workloads.is_builtin_group(group):
        return "no images (not a workload kind)"
    return (
        "no pod template found and not in the workloads table (add its image paths "
        "under `workloads:` in the settings)"
    )


def _metadata(obj: Mapping[str, object]) -> tuple[str, str | None]:
    """(metadata.name or "", metadata.namespace or None)."""
    metadata = obj.get("metadata")
    if not isinstance(metadata, Mapping):
        return "", None
    name = metadata.get("name")
    namespace = metadata.get("namespace")
    return (
        name if isinstance(name, str) else "",
        namespace if isinstance(namespace, str) else None,
    )
