"""Loading policy files: structure, lint and compile errors, each with file, line and rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from celgate.policy import Effect, Mode, PolicyLoadError, PolicySet, Problem, load_policies
from celgate.policy.backends import BACKENDS
from tests.helpers import write_yaml


def problems(directory: Path, backend: str = "cel-expr") -> list[Problem]:
    with pytest.raises(PolicyLoadError) as caught:
        load_policies(directory, backend)
    assert str(caught.value) == "\n".join(map(str, caught.value.problems))
    return caught.value.problems


def only_problem(directory: Path, backend: str = "cel-expr") -> Problem:
    found = problems(directory, backend)
    assert len(found) == 1, found
    return found[0]


def test_minimal_policy_loads(tmp_path: Path) -> None:
    write_yaml(tmp_path, "version: 1\n")
    policy = load_policies(tmp_path)
    assert isinstance(policy, PolicySet)
    assert (policy.rule_count, policy.files, policy.backend) == (0, ("policy.yaml",), "cel-expr")
    assert policy.defaults.decision is Effect.DENY and policy.defaults.mode is Mode.ENFORCE
    assert len(policy.version) == 12


def test_files_are_merged_and_the_version_is_a_content_hash(tmp_path: Path) -> None:
    write_yaml(tmp_path, "version: 1\nrules: [{name: a, on: request, effect: allow}]\n", "a.yaml")
    write_yaml(tmp_path, "version: 1\nrules: [{name: b, on: request, effect: deny}]\n", "b.yml")
    write_yaml(tmp_path, "not: loaded\n", ".hidden.yaml")
    (tmp_path / "tests").mkdir()
    write_yaml(tmp_path / "tests", "cases: []\n", "cases.yaml")
    first = load_policies(tmp_path)
    assert first.files == ("a.yaml", "b.yml") and [r.name for r in first.rules] == ["a", "b"]
    assert load_policies(tmp_path).version == first.version
    write_yaml(tmp_path, "version: 1\nrules: [{name: b, on: request, effect: allow}]\n", "b.yml")
    assert load_policies(tmp_path).version != first.version


def test_missing_directory_and_empty_directory(tmp_path: Path) -> None:
    assert only_problem(tmp_path / "nope").message == "policy directory not found"
    assert "no policy files" in only_problem(tmp_path).message


def test_yaml_syntax_error_has_a_line(tmp_path: Path) -> None:
    path = str(write_yaml(tmp_path, "version: 1\nrules:\n  - name: [unclosed\n"))
    problem = only_problem(tmp_path)
    assert problem.file == path and problem.line == 4 and problem.message.startswith("invalid YAML")


def test_structure_problems_are_all_reported_with_positions(tmp_path: Path) -> None:
    path = str(
        write_yaml(
            tmp_path,
            """
        defaults: {decision: maybe, mode: loud, colour: red}
        principals:
          - {id: a, key_sha256: c00397de4384b5bbaf14c02fe1ec7020d28d1eeab6a722c576c84b6678c41c29}
          - {id: b, key_sha256: C00397DE4384B5BBAF14C02FE1EC7020D28D1EEAB6A722C576C84B6678C41C29}
          - {id: c, key_sha256: nothex}
          - {id: anonymous, key_env: X}
          - {team: x}
        rules:
          - name: typo
            on: request
            effect: allow
            wen: 'true'
          - name: bad-enums
            on: response
            effect: permit
            mode: sometimes
          - name: tools-on-request
            on: request
            tools: [x]
            effect: deny
            action: error
          - name: action-on-allow
            on: tool_call
            effect: allow
            action: strip
          - name: empty-globs
            on: tool_call
            models: []
            effect: allow
          - name: incomplete
          - {on: request, effect: allow}
          - name: dup-key
            on: request
            on: tool_call
            effect: deny
        """,
        )
    )
    found = {(p.line, p.rule, p.message) for p in problems(tmp_path)}
    assert all(p.file == path for p in problems(tmp_path))
    expected = {
        (1, None, "missing `version: 1`"),
        (1, None, "`defaults.decision` must be one of allow | deny, not 'maybe'"),
        (1, None, "`defaults.mode` must be one of enforce | dry-run, not 'loud'"),
        (1, None, "unknown key 'colour' in defaults"),
        (4, "b", "same key as principal 'a'"),
        (5, "c", "`key_sha256` must be 64 hex digits (sha256 of the key)"),
        (6, "anonymous", "principal id 'anonymous' is reserved for callers without a known key"),
        (7, None, "principal needs an `id` (a non-empty string)"),
        (12, "typo", "unknown key 'wen' in rule (did you mean 'when'?)"),
        (14, "bad-enums", "`on` must be one of request | tool_call, not 'response'"),
        (15, "bad-enums", "`effect` must be one of allow | deny, not 'permit'"),
        (16, "bad-enums", "`mode` must be one of enforce | dry-run, not 'sometimes'"),
        (17, "tools-on-request", "`tools` applies only to `on: tool_call` rules"),
        (17, "tools-on-request", "`action` applies only to `on: tool_call` rules"),
        (22, "action-on-allow", "`action` applies only to deny rules"),
        (28, "empty-globs", "`models` must be a non-empty list of glob patterns"),
        (30, "incomplete", "rule needs `on`"),
        (30, "incomplete", "rule needs `effect`"),
        (31, None, "rule needs a `name`"),
        (34, "dup-key", "duplicate key 'on' in rule"),
    }
    assert found == expected


def test_duplicates_across_files(tmp_path: Path) -> None:
    write_yaml(tmp_path, "version: 1\nrules:\n  - {name: same, on: request, effect: allow}\n", "a.yaml")
    path_b = str(write_yaml(tmp_path, "version: 1\n\nrules:\n  - {name: same, on: request, effect: deny}\n", "b.yaml"))
    problem = only_problem(tmp_path)
    assert (problem.file, problem.line, problem.rule) == (path_b, 4, "same")
    assert problem.message == f"duplicate rule name (first at {tmp_path / 'a.yaml'}:3)"


def test_conflicting_defaults_across_files(tmp_path: Path) -> None:
    write_yaml(tmp_path, "version: 1\ndefaults: {decision: deny}\n", "a.yaml")
    write_yaml(tmp_path, "version: 1\ndefaults: {decision: allow, mode: dry-run}\n", "b.yaml")
    assert only_problem(tmp_path).message == f"defaults.decision conflicts with {tmp_path / 'a.yaml'}:2"


def test_same_defaults_in_two_files_are_fine(tmp_path: Path) -> None:
    write_yaml(tmp_path, "version: 1\ndefaults: {decision: allow}\n", "a.yaml")
    write_yaml(tmp_path, "version: 1\ndefaults: {decision: allow}\n", "b.yaml")
    assert load_policies(tmp_path).defaults.decision is Effect.ALLOW


def test_unsupported_version_and_bad_deny_message(tmp_path: Path) -> None:
    write_yaml(tmp_path, 'version: 2\ndefaults: {deny_message: "{who} was denied"}\n')
    messages = {p.message for p in problems(tmp_path)}
    assert messages == {
        "unsupported version '2'; expected 1",
        "deny_message: bad placeholder 'who'; use {subject}, {rule}, {reason}",
    }


def test_on_is_a_key_not_a_yaml_boolean(tmp_path: Path) -> None:
    write_yaml(tmp_path, "version: 1\nrules:\n  - name: r\n    on: tool_call\n    effect: deny\n")
    assert load_policies(tmp_path).rules[0].point.value == "tool_call"


def test_principal_attributes_must_be_json_like(tmp_path: Path) -> None:
    write_yaml(tmp_path, "version: 1\nprincipals:\n  - {id: a, key_env: K, since: 2024-01-01}\n")
    assert only_problem(tmp_path).message == "attribute 'since': unsupported value type date (quote it)"


def test_key_env(tmp_path: Path) -> None:
    write_yaml(tmp_path, "version: 1\nprincipals:\n  - {id: batch, key_env: BATCH_KEY, team: data}\n")
    policy = load_policies(tmp_path, environ={"BATCH_KEY": "sk-batch"})
    assert policy.resolve_principal("sk-batch").id == "batch"
    unset = load_policies(tmp_path, environ={})
    assert unset.resolve_principal("sk-batch").id == "anonymous"
    assert unset.principals["batch"].attributes == {"team": "data"}
    (warning,) = unset.warnings
    assert (warning.line, warning.rule) == (3, "batch") and "$BATCH_KEY is not set" in warning.message


WHEN_ERRORS = [
    ("syntax", "'principal.team ==== 1'", "Syntax error"),
    ("undeclared", "'user.id == 1'", "undeclared reference to 'user"),
    (
        "unknown-function",
        "'principal.team.lowerAscii() == \"a\"'",
        "function 'lowerAscii' is not in celgate's CEL subset",
    ),
    ("function-form-matches", "'matches(principal.team, \"^a\")'", "use the method form of matches"),
    ("bad-regex", "'principal.team.matches(\"(unclosed\")'", "invalid regular expression '(unclosed'"),
    ("map-filter-form", "'[1].map(x, x > 0, x) == [1]'", "map(x, filter, transform) is not in celgate's CEL subset"),
    ("empty", "''", "`when` must be a non-empty string"),
]


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize(("name", "when", "message"), WHEN_ERRORS, ids=[e[0] for e in WHEN_ERRORS])
def test_when_errors(tmp_path: Path, backend: str, name: str, when: str, message: str) -> None:
    path = str(
        write_yaml(
            tmp_path, f"version: 1\nrules:\n  - name: {name}\n    on: request\n    effect: deny\n    when: {when}\n"
        )
    )
    problem = only_problem(tmp_path, backend)
    assert (problem.file, problem.line, problem.rule) == (path, 6, name)
    assert message in problem.message


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_cel_position_is_reported(tmp_path: Path, backend: str) -> None:
    write_yaml(
        tmp_path, "version: 1\nrules:\n  - name: r\n    on: request\n    effect: deny\n    when: 'true && nosuch'\n"
    )
    assert only_problem(tmp_path, backend).message == "when at 1:9: undeclared reference to 'nosuch'"


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_request_rule_reading_tool_is_a_load_error(tmp_path: Path, backend: str) -> None:
    write_yaml(
        tmp_path,
        """
        version: 1
        rules:
          - name: never-matches
            on: request
            effect: deny
            when: >-
              tool.name == "shell"
        """,
    )
    problem = only_problem(tmp_path, backend)
    assert problem.line == 7  # the folded scalar's text starts on the line after `when: >-`
    assert "request rules cannot read `tool`" in problem.message


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_macro_variables_are_declared(tmp_path: Path, backend: str) -> None:
    write_yaml(
        tmp_path,
        """
        version: 1
        rules:
          - name: ok
            on: request
            effect: deny
            when: request.tools.exists(tool, tool.startsWith("x")) && [1, 2].all(n, n > 0)
          - name: scoped
            on: request
            effect: deny
            when: request.tools.exists(t, true) && t == "x"
        """,
    )
    problem = only_problem(tmp_path, backend)
    assert problem.rule == "scoped" and "undeclared reference to 't'" in problem.message


def test_rules_are_compiled_once_with_their_analysis(tmp_path: Path) -> None:
    write_yaml(
        tmp_path,
        """
        version: 1
        rules:
          - {name: stable, on: tool_call, when: 'principal.team == "a" && tool.name == "x"', effect: allow}
          - {name: args, on: tool_call, when: 'tool.arguments.x == 1', effect: allow}
          - {name: bare, on: tool_call, effect: deny, mode: dry-run, action: error}
        """,
    )
    stable, args, bare = load_policies(tmp_path).rules
    assert stable.cache_paths == (("principal", "team"), ("tool", "name")) and not stable.reads_arguments
    assert args.cache_paths is None and args.reads_arguments and args.roots == {"tool"}
    assert bare.program is None and bare.mode is Mode.DRY_RUN and bare.action.value == "error"
    assert (stable.line, args.line, bare.line) == (3, 4, 5)


def test_unknown_backend(tmp_path: Path) -> None:
    write_yaml(tmp_path, "version: 1\n")
    with pytest.raises(ValueError, match="unknown CEL backend 'rust'"):
        load_policies(tmp_path, "rust")
