"""policy.yamlsrc: located YAML within bounds — alias bombs, recursive aliases and deep nesting
are refused with file:line:col before anything is built; ordinary anchors still work."""

from __future__ import annotations

import io
import re
import time
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from policy import cli, factsfile, loader, ruletests, settings, yamlsrc
from policy.errors import ConfigErrors, PolicyError


def bomb(levels: int, *, prefix: str = "", indent: str = "") -> str:
    """A "billion laughs": each level an anchored list of nine aliases of the one before."""
    lines = [f'{indent}l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels + 1):
        lines.append(f"{indent}l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]")
    return prefix + "\n".join(lines) + "\n"


def test_a_billion_laughs_is_refused_at_the_alias_that_crosses_the_budget() -> None:
    text = bomb(9)
    assert len(text) < 600
    tracemalloc.start()
    started = time.perf_counter()
    root, errors = yamlsrc.load(text, "bomb.yaml")
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert root is None
    assert [str(e) for e in errors] == [
        "bomb.yaml:5:10: too many aliases: *l3 here expands to 7381 values, past the budget of "
        "10000 values made by aliases in one file (an alias bomb?)"
    ]
    assert elapsed < 0.2
    assert peak < 2 * 1024 * 1024


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("a: &a [1, *a]\n", "d.yaml:1:11: recursive alias *a (used inside its own anchor)"),
        ("a: &a {b: {c: *a}}\n", "d.yaml:1:15: recursive alias *a (used inside its own anchor)"),
        ("a: " + "[" * 100 + "]" * 100 + "\n", "d.yaml:1:103: nested more than 100 levels deep"),
        ("a: *nowhere\n", "d.yaml:1:4: YAML syntax error: found undefined alias"),
    ],
)
def test_recursion_deep_nesting_and_undefined_aliases_are_located_errors(
    text: str, problem: str
) -> None:
    root, errors = yamlsrc.load(text, "d.yaml")
    assert root is None
    assert [str(e) for e in errors] == [problem]


def test_anchors_do_not_reach_into_the_next_document() -> None:
    """One document per file: aliases in a second document to the first's anchors are an
    undefined alias (as PyYAML says), however many there are, not an alias budget matter."""
    text = alias_uses(100, 1) + "---\n" + "".join(f"w{i}: *b\n" for i in range(200))
    root, errors = yamlsrc.load(text, "two.yaml")
    assert root is None
    assert [str(e) for e in errors] == [
        "two.yaml:3:1: YAML syntax error: but found another document"
    ]


def test_nesting_libyaml_itself_refuses_is_a_located_error_too() -> None:
    """libyaml scans ahead, and refuses 1,000 levels before our 100 are counted."""
    root, errors = yamlsrc.load("a: " + "[" * 100_000 + "\n", "d.yaml")
    assert root is None
    assert len(errors) == 1
    assert re.fullmatch(
        r"d\.yaml:1:\d+: (nested more than 100 levels deep|"
        r"YAML syntax error: exceeded maximum nesting depth)",
        str(errors[0]),
    )


def test_nesting_up_to_the_limit_is_read() -> None:
    text = "a: " + "[" * 99 + "1" + "]" * 99 + "\n"  # the mapping and 99 lists: 100 levels
    root, errors = yamlsrc.load(text, "d.yaml")
    assert errors == []
    assert root is not None
    value = root.plain()
    assert isinstance(value, dict)
    for _ in range(100):
        value = value["a"] if isinstance(value, dict) else value[0]
    assert value == 1


def alias_uses(values_per_use: int, uses: int) -> str:
    items = ", ".join(f'"v{i}"' for i in range(values_per_use - 1))
    return f"base: &b [{items}]\n" + "".join(f"u{i}: *b\n" for i in range(uses))


def test_the_alias_budget_is_exact() -> None:
    # The anchored list is 100 values (the list and its 99 strings): 100 uses make 10,000.
    root, errors = yamlsrc.load(alias_uses(100, 100), "ok.yaml")
    assert errors == []
    assert root is not None
    plain = root.plain()
    assert isinstance(plain, dict)
    assert plain["u99"] == plain["base"] and len(plain["base"]) == 99
    root, errors = yamlsrc.load(alias_uses(100, 101), "over.yaml")
    assert root is None
    assert [str(e) for e in errors] == [
        "over.yaml:102:7: too many aliases: *b here expands to 100 values, past the budget of "
        "10000 values made by aliases in one file (an alias bomb?)"
    ]


