"""Tests for policy/loader.py: rule files → RuleSet, and every error located as
`FILE:LINE:COL: PATH: MESSAGE`, all of them reported at once."""

from __future__ import annotations

import textwrap
from datetime import date
from pathlib import Path

import pytest

from policy import loader, rules
from policy.errors import RuleError, RuleErrors
from policy.reference import parse

DATA = Path(__file__).resolve().parents[1] / "data" / "rules"
BROKEN = DATA / "broken"
SHIPPED = Path(__file__).resolve().parents[2] / "rules"

HEADER = "apiVersion: image-policy/v1\nkind: RuleSet\n"


def lint_text(text: str, filename: str = "rules/prod.yaml") -> list[str]:
    """Every error of one rule file given as text, rendered."""
    try:
        loader.load_rules_text(textwrap.dedent(text), filename)
    except RuleErrors as exc:
        return [str(e) for e in exc.errors]
    return []


# --- each error kind, at its exact line and column ----------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "syntax.yaml",
            ["6:26: YAML syntax error: did not find expected ',' or ']'"],
        ),
        (
            "unknown-key.yaml",
            [
                '8:7: rules[0].require.maxLayer: unknown key "maxLayer" '
                '(did you mean "maxLayers"?)',
                '9:5: rules[0].acton: unknown key "acton" (did you mean "action"?)',
                "11:12: rules[1].match: missing required key 'images'",
                '11:13: rules[1].match.imagez: unknown key "imagez" (did you mean "images"?)',
                '13:5: rules[1].colour: unknown key "colour" (expected one of: id, description, '
                "match, require, action, message, platforms)",
            ],
        ),
        (
            "wrong-type.yaml",
            [
                '5:11: defaults.action: expected one of deny | warn | audit, got "block"',
                '9:23: rules[0].require.digest: expected true or false, got "yes"',
                '13:18: rules[1].require.maxLayers: expected a positive integer, got "ten"',
                '15:21: rules[2].match.images: expected a list of strings, got "**"',
                "17:18: rules[2].require.maxLayers: expected a positive integer, got 0",
            ],
        ),
        (
            "bad-pattern.yaml",
            [
                "7:16: rules[0].match.images[0]: image pattern 'docker.io/MyCorp/*' has "
                "uppercase letters in the repository path; repository names are always lowercase",
                "7:38: rules[0].match.images[1]: image patterns match names and tags, "
                "not digests (remove the @...)",
                "7:58: rules[0].match.images[2]: use * for one path component and ** for any "
                "number, not ***",
                "8:20: rules[0].match.namespaces[0]: invalid namespace pattern 'Prod'",
                "10:20: rules[0].require.registries[0]: invalid registry pattern "
                "'ghcr.io/owner' (expected a host like ghcr.io)",
                "11:18: rules[0].require.denyTags[0]: invalid tag pattern 'bad tag'",
                "12:17: rules[0].platforms[0]: invalid platform 'linux' "
                "(expected os/arch[/variant], e.g. linux/amd64)",
            ],
        ),
        (
            "bad-units.yaml",
            [
                "8:16: rules[0].require.maxSize: unknown size unit 'XB' "
                '(use B, KB, MB, GB, KiB, MiB, GiB), got "500XB"',
                "12:15: rules[1].require.maxAge: expected a duration like 90d, 12h, 5m, 30s "
                'or 1h30m, got "90 days"',
                "16:16: rules[2].require.maxSize: expected a positive size, got -1",
                '17:15: rules[2].require.maxAge: expected a positive duration, got "0s"',
            ],
        ),
        (
            "duplicate-key.yaml",
            [
                "9:7: rules[0].require.maxLayers: duplicate key 'maxLayers' "
                "(first defined at line 8)"
            ],
        ),
        (
            "unknown-exception-rule.yaml",
            [
                "9:13: exceptions[0].rules[0]: exception names unknown rule 'pined' "
                "(did you mean 'pinned'?)"
            ],
        ),
        (
            "bad-expires.yaml",
            [
                '12:14: exceptions[0].expires: expected a date like 2027-03-31, got "2027-02-30"',
                '16:14: exceptions[1].expires: expected a date like 2027-03-31, got "next year"',
            ],
        ),
        (
            "missing-keys.yaml",
            [
                "5:5: rules[0]: missing required key 'match'",
                "7:5: rules[1]: missing required key 'id'",
                "7:5: rules[1]: missing required key 'require'",
                "9:5: exceptions[0]: missing required key 'rules'",
                "9:5: exceptions[0]: missing required key 'reason'",
            ],
        ),
        (
            "wrong-api.yaml",
            [
                '1:13: apiVersion: expected image-policy/v1, got "image-policy/v2"',
                '2:7: kind: expected RuleSet, got "Policy"',
            ],
        ),
        ("empty.yaml", ["1:1: empty rule file"]),
        ("empty-rules.yaml", ["3:8: rules: expected a non-empty list"]),
        ("no-rules-key.yaml", ["1:1: missing required key 'rules'"]),
        ("not-a-mapping.yaml", ["1:1: expected a mapping, got a list"]),
    ],
)
def test_broken_file_reports_every_error_located(name: str, expected: list[str]) -> None:
    path = BROKEN / name
    assert [str(e) for e in loader.lint([path])] == [f"{path}:{line}" for line in expected]


