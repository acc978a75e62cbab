"""Rule files (YAML) → `rules.RuleSet`, with every error located as file:line:column and path.

`load_rules(paths)` raises `RuleErrors` holding every problem found (what `image-policy lint`
prints); several files, or a directory of them, merge into one rule set.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, cast

from policy import checks, patterns, rules
from policy.errors import Location, RuleError, RuleErrors
from policy.rules import PolicyException, Rule
from policy.yamlsrc import Node, Reader, join, load

API_VERSION = "image-policy/v1"
KIND = "RuleSet"

_TOP_KEYS = ("apiVersion", "kind", "metadata", "defaults", "rules", "exceptions")
_DEFAULT_KEYS = ("action", "platforms", "onResolveError", "unmatched")
_RULE_KEYS = ("id", "description", "match", "require", "action", "message", "platforms")
_MATCH_KEYS = ("images", "excludeImages", "namespaces")
_EXCEPTION_KEYS = ("rules", "images", "namespaces", "reason", "expires")
RULE_ID = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$")


@dataclass
class _Parts:
    """What one file contributed, before merging."""

    name: str | None = None
    defaults: dict[str, tuple[object, Location]] = field(default_factory=dict)
    rules: list[Rule] = field(default_factory=list)
    rule_paths: list[str] = field(default_factory=list)
    # Every rule's id in file order, (id, rule path, location, the rule or None when it has
    # errors): duplicates and exceptions are checked against broken rules too, in one pass.
    ids: list[tuple[str, str, Location | None, Rule | None]] = field(default_factory=list)
    exceptions: list[PolicyException] = field(default_factory=list)
    # Every rule id an exception names: (id, path, location), to report unknown ones precisely.
    exception_refs: list[tuple[str, str, Location]] = field(default_factory=list)


def _image_patterns(reader: Reader, node: Node, path: str) -> tuple[patterns.ImagePattern, ...]:
    return reader.compiled(node, path, patterns.image_pattern) or ()


def _namespace_globs(reader: Reader, node: Node, path: str) -> tuple[patterns.Glob, ...]:
    return reader.compiled(node, path, patterns.namespace_glob) or ()


def _platform_globs(reader: Reader, node: Node, path: str) -> tuple[patterns.Glob, ...] | None:
    return reader.compiled(node, path, patterns.platform_glob)


def _match(reader: Reader, node: Node, path: str) -> rules.Match | None:
    children = reader.mapping(node, path, allowed=_MATCH_KEYS, required=("images",))
    if children is None or "images" not in children:
        return None
    images = _image_patterns(reader, children["images"], join(path, "images"))
    exclude = (
        _image_patterns(reader, children["excludeImages"], join(path, "excludeImages"))
        if "excludeImages" in children
        else ()
    )
    if "namespaces" in children:
        namespaces = _namespace_globs(reader, children["namespaces"], join(path, "namespaces"))
        return rules.Match(images, exclude, namespaces)
    return rules.Match(images, exclude)


def _require(reader: Reader, node: Node, path: str) -> tuple[rules.Check, ...]:
    children = reader.mapping(node, path, allowed=tuple(checks.CHECKS))
    if children is None:
        return ()
    if not children:
        reader.error(node, path, "expected at least one check")
    out = []
    for name, child in children.items():
        spec = checks.CHECKS.get(name)
        if spec is None:
            continue  # already reported as an unknown key
        setting = spec.parse(reader, child, join(path, name))
        if setting is not None:
            out.append(rules.Check(name, setting, child.key_location))
    return tuple(out)


def _rule(reader: Reader, node: Node, path: str) -> rules.Rule | None:
    children = reader.mapping(node, path, allowed=_RULE_KEYS, required=("id", "match", "require"))
    if children is None:
        return None
    errors_before = len(reader.errors)
    rule_id = None
    if "id" in children:
        rule_id = reader.string(children["id"], join(path, "id"))
        if rule_id is not None and not RULE_ID.match(rule_id):
            reader.error(
                children["id"],
                join(path, "id"),
                f"rule ids are lowercase letters, digits, '.', '_' and '-', got {rule_id!r}",
            )
    match = _match(reader, children["match"], join(path, "match")) if "match" in children else None
    found = (
        _require(reader, children["require"], join(path, "require"))
        if "require" in children
        else ()
    )
    action = None
    if "action" in children:
        action = reader.choice(children["action"], join(path, "action"), rules.ACTIONS)
    texts = {}
    for key in ("description", "message"):
        if key in children:
            texts[key] = reader.string(children[key], join(path, key)) or ""
    platforms = (
        _platform_globs(reader, children["platforms"], join(path, "platforms"))
        if "platforms" in children
        else None
    )
    if len(reader.errors) > errors_before or rule_id is None or match is None:
        return None
    return rules.Rule(
        id=rule_id,
        match=match,
        checks=found,
        action=cast(rules.Action | None, action),
        description=texts.get("description", ""),
        message=texts.get("message", ""),
        platforms=platforms,
        location=node.location,
    )


def _expires(reader: Reader, node: Node, path: str) -> date | None:
    value = node.value
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    reader.expected(node, path, "a date like 2027-03-31")
    return None


def _exception(reader: Reader, node: Node, path: str) -> rules.PolicyException | None:
    children = reader.mapping(
        node, path, allowed=_EXCEPTION_KEYS, required=("rules", "images", "reason")
    )
    if children is None:
        return None
    errors_before = len(reader.errors)
    rule_ids: list[str] = []
    if "rules" in children:
        rule_ids = cast(list[str], reader.string_list(children["rules"], join(path, "rules")) or [])
    images = (
        _image_patterns(reader, children["images"], join(path, "images"))
        if "images" in children
        else ()
    )
    namespaces = (
        _namespace_globs(reader, children["namespaces"], join(path, "namespaces"))
        if "namespaces" in children
        else None
    )
    reason = (
        reader.string(children["reason"], join(path, "reason")) if "reason" in children else None
    )
    expires = (
        _expires(reader, children["expires"], join(path, "expires"))
        if "expires" in children
        else None
    )
    if len(reader.errors) > errors_before or reason is None:
        return None
    return rules.PolicyException(
        rules=tuple(rule_ids),
        images=images,
        namespaces=namespaces,
        reason=reason,
        expires=expires,
        location=node.location,
    )


def _document(reader: Reader, root: Node, parts: _Parts) -> None:
    # A file of exceptions alone is fine (kept apart from the rules they lift, as GitOps
    # repositories do); the merged rule set must still have rules.
    alone = isinstance(root.value, dict) and "exceptions" in root.value
    required = ("apiVersion", "kind") if alone else ("apiVersion", "kind", "rules")
    top = reader.mapping(root, "", allowed=_TOP_KEYS, required=required)
    if top is None:
        return
    if "apiVersion" in top and top["apiVersion"].value != API_VERSION:
        reader.error(
            top["apiVersion"],
            "apiVersion",
            f"expected {API_VERSION}, got {top['apiVersion'].type_name()}",
        )
    if "kind" in top and top["kind"].value != KIND:
        reader.error(top["kind"], "kind", f"expected {KIND}, got {top['kind'].type_name()}")
    if "metadata" in top:
        meta = reader.mapping(top["metadata"], "metadata", allowed=("name", "description"))
        if meta and "name" in meta:
            parts.name = reader.string(meta["name"], "metadata.name")
    if "defaults" in top:
        defaults = reader.mapping(top["defaults"], "defaults", allowed=_DEFAULT_KEYS) or {}
        choices = {
            "action": rules.ACTIONS,
            "onResolveError": rules.RESOLVE_ERROR_ACTIONS,
            "unmatched": rules.UNMATCHED,
        }
        for key, child in defaults.items():
            value: object | None
            if key == "platforms":
                value = _platform_globs(reader, child, "defaults.platforms")
            elif key in choices:
                value = reader.choice(child, f"defaults.{key}", choices[key])
            else:
                continue
            if value is not None:
                parts.defaults[key] = (value, child.location)
    if "rules" in top:
        for item_path, child in reader.items(top["rules"], "rules"):
            rule = _rule(reader, child, item_path)
            if rule is not None:
                parts.rules.append(rule)
                parts.rule_paths.append(item_path)
                parts.ids.append((rule.id, item_path, rule.location, rule))
            elif isinstance(child.value, dict):
                id_node = child.value.get("id")
                if id_node is not None and isinstance(id_node.value, str):
                    parts.ids.append((id_node.value, item_path, child.location, None))
    if "exceptions" in top:
        for item_path, child in reader.items(top["exceptions"], "exceptions", nonempty=False):
            exc = _exception(reader, child, item_path)
            if exc is not None:
                parts.exceptions.append(exc)
            names = child.value.get("rules") if isinstance(child.value, dict) else None
            if names is not None and isinstance(names.value, list):
                parts.exception_refs.extend(
                    (str(n.value), f"{item_path}.rules[{j}]", n.location)
                    for j, n in enumerate(names.value)
                    if isinstance(n.value, str)
                )


def _files(paths: Iterable[str | Path]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            # Not recursive, and hidden entries skipped: a mounted ConfigMap holds each file
            # twice, once behind the `..data` symlink directory.
            out.extend(
                sorted(
                    q
                    for q in path.iterdir()
                    if q.suffix in (".yaml", ".yml") and not q.name.startswith(".") and q.is_file()
                )
            )
        else:
            out.append(path)
    return out


def parse_text(text: str, filename: str, reader: Reader) -> _Parts:
    """Read one rule file's text; errors go to `reader`."""
    parts = _Parts()
    root, syntax_errors = load(text, filename)
    reader.errors.extend(
        RuleError(e.message, location=e.location, path=e.path) for e in syntax_errors
    )
    if root is None:
        if not syntax_errors:
            reader.errors.append(RuleError("empty rule file", location=Location(filename, 1, 1)))
        return parts
    _document(reader, root, parts)
    return parts


