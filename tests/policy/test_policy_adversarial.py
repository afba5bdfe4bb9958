"""Hostile tool calls and requests against the evaluator: what celgate cannot read one way is a denial.

The model's tool-call arguments and names are attacker-controlled. When a
rule reads ``tool.arguments`` and the text is not one unambiguous JSON
object, reading it as ``{}`` would let ``has()`` guards skip a deny rule (or
let an allow rule pass) while the app reads the text another way.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from celgate.policy import ANONYMOUS, Effect, Mode, Point, PolicyLoadError, PolicySet, ToolCall, load_policies
from celgate.policy.backends import BACKENDS
from celgate.policy.cli import build_request
from tests.helpers import write_yaml

ALLOW_ALL_BUT_ETC = """\
version: 1
defaults: {decision: allow}
rules:
  - name: no-etc
    on: tool_call
    tools: ["read_file"]
    when: 'has(tool.arguments.path) && tool.arguments.path.startsWith("/etc")'
    effect: deny
    reason: not /etc
"""

ONLY_LS = """\
version: 1
rules:
  - name: only-ls
    on: tool_call
    tools: ["run"]
    when: '!has(tool.arguments.cmd) || tool.arguments.cmd == "ls"'
    effect: allow
  - name: free-text
    on: tool_call
    tools: ["sql"]
    when: 'tool.raw_arguments.startsWith("SELECT")'
    effect: allow
"""

UNREADABLE = {
    "duplicate key, safe value last": '{"path": "/etc/passwd", "path": "/workspace/a"}',
    "duplicate key, nested": '{"o": {"path": "/etc/passwd", "path": "/w"}}',
    "trailing data": '{"path": "/etc/passwd"} {"path": "/w"}',
    "trailing garbage": '{"path": "/etc/passwd"}x',
    "a byte order mark": '\ufeff{"path": "/etc/passwd"}',
    "NaN": '{"path": "/etc/passwd", "n": NaN}',
    "Infinity": '{"path": "/etc/passwd", "n": -Infinity}',
    "a number out of range": '{"path": "/etc/passwd", "n": -1e400}',
    "a lone surrogate": '{"path": "/etc/passwd\\ud800"}',
    "a raw lone surrogate": '{"path": "/etc/passwd\ud800"}',
    "deep nesting": '{"path": "/etc/passwd", "a": ' + "[" * 100_000 + "]" * 100_000 + "}",
    "a list": '[{"path": "/etc/passwd"}]',
    "a string": '"/etc/passwd"',
    "null": "null",
    "only whitespace": "  ",
    "not JSON": "path=/etc/passwd",
}


def load(directory: Path, text: str, backend: str) -> PolicySet:
    write_yaml(directory, text)
    return load_policies(directory, backend)


def decide(policy: PolicySet, name: str, raw: str, kind: str = "function") -> tuple[Effect, Mode, str | None, str]:
    tool = ToolCall(name, raw, "call_1", "upstream", kind)
    decision = policy.check_tool_call(ANONYMOUS, build_request({"model": "m"}), tool)
    explained = policy.explain(decision.point, ANONYMOUS, build_request({"model": "m"}), tool).decision
    assert (explained.effect, explained.rule, explained.message) == (decision.effect, decision.rule, decision.message)
    return decision.effect, decision.mode, decision.rule, decision.message


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("raw", UNREADABLE.values(), ids=UNREADABLE.keys())
def test_unreadable_arguments_fire_a_deny_rule_that_reads_them(tmp_path: Path, backend: str, raw: str) -> None:
    effect, mode, rule, message = decide(load(tmp_path, ALLOW_ALL_BUT_ETC, backend), "read_file", raw)
    assert (effect, mode, rule) == (Effect.DENY, Mode.ENFORCE, "no-etc")
    assert "arguments are not one unambiguous JSON object" in message


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("raw", UNREADABLE.values(), ids=UNREADABLE.keys())
def test_unreadable_arguments_never_pass_an_allow_rule_that_reads_them(tmp_path: Path, backend: str, raw: str) -> None:
    effect, _, rule, message = decide(load(tmp_path, ONLY_LS, backend), "run", raw.replace("path", "cmd"))
    assert (effect, rule) == (Effect.DENY, None)
    assert "arguments are not one unambiguous JSON object" in message


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize(
    ("name", "raw", "kind"),
    [
        ("read_file", '{"path": "/workspace/a"}', "function"),
        ("read_file", "", "function"),  # no arguments: some providers send "" for {}
        ("read_file", ' \n{"path": "/workspace/a"}\n', "function"),
        ("read_file", "SELECT path FROM /etc", "custom"),  # free text: tool.arguments is {}
        ("other", '{"path": "/etc/a", "path": "/etc/b"}', "function"),  # no rule reads these arguments
    ],
)
def test_readable_or_unread_arguments_pass(tmp_path: Path, backend: str, name: str, raw: str, kind: str) -> None:
    assert decide(load(tmp_path, ALLOW_ALL_BUT_ETC, backend), name, raw, kind)[0] is Effect.ALLOW


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_a_custom_tool_input_that_looks_like_an_object_must_be_one(tmp_path: Path, backend: str) -> None:
    policy = load(tmp_path, ALLOW_ALL_BUT_ETC, backend)
    assert decide(policy, "read_file", '{"path": "/etc/a", "path": "/w"}', "custom")[0] is Effect.DENY
    assert decide(policy, "read_file", '{"path": "/etc/a"}', "custom")[0] is Effect.DENY
    assert decide(policy, "read_file", '{"path": "/w"}', "custom")[0] is Effect.ALLOW


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_a_rule_reading_only_the_raw_text_decides_on_it(tmp_path: Path, backend: str) -> None:
    policy = load(tmp_path, ONLY_LS, backend)
    assert decide(policy, "sql", "SELECT 1 {", "custom")[0] is Effect.ALLOW
    assert decide(policy, "sql", "SELECT \ud800", "custom")[0] is Effect.DENY  # not text CEL can hold: an error


NO_SHELL = """\
version: 1
defaults: {decision: allow}
rules:
  - name: no-shell
    on: tool_call
    tools: ["shell.*"]
    effect: deny
  - name: no-o1
    on: request
    models: ["o1"]
    effect: deny
