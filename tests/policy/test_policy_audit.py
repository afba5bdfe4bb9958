"""audit_record: one JSON-ready dict per decision; never a key; arguments only when asked."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from celgate.policy import PolicySet, Principal, ToolCall, audit_record, load_policies
from celgate.policy.cli import build_request
from tests.helpers import write_yaml

POLICY = """
    version: 1
    principals:
      - {id: bench-app, key_sha256: c00397de4384b5bbaf14c02fe1ec7020d28d1eeab6a722c576c84b6678c41c29}
    rules:
      - {name: no-shell, on: tool_call, tools: ["shell*"], effect: deny, action: error, reason: no shell}
      - {name: shaky, on: tool_call, tools: ["shell*"], when: 'tool.arguments.nope == 1', effect: allow}
"""


def test_audit_record_of_a_denied_tool_call(tmp_path: Path) -> None:
    write_yaml(tmp_path, POLICY, "p.yaml")
    policy = load_policies(tmp_path)
    principal = policy.resolve_principal("sk-bench")
    tool = ToolCall("shell.exec", '{"cmd": "rm -rf /"}', "call_7", "upstream")
    decision = policy.check_tool_call(principal, build_request({"model": "m"}), tool)
    record = audit_record(decision, request_id="req-1", principal=principal, tool=tool, include_arguments=False)
    assert record == {
        "time": record["time"],
        "request_id": "req-1",
        "principal": "bench-app",
        "point": "tool_call",
        "subject": "shell.exec",
        "effect": "deny",
        "would_deny": False,
        "rule": "no-shell",
        "reason": "no shell",
        "mode": "enforce",
        "matched": ["no-shell"],
        "errors": [{"rule": "shaky", "error": record["errors"][0]["error"]}],
        "eval_us": record["eval_us"],
        "policy_version": policy.version,
        "tool_call_id": "call_7",
        "source": "upstream",
        "action": "error",
    }
    assert record["time"].endswith("Z") and datetime.fromisoformat(record["time"]).tzinfo is not None
    assert record["eval_us"] > 0 and record["errors"][0]["error"]
    text = json.dumps(record)
    assert "sk-bench" not in text and "rm -rf" not in text

    with_arguments = audit_record(decision, request_id="req-1", principal=principal, tool=tool, include_arguments=True)
    assert with_arguments["arguments"] == '{"cmd": "rm -rf /"}'


def test_audit_record_of_a_request() -> None:
    decision = PolicySet.allow_all().check_request(Principal("p", {"secret_attr": "x"}), build_request({"model": "m"}))
    record = audit_record(decision, request_id="r", principal=Principal("p", {}), tool=None, include_arguments=True)
    assert (record["point"], record["subject"], record["effect"], record["rule"]) == ("request", "m", "allow", None)
    assert "arguments" not in record and "tool_call_id" not in record and "secret_attr" not in json.dumps(record)