def test_every_broken_file_is_tested() -> None:
    """The table above covers each broken file (a new broken file needs its expectations)."""
    tested = {
        "syntax.yaml",
        "unknown-key.yaml",
        "wrong-type.yaml",
        "bad-pattern.yaml",
        "bad-units.yaml",
        "duplicate-key.yaml",
        "unknown-exception-rule.yaml",
        "bad-expires.yaml",
        "missing-keys.yaml",
        "wrong-api.yaml",
        "empty.yaml",
        "empty-rules.yaml",
        "no-rules-key.yaml",
        "not-a-mapping.yaml",
        "dup-ids",
        "conflicting-defaults",
    }
    assert {p.name for p in BROKEN.iterdir()} == tested


def test_duplicate_rule_ids_across_files() -> None:
    a, b = BROKEN / "dup-ids" / "a.yaml", BROKEN / "dup-ids" / "b.yaml"
    assert [str(e) for e in loader.lint([BROKEN / "dup-ids"])] == [
        f"{b}:7:5: rules[1].id: duplicate rule id 'pinned' (first defined at {a}:4:5)"
    ]


def test_conflicting_defaults_across_files() -> None:
    """`unmatched: allow` in both files agrees; `action` differs and is an error."""
    a = BROKEN / "conflicting-defaults" / "a.yaml"
    b = BROKEN / "conflicting-defaults" / "b.yaml"
    assert [str(e) for e in loader.lint([a, b])] == [
        f"{b}:5:11: defaults.action: conflicts with the value set at {a}:4:11"
    ]


def test_load_rules_raises_all_errors_at_once() -> None:
    path = BROKEN / "wrong-type.yaml"
    with pytest.raises(RuleErrors) as info:
        loader.load_rules([path])
    assert len(info.value.errors) == 5
    assert all(isinstance(e, RuleError) for e in info.value.errors)
    assert str(info.value).splitlines()[2] == (
        f'{path}:13:18: rules[1].require.maxLayers: expected a positive integer, got "ten"'
    )


def test_errors_from_several_files_keep_file_order_then_lines() -> None:
    files = [BROKEN / "wrong-api.yaml", BROKEN / "unknown-key.yaml"]
    found = [e.location for e in loader.lint(files)]
    assert [(loc.file, loc.line, loc.column) for loc in found if loc] == [
        (str(files[0]), 1, 13),
        (str(files[0]), 2, 7),
        (str(files[1]), 8, 7),
        (str(files[1]), 9, 5),
        (str(files[1]), 11, 12),
        (str(files[1]), 11, 13),
        (str(files[1]), 13, 5),
    ]


