"""`celgate policy check|test|explain`: output and exit codes."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from celgate.policy.cli import main
from tests.helpers import write_yaml

REPO = Path(__file__).resolve().parents[2]
POLICY = """
    version: 1
    principals:
      - {id: bench-app, key_sha256: c00397de4384b5bbaf14c02fe1ec7020d28d1eeab6a722c576c84b6678c41c29, team: search}
    rules:
      - {name: search-models, on: request, models: ["gpt-*"], when: 'principal.team == "search"', effect: allow}
      - {name: weather, on: tool_call, tools: [get_weather], when: 'size(tool.arguments.location) < 100', effect: allow}
      - {name: no-shell, on: tool_call, tools: ["shell*"], effect: deny, reason: no shell}
"""


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), out)
    return code, out.getvalue()


@pytest.fixture
def policies(tmp_path: Path) -> Path:
    return write_yaml(tmp_path / "policies", POLICY, "main.yaml").parent


def test_check_ok(policies: Path) -> None:
    code, out = run("check", str(policies))
    assert code == 0
    assert out.startswith("ok: 3 rules in 1 file (version ") and out.rstrip().endswith("backend cel-expr)")


def test_check_prints_every_problem(policies: Path) -> None:
    (policies / "bad.yaml").write_text(
        "version: 1\nrules:\n  - {name: x, on: request, effect: allow, when: 'nope'}\n  - {name: y}\n"
    )
    code, out = run("check", str(policies), "--cel-backend", "celpy")
    assert code == 1
    assert out.splitlines() == [
        f"{policies / 'bad.yaml'}:4: y: rule needs `on`",
        f"{policies / 'bad.yaml'}:4: y: rule needs `effect`",
        f"{policies / 'bad.yaml'}:3: x: when at 1:1: undeclared reference to 'nope'",
    ]


def test_check_default_directory_is_policies_and_warnings_are_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    monkeypatch.delenv("CELGATE_BATCH_KEY", raising=False)
    code, out = run("check")
    assert code == 0 and "rules in 1 file" in out
    assert "nightly-batch: warning: $CELGATE_BATCH_KEY is not set" in out


def write_cases(tmp_path: Path, text: str) -> str:
    return str(write_yaml(tmp_path, text, "cases.yaml"))


def test_test_passes(policies: Path, tmp_path: Path) -> None:
    cases = write_cases(
        tmp_path,
        """
        - name: search model
          key: sk-bench
          request: {model: gpt-4o}
          expect: {effect: allow, rule: search-models}
        - name: shell
          principal: bench-app
          request: {model: gpt-4o}
          tool: {name: shell.exec, arguments: {cmd: ls}}
          expect: {effect: deny, rule: no-shell}
        """,
    )
    code, out = run("test", str(policies), "--cases", cases)
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["RESULT", "CASE", "EXPECTED", "GOT"]
    assert lines[1].startswith("PASS    search model") and lines[-1] == "PASS: 2/2"


def test_test_reports_fail_and_error(policies: Path, tmp_path: Path) -> None:
    cases = write_cases(
        tmp_path,
        """
        cases:
          - name: wrong expectation
            principal: anonymous
            request: {model: gpt-4o}
            expect: {effect: allow}
          - name: malformed
            request: {}
            expect: {effect: allow}
          - name: weather error
            principal: bench-app
            request: {model: gpt-4o}
            tool: {name: get_weather, arguments: {}}
            expect: {effect: deny, rule: null}
        """,
    )
    code, out = run("test", str(policies), "--cases", cases)
    lines = out.splitlines()
    assert code == 1 and lines[-1] == "FAIL: 1/3"
    assert lines[1].startswith("FAIL    wrong expectation") and "  allow  " in lines[1]
    assert "deny by default [error in search-models: " in lines[1]
    assert lines[2].startswith("ERROR   malformed") and lines[2].endswith("request.model is required")
    assert lines[3].startswith("PASS    weather error") and "[error in weather:" in lines[3]
    code, out = run("test", str(policies), "--cases", cases, "--run", "^weather")
    assert code == 0 and out.splitlines()[-1] == "PASS: 1/1"


def test_test_with_no_cases_fails(policies: Path, tmp_path: Path) -> None:
    assert run("test", str(policies), "--cases", write_cases(tmp_path, "[]"))[0] == 1
    code, out = run("test", str(policies), "--cases", str(tmp_path / "missing.yaml"))
    assert code == 1 and "missing.yaml" in out


def test_explain_tool_call(policies: Path) -> None:
    code, out = run(
        "explain",
        str(policies),
        "--key",
        "sk-bench",
        "--model",
        "gpt-4o",
        "--tool",
        "get_weather",
        "--args",
        '{"location": "Paris"}',
    )
    lines = out.splitlines()
    assert code == 0
    assert lines[0] == "point: tool_call  subject: get_weather  principal: bench-app (from key)"
    assert lines[2] == "route: governed (chat.create)"
    assert lines[3].split() == ["RULE", "EFFECT", "MODE", "GLOBS", "WHEN"]
    assert lines[4].split() == ["weather", "allow", "enforce", "match", "true"]
    assert lines[5] == "    when: size(tool.arguments.location) < 100"
    assert lines[6].split() == ["no-shell", "deny", "enforce", "no", "match:", "tools", "-"]
    assert lines[-1] == "decision: allow by weather: allowed by rule weather"


def test_explain_request_shows_errors_and_the_message(policies: Path) -> None:
    code, out = run("explain", str(policies), "--principal", "stranger", "--model", "gpt-4o", "--header", "X-A=1")
    assert code == 0
    assert "principal: stranger (not declared: no attributes)" in out
    assert "search-models  allow   enforce  match  error" in out
    assert "    error: " in out
    assert out.splitlines()[-1] == "message: celgate: gpt-4o denied by policy (default): no rule allows it"


def test_usage_errors_exit_2(policies: Path) -> None:
    assert run("explain", str(policies), "--model", "m")[0] == 2  # neither --key nor --principal
    assert run("explain", str(policies), "--principal", "p", "--model", "m", "--header", "novalue")[0] == 2
    assert run("bogus")[0] == 2
    assert run("check", "--help")[0] == 0


def test_python_dash_m_policy() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "celgate.policy", "test", "policies", "--cases", "policies/tests/starter.cases.yaml"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1].startswith("PASS: ")