def _merge(all_parts: Sequence[tuple[str, _Parts]], reader: Reader) -> rules.RuleSet | None:
    """The rule set of several files' parts: defaults agreed, rule ids unique, exceptions
    naming known rules, at least one rule; None when any error was reported to `reader`."""
    defaults = _merged_defaults(all_parts, reader)
    seen_ids, merged_rules = _unique_rules(all_parts, reader)
    _check_exception_refs(all_parts, seen_ids, reader)
    if not merged_rules and not reader.errors:
        first_file = all_parts[0][0] if all_parts else "<rules>"
        reader.errors.append(
            RuleError(
                "the rule set has no rules; an empty policy would decide nothing, so it is refused",
                location=Location(first_file, 1, 1),
            )
        )
    if reader.errors:
        return None
    kwargs: dict[str, Any] = {}
    mapping = {
        "action": "action",
        "platforms": "platforms",
        "onResolveError": "on_resolve_error",
        "unmatched": "unmatched",
    }
    for key, (value, _) in defaults.items():
        kwargs[mapping[key]] = value
    return rules.RuleSet(
        name=next((parts.name for _, parts in all_parts if parts.name), None) or "rules",
        defaults=rules.Defaults(**kwargs),
        rules=tuple(merged_rules),
        exceptions=tuple(e for _, parts in all_parts for e in parts.exceptions),
        sources=tuple(f for f, _ in all_parts),
    )