def test_error_attributes() -> None:
    (error,) = loader.lint([BROKEN / "duplicate-key.yaml"])
    assert error.location is not None
    assert (error.location.line, error.location.column) == (9, 7)
    assert error.path == "rules[0].require.maxLayers"
    assert error.message == "duplicate key 'maxLayers' (first defined at line 8)"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (  # the contract's own example, at line 14 column 18 of rules/prod.yaml
            HEADER + "rules:\n"
            "  - id: a\n    match: {images: ['**']}\n    require: {digest: true}\n"
            "  - id: b\n    match: {images: ['**']}\n    require: {denyTags: [latest]}\n"
            "  - id: few-layers\n    match:\n      images: ['**']\n    require:\n"
            "      maxLayers: ten\n",
            [
                "rules/prod.yaml:14:18: rules[2].require.maxLayers: expected a positive integer, "
                'got "ten"'
            ],
        ),
        (
            HEADER + "rules:\n  - id: Bad_ID\n    match: {images: ['**']}\n"
            "    require: {digest: true}\n",
            [
                "rules/prod.yaml:4:9: rules[0].id: rule ids are lowercase letters, digits, '.', "
                "'_' and '-', got 'Bad_ID'"
            ],
        ),
        (
            HEADER + "rules:\n  - id: a\n    match: {images: ['**']}\n    require: {}\n",
            ["rules/prod.yaml:6:14: rules[0].require: expected at least one check"],
        ),
        (
            HEADER + "rules:\n  - id: a\n    match: {images: ['**']}\n    require:\n",
            ["rules/prod.yaml:6:13: rules[0].require: expected a mapping, got nothing (null)"],
        ),
        (
            HEADER + "rules:\n  - id: a\n    match: {images: []}\n    require: {digest: true}\n",
            ["rules/prod.yaml:5:21: rules[0].match.images: expected a non-empty list"],
        ),
        (
            HEADER + "rules:\n  - id: a\n    match: {images: ['**', 5]}\n"
            "    require: {digest: true}\n",
            ["rules/prod.yaml:5:28: rules[0].match.images[1]: expected a non-empty string, got 5"],
        ),
        (
            HEADER + "defaults:\n  unmatched: maybe\n  onResolveError: retry\n"
            "  platforms: [linux]\n  colour: red\n"
            "rules:\n  - id: a\n    match: {images: ['**']}\n    require: {digest: true}\n",
            [
                "rules/prod.yaml:4:14: defaults.unmatched: expected one of deny | allow, "
                'got "maybe"',
                "rules/prod.yaml:5:19: defaults.onResolveError: expected one of deny | warn | "
                'allow, got "retry"',
                "rules/prod.yaml:6:15: defaults.platforms[0]: invalid platform 'linux' "
                "(expected os/arch[/variant], e.g. linux/amd64)",
                'rules/prod.yaml:7:3: defaults.colour: unknown key "colour" (expected one of: '
                "action, platforms, onResolveError, unmatched)",
            ],
        ),
        (
            HEADER + "rules:\n  - id: a\n    match: {images: ['**']}\n"
            "    require: {tier: [official, gold]}\n",
            [
                "rules/prod.yaml:6:32: rules[0].require.tier[1]: expected one of official | "
                "verified_publisher | sponsored_oss | none, got 'gold'"
            ],
        ),
        (
            HEADER + "rules:\n  - id: a\n    match: {images: ['**']}\n"
            "    require:\n      labels: {a: '(unclosed'}\n",
            [
                "rules/prod.yaml:7:19: rules[0].require.labels.a: invalid regular expression: "
                "missing ), unterminated subpattern at position 0"
            ],
        ),
        (
            HEADER + "rules:\n  - id: a\n    match: {images: ['**']}\n"
            "    require:\n      labels: {a: 5}\n      maxAge: true\n",
            [
                "rules/prod.yaml:7:19: rules[0].require.labels.a: expected a regular expression "
                "string or null, got 5",
                "rules/prod.yaml:8:15: rules[0].require.maxAge: expected a duration like 90d or "
                "5m, got true",
            ],
        ),
        (
            HEADER + "rules:\n  - id: a\n    match: {images: ['**']}\n"
            "    require: {maxLayers: !!int ten}\n",
            [
                "rules/prod.yaml:6:26: rules[0].require.maxLayers: cannot read value: not a "
                "valid !!int",
                "rules/prod.yaml:6:26: rules[0].require.maxLayers: expected a positive integer, "
                "got nothing (null)",
            ],
        ),
        (
            "base: &base {images: ['**']}\n" + HEADER + "rules:\n  - id: a\n"
            "    match: {<<: *base}\n    require: {digest: true}\n",
            [
                'rules/prod.yaml:1:1: base: unknown key "base" (expected one of: apiVersion, '
                "kind, metadata, defaults, rules, exceptions)",
                "rules/prod.yaml:6:12: rules[0].match: missing required key 'images'",
                "rules/prod.yaml:6:13: YAML merge keys (<<) are not supported",
            ],
        ),
        (
            HEADER + "rules:\n  - id: a\n    match: {images: ['**']}\n    require: {digest: true}\n"
            "exceptions:\n  - rules: [a]\n    images: [nginx]\n    reason: ''\n"
            "    expires: 31.03.2027\n",
            [
                'rules/prod.yaml:10:13: exceptions[0].reason: expected a non-empty string, got ""',
                "rules/prod.yaml:11:14: exceptions[0].expires: expected a date like 2027-03-31, "
                'got "31.03.2027"',
            ],
        ),
        (
            HEADER + "rules:\n  - id: a\n    match: {images: ['**']}\n    require: {digest: true}\n"
            "    action: block\n    message: [x]\n",
            [
                "rules/prod.yaml:7:13: rules[0].action: expected one of deny | warn | audit, "
                'got "block"',
                "rules/prod.yaml:8:14: rules[0].message: expected a non-empty string, got a list",
            ],
        ),
        (
            HEADER + "metadata: [x]\nrules: {id: a}\n",
            [
                "rules/prod.yaml:3:11: metadata: expected a mapping, got a list",
                "rules/prod.yaml:4:8: rules: expected a list, got a mapping",
            ],
        ),
        (
            "apiVersion: image-policy/v1\nkind: RuleSet\nrules:\n- id: a\n  match: {images: [x]}"
            "\n  require: {digest: true}\n- oops",
            ['rules/prod.yaml:7:3: rules[1]: expected a mapping, got "oops"'],
        ),
    ],
)
def test_inline_errors(text: str, expected: list[str]) -> None:
    assert lint_text(text) == expected


