"""Newer wire-format facts: ``tool.type``, ``request.tool_definitions``, hosted tools in ``request.tools``."""

from __future__ import annotations

from pathlib import Path

import pytest

from celgate.policy import ANONYMOUS, PolicySet, RequestInfo, ToolCall, audit_record, load_policies
from celgate.policy.backends import BACKENDS
from celgate.policy.cli import CaseError, build_request, build_tool
from celgate.policy.context import request_variables, tool_variables
from tests.helpers import write_yaml

POLICY = """
    version: 1
    rules:
      - {name: shell-functions, on: tool_call, tools: ["shell"], when: 'tool.type == "function"', effect: allow}
      - {name: local-shell, on: tool_call, tools: ["shell"], when: 'tool.type == "local_shell"', effect: deny}
      - {name: typed-glob, on: tool_call, tools: ["edit*"], when: 'glob(tool.type, "apply_*")', effect: allow}
      - name: mcp-labels
        on: request
        when: request.tool_definitions.all(t, t.type != "mcp" || t.server_label in ["docs", "search"])
        effect: allow
      - {name: no-hosted-code, on: request, when: '"code_interpreter" in request.tools', effect: deny}
"""


def load(tmp_path: Path, backend: str) -> PolicySet:
    write_yaml(tmp_path, POLICY, "p.yaml")
    return load_policies(tmp_path, backend)


def test_the_new_facts_reach_cel() -> None:
    call = ToolCall("run_sql", "SELECT 1", "call_1", "upstream", type="custom")
    assert tool_variables(call)["type"] == "custom" and tool_variables(call)["arguments"] == {}
    assert ToolCall("f", "{}", "c", "upstream").type == "function"
    definitions = ({"type": "mcp", "name": "", "server_label": "docs"}, {"type": "function", "name": "f"})
    info = RequestInfo("m", None, False, "/v1/responses", {}, ("mcp", "f"), {}, tool_definitions=definitions)
    variables = request_variables(info)
    assert variables["tool_definitions"] == [dict(d) for d in definitions] and variables["method"] == "POST"
    assert all(type(d) is dict for d in variables["tool_definitions"])  # cel-expr converts dicts, not Mappings


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_the_same_name_with_another_type_is_decided_apart(tmp_path: Path, backend: str) -> None:
    """Candidates are memoized by name, and outcomes cached by the fields read: ``tool.type`` is one of them."""
    policy = load(tmp_path, backend)
    request = build_request({"model": "m"})
    function = ToolCall("shell", '{"cmd": "ls"}', "c1", "upstream")
    builtin = ToolCall("shell", '{"cmd": "ls"}', "c2", "upstream", type="local_shell")
    for _ in range(2):  # the second round runs on warm caches
        assert policy.check_tool_call(ANONYMOUS, request, function).rule == "shell-functions"
        assert policy.check_tool_call(ANONYMOUS, request, builtin).rule == "local-shell"
    rules = {rule.name: rule for rule in policy.rules}
    assert rules["local-shell"].cache_paths == (("tool", "type"),) and not rules["local-shell"].reads_arguments
    patch = ToolCall("edit_file", "*** Begin Patch", "c3", "upstream", type="apply_patch")
    assert policy.check_tool_call(ANONYMOUS, request, patch).rule == "typed-glob"
    assert policy.check_tool_call(ANONYMOUS, request, ToolCall("edit_file", "{}", "c4", "upstream")).blocked


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_tool_definitions_and_hosted_tools_in_request_rules(tmp_path: Path, backend: str) -> None:
    policy = load(tmp_path, backend)

    def decide(tools: list[str], definitions: list[dict[str, str]]) -> str | None:
        request = build_request({"model": "m", "tools": tools, "tool_definitions": definitions})
        return policy.check_request(ANONYMOUS, request).rule

    docs = {"type": "mcp", "name": "", "server_label": "docs", "server_url": "https://x/mcp"}
    other = {**docs, "server_label": "other"}
    for _ in range(2):
        assert decide(["mcp"], [docs]) == "mcp-labels"
        assert decide(["mcp"], [other]) is None
        assert decide(["code_interpreter"], [{"type": "code_interpreter", "name": ""}]) == "no-hosted-code"
    rules = {rule.name: rule for rule in policy.rules}
    assert rules["mcp-labels"].cache_paths == (("request", "tool_definitions"),)


def test_audit_records_a_tool_type_other_than_function(tmp_path: Path) -> None:
    policy = load(tmp_path, "cel-expr")
    call = ToolCall("shell", "{}", "c1", "upstream", type="local_shell")
    decision = policy.check_tool_call(ANONYMOUS, build_request({"model": "m"}), call)
    record = audit_record(decision, request_id="r", principal=ANONYMOUS, tool=call, include_arguments=False)
    assert (record["tool_type"], record["rule"], record["action"]) == ("local_shell", "local-shell", "strip")
    function = ToolCall("shell", "{}", "c2", "upstream")
    plain = audit_record(decision, request_id="r", principal=ANONYMOUS, tool=function, include_arguments=False)
    assert "tool_type" not in plain


def test_case_builders_take_the_new_fields() -> None:
    tool = build_tool({"name": "run_sql", "type": "custom", "arguments": "SELECT 1"})
    assert (tool.type, tool.raw_arguments) == ("custom", "SELECT 1")
    request = build_request({"model": "m", "method": "get", "path": "/v1/models", "tool_definitions": [{"type": "x"}]})
    assert (request.method, request.tool_definitions) == ("GET", ({"type": "x"},))
    with pytest.raises(CaseError, match="tool_definitions must be a list of mappings"):
        build_request({"model": "m", "tool_definitions": ["x"]})
    with pytest.raises(CaseError, match=r"request\.model must be a string"):
        build_request({"model": 1})
    assert build_request({"path": "/v1/batches"}).model == ""  # ungoverned: decided by routes, no model needed