def test_each_alias_use_keeps_its_own_location_and_path() -> None:
    text = "shared: &s {maxLayers: ten}\nrules:\n  - require: *s\n  - require: *s\n"
    root, errors = yamlsrc.load(text, "r.yaml")
    assert errors == [] and root is not None
    reader = yamlsrc.Reader()
    for path, rule in reader.items(root.value["rules"], "rules"):  # type: ignore[index]
        require = rule.value["require"]  # type: ignore[index]
        reader.positive_int(require.value["maxLayers"], f"{path}.require.maxLayers")
    assert [str(e) for e in reader.errors] == [
        'r.yaml:1:24: rules[0].require.maxLayers: expected a positive integer, got "ten"',
        'r.yaml:1:24: rules[1].require.maxLayers: expected a positive integer, got "ten"',
    ]


RULES_WITH_ANCHORS = """\
apiVersion: image-policy/v1
kind: RuleSet
rules:
  - id: trusted
    match: {images: ["**"], namespaces: &prod ["prod", "prod-*"]}
    require: {registries: &trusted ["docker.io", "ghcr.io"]}
  - id: small
    match: {images: ["**"], namespaces: *prod}
    require: {maxLayers: 30}
  - id: trusted-dev
    match: {images: ["**"], namespaces: ["dev"]}
    require: {registries: *trusted}
"""


def test_rules_with_a_few_anchors_still_load() -> None:
    ruleset = loader.load_rules_text(RULES_WITH_ANCHORS, "anchors.yaml")
    trusted, small, dev = ruleset.rules
    assert small.match.namespaces == trusted.match.namespaces
    assert [str(g) for g in trusted.match.namespaces] == ["prod", "prod-*"]
    assert [c.setting for c in dev.checks] == [c.setting for c in trusted.checks]


def loads_rules(text: str, file: str) -> object:
    return loader.load_rules_text(text, file)


def loads_settings(text: str, file: str) -> object:
    return settings.parse_settings(text, file)


def loads_facts(text: str, file: str) -> object:
    return factsfile.parse_facts(text, file)


def loads_rule_tests(text: str, file: str) -> object:
    return ruletests.parse_cases(text, file, now=datetime(2026, 6, 1, tzinfo=UTC))


@pytest.mark.parametrize(
    ("parse", "prefix", "indent"),
    [
        (loads_rules, "apiVersion: image-policy/v1\nkind: RuleSet\nx-bomb:\n", "  "),
        (loads_settings, "tiers:\n", "  "),
        (loads_facts, "images:\n  x:\n", "    "),
        (loads_rule_tests, "apiVersion: image-policy/v1\nkind: RuleTest\nfacts:\n", "  "),
    ],
    ids=["rules", "settings", "facts", "rule-tests"],
)
def test_every_yaml_file_kind_refuses_a_bomb_with_its_location(
    parse: Callable[[str, str], object], prefix: str, indent: str
) -> None:
    text = bomb(9, prefix=prefix, indent=indent)
    started = time.perf_counter()
    with pytest.raises(PolicyError) as caught:
        parse(text, "f.yaml")
    assert time.perf_counter() - started < 0.2
    errors = caught.value.errors if isinstance(caught.value, ConfigErrors) else [caught.value]
    assert len(errors) == 1
    error = errors[0]
    line = prefix.count("\n") + 5
    assert str(error).startswith(f"f.yaml:{line}:{len(indent) + 10}: too many aliases: *l3 ")


def test_the_cli_refuses_a_bomb_in_a_rules_file_with_exit_2(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        bomb(9, prefix="apiVersion: image-policy/v1\nkind: RuleSet\nx:\n", indent="  ")
    )
    out, err = io.StringIO(), io.StringIO()
    started = time.perf_counter()
    code = cli.main(["lint", str(rules)], out=out, err=err)
    assert time.perf_counter() - started < 1
    assert code == 2
    text = out.getvalue() + err.getvalue()
    assert f"{rules}:8:12: too many aliases: *l3 here expands to 7381 values" in text
    assert "Traceback" not in text