def test_exception_unknown_rule_is_not_reported_twice_when_no_rules_load() -> None:
    """With no valid rule at all, the rule errors are what matters, not the exceptions."""
    found = lint_text(
        HEADER + "rules:\n  - id: a\n    match: {images: ['**']}\n    require: {maxLayers: 0}\n"
        "exceptions:\n  - rules: [a]\n    images: [nginx]\n    reason: r\n"
    )
    assert found == [
        "rules/prod.yaml:6:26: rules[0].require.maxLayers: expected a positive integer, got 0"
    ]


def test_no_files_and_unreadable_files() -> None:
    with pytest.raises(RuleErrors, match="no rule files given"):
        loader.load_rules([])
    missing = BROKEN / "does-not-exist.yaml"
    with pytest.raises(
        RuleErrors, match=r"does-not-exist.yaml: cannot read rule file: no such file or directory$"
    ):
        loader.load_rules([missing])


def test_directory_without_rule_files(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(RuleErrors, match="no rule files given"):
        loader.load_rules([tmp_path])


def test_undecodable_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"apiVersion: \xff\n")
    with pytest.raises(RuleErrors, match=r"cannot read rule file: not UTF-8 text$"):
        loader.load_rules([path])


# --- valid files --------------------------------------------------------------------------------


def test_full_file_loads_every_part() -> None:
    ruleset = loader.load_rules([DATA / "valid" / "full.yaml"])
    assert ruleset.name == "full"
    assert ruleset.sources == (str(DATA / "valid" / "full.yaml"),)
    assert ruleset.defaults.action == "deny"
    assert ruleset.defaults.on_resolve_error == "deny"
    assert ruleset.defaults.unmatched == "deny"
    assert [str(g) for g in ruleset.defaults.platforms] == ["linux/amd64", "linux/arm64"]
    assert [r.id for r in ruleset.rules] == [
        "registries",
        "trusted-tier",
        "pinned",
        "no-latest",
        "small",
        "multi-arch",
        "hardened",
        "labelled",
    ]
    tier = ruleset.rule("trusted-tier")
    assert tier is not None
    assert tier.description == "Docker Hub images are trusted content"
    assert tier.message == "use a trusted image"
    assert tier.action is None
    assert [str(p) for p in tier.match.exclude_images] == ["docker.io/mycorp/**"]
    assert tier.checks[0].setting == frozenset({"official", "verified_publisher", "sponsored_oss"})
    assert tier.location is not None and tier.location.line == 16
    small = ruleset.rule("small")
    assert small is not None
    assert [(c.name, c.setting) for c in small.checks] == [
        ("maxLayers", 30),
        ("maxSize", 500 * 1024**2),
    ]
    assert small.platforms is not None and [str(g) for g in small.platforms] == ["linux/amd64"]
    assert [str(g) for g in small.match.namespaces] == ["prod", "prod-*"]
    hardened = ruleset.rule("hardened")
    assert hardened is not None and hardened.action == "audit"
    settings = {c.name: c.setting for c in hardened.checks}
    assert settings["nonRootUser"] is True
    assert settings["maxAge"] == 90 * 86400.0
    labels = settings["labels"]
    assert isinstance(labels, dict)
    assert labels["org.opencontainers.image.revision"] is None
    assert labels["org.opencontainers.image.source"].pattern == "https://github\\.com/.*"
    labelled = ruleset.rule("labelled")
    assert labelled is not None and labelled.checks[0].setting == {"maintainer": None}
    first, second = ruleset.exceptions
    assert first.rules == ("pinned", "no-latest")
    assert first.expires == date(2027, 3, 31)
    assert first.reason == "migration, ticket OPS-12"
    assert first.namespaces is not None and [str(g) for g in first.namespaces] == ["legacy"]
    assert second.rules == ("*",) and second.namespaces is None and second.expires is None
    assert ruleset.rule("nope") is None