def _merged_defaults(
    all_parts: Sequence[tuple[str, _Parts]], reader: Reader
) -> dict[str, tuple[object, Location]]:
    """Each file's `defaults`, the first setting of a key kept; a file setting it to another
    value is an error."""
    defaults: dict[str, tuple[object, Location]] = {}
    for _, parts in all_parts:
        for key, (value, loc) in parts.defaults.items():
            if key in defaults and defaults[key][0] != value:
                first = defaults[key][1]
                reader.errors.append(
                    RuleError(
                        f"conflicts with the value set at {first}",
                        location=loc,
                        path=f"defaults.{key}",
                    )
                )
            defaults.setdefault(key, (value, loc))
    return defaults


def _unique_rules(
    all_parts: Sequence[tuple[str, _Parts]], reader: Reader
) -> tuple[dict[str, Location | None], list[rules.Rule]]:
    """Every rule id (where first defined) and the rules that parsed, in file order; a
    duplicate id is an error and its rule is left out."""
    seen_ids: dict[str, Location | None] = {}
    merged_rules: list[rules.Rule] = []
    for _, parts in all_parts:
        for rule_id, rule_path, location, rule in parts.ids:
            if rule_id in seen_ids:
                reader.errors.append(
                    RuleError(
                        f"duplicate rule id {rule_id!r} (first defined at {seen_ids[rule_id]})",
                        location=location,
                        path=f"{rule_path}.id",
                    )
                )
                continue
            seen_ids[rule_id] = location
            if rule is not None:
                merged_rules.append(rule)
    return seen_ids, merged_rules