"""

UNPLAUSIBLE_NAMES = {
    "trailing space": "shell.exec ",
    "leading tab": "\tshell.exec",
    "NUL": "shell.exec\x00",
    "newline": "shell.exec\n",
    "zero-width space": "shell\u200b.exec",
    "right-to-left override": "\u202eshell.exec",
    "no-break space": "shell.exec\u00a0",
    "fullwidth letters": "\uff53hell.exec",
    "decomposed accent": "shell.exe\u0301c",
    "a lone surrogate": "shell.exec\ud800",
    "empty": "",
    "too long": "shell." + "x" * 300,
}


@pytest.mark.parametrize("name", UNPLAUSIBLE_NAMES.values(), ids=UNPLAUSIBLE_NAMES.keys())
def test_a_tool_name_an_app_might_normalise_is_denied(tmp_path: Path, name: str) -> None:
    effect, mode, rule, message = decide(load(tmp_path, NO_SHELL, "cel-expr"), name, "{}")
    assert (effect, mode, rule) == (Effect.DENY, Mode.ENFORCE, "celgate:tool-name")
    assert "not a plausible tool name" in message


@pytest.mark.parametrize(
    "name", ["Shell.exec", "read_file", "mcp/server.tool", "a*b", "[x]", "what?", "\u043fоиск", "calc:add"]
)
def test_names_an_app_looks_up_exactly_are_decided_by_the_rules(tmp_path: Path, name: str) -> None:
    """Globs are case-sensitive and metacharacters in a name are literal: ``Shell.exec`` is another tool."""
    assert decide(load(tmp_path, NO_SHELL, "cel-expr"), name, "{}")[0] is Effect.ALLOW


@pytest.mark.parametrize("model", ["o1 ", " o1", "o1\x00", "o1\u200b", "\uff4f1"])
def test_a_model_name_an_upstream_might_normalise_is_denied(tmp_path: Path, model: str) -> None:
    policy = load(tmp_path, NO_SHELL, "cel-expr")
    decision = policy.check_request(ANONYMOUS, build_request({"model": model}))
    assert (decision.effect, decision.mode, decision.rule) == (Effect.DENY, Mode.ENFORCE, "celgate:model-name")
    explained = policy.explain(decision.point, ANONYMOUS, build_request({"model": model}), None).decision
    assert (explained.effect, explained.rule) == (decision.effect, decision.rule)


def test_offered_tools_with_such_names_are_not_usable(tmp_path: Path) -> None:
    policy = load(tmp_path, NO_SHELL, "cel-expr")
    usable = policy.usable_tools(ANONYMOUS, build_request({"model": "m"}), ["read_file", "read_file ", "shell.exec"])
    assert usable == {"read_file"}


def test_an_allow_rule_in_dry_run_is_a_load_error(tmp_path: Path) -> None:
    """Dry-run softens denials only: an allow rule marked dry-run would allow for real while its author trials it."""
    write_yaml(tmp_path, "version: 1\nrules: [{name: trial, on: request, effect: allow, mode: dry-run}]\n")
    with pytest.raises(PolicyLoadError) as caught:
        load_policies(tmp_path)
    [problem] = caught.value.problems
    assert problem.rule == "trial" and "would allow for real" in problem.message
    write_yaml(tmp_path, "version: 1\ndefaults: {mode: dry-run}\nrules: [{name: a, on: request, effect: allow}]\n")
    assert load_policies(tmp_path).rules[0].mode is Mode.DRY_RUN  # a set in dry-run: everything passes anyway


@pytest.mark.parametrize(
    ("body", "blocked"),
    [
        ({"max_tokens": 5000}, True),
        ({"max_completion_tokens": 5000}, True),
        ({"max_output_tokens": 5000}, True),
        ({"max_tokens": 10, "max_output_tokens": 5000}, True),
        ({"max_tokens": 10, "max_completion_tokens": 10.5}, False),
    ],
)
def test_request_max_tokens_is_the_largest_output_limit(tmp_path: Path, body: dict[str, object], blocked: bool) -> None:
    """The CLI and the proxy share this reading (``request_variables``)."""
    cap = "version: 1\ndefaults: {decision: allow}\nrules:\n  - name: cap\n    on: request\n"
    cap += "    when: has(request.max_tokens) && request.max_tokens > 1000\n"
    cap += "    effect: deny\n"
    policy = load(tmp_path, cap, "cel-expr")
    assert policy.check_request(ANONYMOUS, build_request({"model": "m", **body})).blocked is blocked


def test_a_tool_call_without_a_model_meets_every_deny_rule_scoped_by_model(tmp_path: Path) -> None:
    """A stored object read back names no model: the deny that applies to the model that made the call applies."""
    text = """\
version: 1
defaults: {decision: allow}
rules:
  - {name: gpt-runs-nothing, on: tool_call, models: ["gpt-*"], tools: ["run_*"], effect: deny}
  - {name: o3-may-run, on: tool_call, models: ["o3"], tools: ["run_*"], effect: allow}
  - {name: gpt-requests, on: request, models: ["gpt-*"], effect: deny}
"""
    policy = load(tmp_path, text, "cel-expr")
    stored = ToolCall("run_cmd", "{}", "c1", "stored")
    for model, rule in (("", "gpt-runs-nothing"), ("gpt-4o", "gpt-runs-nothing"), ("o3", "o3-may-run")):
        spec = {"path": "/v1/responses/resp_1", "method": "GET"}
        info = build_request({**spec, "model": model} if model else spec)
        assert policy.check_tool_call(ANONYMOUS, info, stored).rule == rule
        assert policy.explain(Point.TOOL_CALL, ANONYMOUS, info, stored).decision.rule == rule
    files = build_request({"path": "/v1/files", "method": "GET"})
    assert not policy.check_request(ANONYMOUS, files).blocked  # only tool calls: a read without a model passes