def test_defaults_when_not_given() -> None:
    ruleset = loader.load_rules_text(
        HEADER + "rules:\n  - id: a\n    match: {images: ['**']}\n    require: {digest: true}\n"
    )
    assert ruleset.name == "rules"
    assert ruleset.defaults == rules.Defaults()
    assert ruleset.defaults.action == "deny"
    assert ruleset.defaults.unmatched == "deny"
    assert ruleset.defaults.on_resolve_error == "deny"
    (rule,) = ruleset.rules
    assert [str(g) for g in rule.match.namespaces] == ["*"]
    assert rule.platforms is None


def test_a_file_of_exceptions_alone_joins_the_rules_it_lifts(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(
        "apiVersion: image-policy/v1\nkind: RuleSet\nrules:\n"
        "  - {id: pinned, match: {images: ['**']}, require: {digest: true}}\n"
    )
    (tmp_path / "lifts.yaml").write_text(
        "apiVersion: image-policy/v1\nkind: RuleSet\nexceptions:\n"
        "  - {rules: [pinned], images: ['mycorp/**'], reason: migration}\n"
    )
    ruleset = loader.load_rules([tmp_path])
    assert [r.id for r in ruleset.rules] == ["pinned"]
    assert [e.reason for e in ruleset.exceptions] == ["migration"]
    with pytest.raises(RuleErrors, match="the rule set has no rules"):
        loader.load_rules([tmp_path / "lifts.yaml"])
    (tmp_path / "typo.yaml").write_text(
        "apiVersion: image-policy/v1\nkind: RuleSet\nexceptions:\n"
        "  - {rules: [pined], images: ['x/**'], reason: r}\n"
    )
    with pytest.raises(RuleErrors, match="exception names unknown rule 'pined'"):
        loader.load_rules([tmp_path])


def test_directory_loading_merges_files_and_skips_others() -> None:
    """`.yaml` and `.yml` files in name order; hidden files and other suffixes are skipped."""
    directory = DATA / "valid" / "merged"
    ruleset = loader.load_rules([directory])
    assert ruleset.sources == (str(directory / "00-base.yaml"), str(directory / "10-extra.yml"))
    assert ruleset.name == "base"
    assert [r.id for r in ruleset.rules] == ["pinned", "few-layers"]
    assert ruleset.defaults.action == "warn"  # set to the same value in both files
    assert ruleset.defaults.unmatched == "allow"  # from the first file
    assert ruleset.defaults.on_resolve_error == "allow"  # from the second file
    (exception,) = ruleset.exceptions
    assert exception.rules == ("pinned",)  # names a rule of the other file


def test_exception_for_a_rule_in_a_file_listed_later() -> None:
    directory = DATA / "valid" / "merged"
    ruleset = loader.load_rules([directory / "10-extra.yml", directory / "00-base.yaml"])
    assert [r.id for r in ruleset.rules] == ["few-layers", "pinned"]
    assert ruleset.name == "extra"


@pytest.mark.parametrize(
    "path",
    sorted(p for p in SHIPPED.rglob("*.yaml") if p.parent.name != "tests")
    if SHIPPED.is_dir()
    else [],
    ids=str,
)
def test_shipped_rule_files_load(path: Path) -> None:
    assert loader.lint([path]) == []
    assert loader.load_rules([path]).rules


@pytest.mark.parametrize("name", ["full.yaml", "merged"])
def test_lint_of_valid_files_is_empty(name: str) -> None:
    assert loader.lint([DATA / "valid" / name]) == []


def test_expires_forms() -> None:
    """`expires` may be a YAML date, a quoted ISO date, or a timestamp (its date counts)."""
    text = HEADER + (
        "rules:\n  - id: a\n    match: {images: ['**']}\n    require: {digest: true}\n"
        "exceptions:\n"
        "  - {rules: [a], images: [a], reason: r, expires: 2027-03-31}\n"
        "  - {rules: [a], images: [b], reason: r, expires: '2027-04-01'}\n"
        "  - {rules: [a], images: [c], reason: r, expires: 2027-04-02T10:00:00Z}\n"
    )
    ruleset = loader.load_rules_text(text)
    assert [e.expires for e in ruleset.exceptions] == [
        date(2027, 3, 31),
        date(2027, 4, 1),
        date(2027, 4, 2),
    ]


def test_loaded_patterns_match_as_written() -> None:
    ruleset = loader.load_rules_text(
        HEADER + "rules:\n  - id: hub\n    match:\n      images: ['docker.io/**']\n"
        "      excludeImages: ['docker.io/mycorp/**']\n    require: {tier: [official]}\n"
    )
    (rule,) = ruleset.rules
    assert rule.match.covers(parse("nginx"), None)
    assert rule.match.covers(parse("bitnami/redis"), "prod")
    assert not rule.match.covers(parse("mycorp/app"), None)
    assert not rule.match.covers(parse("ghcr.io/o/app"), None)


def test_rule_file_as_text_default_filename() -> None:
    with pytest.raises(RuleErrors, match=r"^<rules>:1:1: empty rule file$"):
        loader.load_rules_text("")


@pytest.mark.parametrize(
    ("second", "conflict"),
    [("[linux/amd64, linux/arm64]", False), ("[linux/amd64]", True)],
)
def test_platform_defaults_across_files(tmp_path: Path, second: str, conflict: bool) -> None:
    """The same platforms in two files agree; different ones conflict."""
    body = "rules:\n  - id: {}\n    match: {{images: ['**']}}\n    require: {{digest: true}}\n"
    first_file, second_file = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first_file.write_text(
        HEADER + "defaults:\n  platforms: [linux/amd64, linux/arm64]\n" + body.format("a")
    )
    second_file.write_text(HEADER + f"defaults:\n  platforms: {second}\n" + body.format("b"))
    expected = (
        [
            f"{second_file}:4:14: defaults.platforms: conflicts with the value set at "
            f"{first_file}:4:14"
        ]
        if conflict
        else []
    )
    assert [str(e) for e in loader.lint([tmp_path])] == expected


def test_a_single_path_is_not_taken_for_a_list_of_characters() -> None:
    root = Path(__file__).resolve().parents[2] / "rules" / "default.yaml"
    assert loader.load_rules(str(root)).rules == loader.load_rules([root]).rules
    assert loader.lint(root) == []


def test_lint_reports_duplicates_and_unknown_rules_with_field_errors_in_one_pass(
    tmp_path: Path,
) -> None:
    """A duplicate id (of a rule with a field error) and an exception naming an unknown rule
    (in an exception with its own error) are reported with the field errors, not after."""
    path = tmp_path / "r.yaml"
    path.write_text(
        "apiVersion: image-policy/v1\n"
        "kind: RuleSet\n"
        "metadata: {name: x}\n"
        "rules:\n"
        "  - id: a\n"
        '    match: {images: ["**"]}\n'
        "    require: {maxLayers: ten}\n"
        "  - id: a\n"
        '    match: {images: ["**"]}\n'
        "    require: {digest: true}\n"
        "exceptions:\n"
        "  - rules: [nope, a]\n"
        '    images: ["x"]\n'
        "    reason: r\n"
        "    expires: someday\n"
    )
    messages = [f"{e.location.line}: {e.path}: {e.message}" for e in loader.lint([path])]
    assert messages[0] == '7: rules[0].require.maxLayers: expected a positive integer, got "ten"'
    assert "8: rules[1].id: duplicate rule id 'a' (first defined at " + f"{path}:5:5)" in messages
    assert "12: exceptions[0].rules[0]: exception names unknown rule 'nope'" in messages
    assert any(m.startswith("15: exceptions[0].expires:") for m in messages)
    assert len(messages) == 4