def _check_exception_refs(
    all_parts: Sequence[tuple[str, _Parts]], seen_ids: Mapping[str, object], reader: Reader
) -> None:
    """An exception naming a rule id no file defines is an error (with a did-you-mean)."""
    for _, parts in all_parts:
        for rule_id, ref_path, loc in parts.exception_refs:
            if rule_id != "*" and rule_id not in seen_ids and seen_ids:
                reader.errors.append(
                    RuleError(
                        f"exception names unknown rule {rule_id!r}"
                        + _did_you_mean(rule_id, seen_ids),
                        location=loc,
                        path=ref_path,
                    )
                )


def _did_you_mean(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _in_order(errors: Sequence[object]) -> list[RuleError]:
    """Errors by file (in the order the files were read), then line and column."""
    found = cast(list[RuleError], list(errors))
    files = list(dict.fromkeys(e.location.file if e.location else "" for e in found))

    def key(e: RuleError) -> tuple[int, int, int]:
        if e.location is None:
            return (files.index(""), 0, 0)
        return (files.index(e.location.file), e.location.line, e.location.column)

    return sorted(found, key=key)


def lint(paths: str | Path | Iterable[str | Path]) -> list[RuleError]:
    """Every problem in these rule files (empty when they load)."""
    try:
        load_rules(paths)
    except RuleErrors as exc:
        return [e for e in exc.errors if isinstance(e, RuleError)]
    return []


def _why_unreadable(exc: OSError | UnicodeDecodeError) -> str:
    """Why a file could not be read, in words (no exception class names)."""
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8 text"
    return (exc.strerror or "unreadable").lower()


def load_rules(paths: str | Path | Iterable[str | Path]) -> rules.RuleSet:
    """Load and merge rule files and directories (one path or several); raise RuleErrors
    listing every problem."""
    reader = Reader(RuleError)
    files = _files([paths] if isinstance(paths, str | Path) else paths)
    if not files:
        raise RuleErrors([RuleError("no rule files given (or the directory holds no .yaml files)")])
    all_parts = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reader.errors.append(
                RuleError(f"cannot read rule file: {_why_unreadable(exc)}", path=str(path))
            )
            continue
        all_parts.append((str(path), parse_text(text, str(path), reader)))
    ruleset = _merge(all_parts, reader)
    if ruleset is None:
        raise RuleErrors(_in_order(reader.errors))
    return ruleset


def load_rules_text(text: str, filename: str = "<rules>") -> rules.RuleSet:
    """Load one rule file given as text (tests, stdin)."""
    reader = Reader(RuleError)
    parts = parse_text(text, filename, reader)
    ruleset = _merge([(filename, parts)], reader)
    if ruleset is None:
        raise RuleErrors(_in_order(reader.errors))
    return ruleset
