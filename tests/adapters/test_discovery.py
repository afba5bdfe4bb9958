"""Discovery: folder names, isolated imports, export precedence, diagnostics."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path
from typing import Any

import pytest

from celgate.adapters.discovery import ROOT_PACKAGE, find_agents

from .conftest import FakeGateway, FakeHooks, write_agent

REPO = Path(__file__).resolve().parents[2]
PLAIN = 'from agents import Agent\nagent = Agent(name="a")\n'


def test_every_folder_with_agent_py_is_a_model_named_by_its_path(tmp_path: Path) -> None:
    for name in ["Weather", "labs/planner", "labs/deep/er", ".hidden", "_private", "Weather/sub"]:
        write_agent(tmp_path, name, PLAIN)
    (tmp_path / "labs" / "notes.txt").write_text("not an agent")
    (tmp_path / "empty").mkdir()
    assert list(find_agents(tmp_path)) == ["Weather", "labs/deep/er", "labs/planner"]
    assert find_agents(tmp_path / "missing") == {}


async def test_sibling_helper_modules_never_collide(tmp_path: Path, make_registry: Any) -> None:
    for name in ["One", "Two"]:
        write_agent(
            tmp_path,
            name,
            f"""
            import helpers
            from .helpers import VALUE as RELATIVE
            from agents import Agent
            agent = Agent(name="{name}")
            VALUE = helpers.VALUE
            """,
            helpers_py=f'VALUE = "{name.lower()}"\n',
        )
    sentinel = types.ModuleType("helpers")
    sys.modules["helpers"] = sentinel
    try:
        registry = await make_registry(tmp_path)
        assert sys.modules["helpers"] is sentinel  # the process's own `helpers` is untouched
    finally:
        del sys.modules["helpers"]
    one, two = registry.get("One").module, registry.get("Two").module
    assert (one.VALUE, one.RELATIVE, two.VALUE, two.RELATIVE) == ("one", "one", "two", "two")
    assert one.__name__.startswith(f"{ROOT_PACKAGE}.One_")
    assert one.__name__ != two.__name__
    assert sys.modules[one.__name__.rsplit(".", 1)[0] + ".helpers"].VALUE == "one"
    assert str(tmp_path / "One") not in sys.path


async def test_similar_names_get_distinct_packages(tmp_path: Path, make_registry: Any) -> None:
    write_agent(tmp_path, "a-b", PLAIN.replace('"a"', '"dash"'))
    write_agent(tmp_path, "a_b", PLAIN.replace('"a"', '"underscore"'))
    registry = await make_registry(tmp_path)
    assert registry.get("a-b").entry.name == "dash"
    assert registry.get("a_b").entry.name == "underscore"


@pytest.mark.parametrize(
    ("source", "kind", "entry"),
    [
        (  # `agent` beats run_workflow and other agents
            """
            from agents import Agent
            from pydantic import BaseModel
            other = Agent(name="other")
            agent = Agent(name="named")
            class WorkflowInput(BaseModel):
                input_as_text: str
            async def run_workflow(workflow_input: WorkflowInput):
                return None
            """,
            "agent",
            "named",
        ),
        (  # run_workflow beats a single module-level agent
            """
            from agents import Agent
            from pydantic import BaseModel
            helper_agent = Agent(name="helper")
            class Input(BaseModel):
                input_as_text: str
            async def run_workflow(workflow_input: Input):
                return None
            """,
            "run_workflow",
            None,
        ),
        (  # one entry agent plus the agents it hands off to / uses as tools
            """
            from agents import Agent
            billing = Agent(name="billing")
            research = Agent(name="research")
            triage = Agent(name="triage", handoffs=[billing], tools=[research.as_tool("r", "R")])
            """,
            "single_agent",
            "triage",
        ),
    ],
)
async def test_export_precedence(tmp_path: Path, make_registry: Any, source: str, kind: str, entry: str | None) -> None:
    write_agent(tmp_path, "X", source)
    loaded = (await make_registry(tmp_path)).get("X")
    assert loaded.kind == kind
    assert (loaded.entry.name if loaded.entry else None) == entry


FAILURES = [
    ("syntax", "def broken(:\n", {}, "import_error", "SyntaxError"),
    ("raises", "import json\nraise ValueError('boom at import')\n", {}, "import_error", "ValueError: boom at import"),
    ("missing_helper", "from .nothere import x\n", {}, "import_error", "ModuleNotFoundError"),
    ("empty", "X = 1\n", {}, "no_export", "exports nothing"),
    ("not_an_agent", "agent = 42\n", {}, "no_export", "`agent` is a int"),
    (
        "two_roots",
        'from agents import Agent\na = Agent(name="a")\nb = Agent(name="b")\n',
        {},
        "ambiguous_export",
        "2 module-level Agents (a, b)",
    ),
    ("config_type", PLAIN + "__celgate__ = []\n", {}, "bad_config", "must be a dict"),
    ("config_key", PLAIN + '__celgate__ = {"modle": "x"}\n', {}, "bad_config", "unknown keys ['modle']"),
    ("config_value", PLAIN + '__celgate__ = {"max_turns": "5"}\n', {}, "bad_config", "must be int"),
    ("config_bool", PLAIN + '__celgate__ = {"max_turns": True}\n', {}, "bad_config", "must be int"),
    ("config_turns", PLAIN + '__celgate__ = {"max_turns": 0}\n', {}, "bad_config", ">= 1"),
    ("config_url", PLAIN + '__celgate__ = {"upstream": "ftp://x"}\n', {}, "bad_config", "http(s) URL"),
    (
        "requirements",
        PLAIN,
        {"requirements_txt": "# deps\npydantic>=2\ncelgate-surely-not-installed[extra]>=1 ; python_version>'3'\n"},
        "missing_dependency",
        "celgate-surely-not-installed[extra]>=1",
    ),
    ("sync_workflow", "def run_workflow(x):\n    return x\n", {}, "bad_export", "must be an `async def`"),
    ("untyped_workflow", "async def run_workflow(x):\n    return x\n", {}, "bad_export", "pydantic input model"),
    (
        "workflow_fields",
        "from pydantic import BaseModel\n"
        "class WorkflowInput(BaseModel):\n    input_as_text: str\n    user_id: int\n"
        "async def run_workflow(w: WorkflowInput):\n    return None\n",
        {},
        "bad_export",
        "cannot fill: user_id",
    ),
]


@pytest.mark.parametrize(("name", "source", "files", "kind", "fragment"), FAILURES, ids=[f[0] for f in FAILURES])
async def test_load_failures_are_diagnosed(
    tmp_path: Path,
    make_registry: Any,
    hooks: FakeHooks,
    name: str,
    source: str,
    files: dict[str, str],
    kind: str,
    fragment: str,
) -> None:
    write_agent(tmp_path, "Good", PLAIN)
    write_agent(tmp_path, name, source, **files)
    registry = await make_registry(tmp_path)
    assert registry.names() == ["Good"]
    [failure] = registry.failures()
    assert registry.failure(name) is failure and registry.failure("Good") is None
    assert (failure.agent, failure.kind) == (name, kind)
    assert fragment in failure.message
    assert failure.summary in failure.message and "\n" not in failure.summary
    expected_file = "requirements.txt" if kind == "missing_dependency" else "agent.py"
    assert failure.file == tmp_path / name / expected_file
    listed = failure.as_json()
    assert listed.pop("time").endswith("+00:00")
    assert listed == {
        "agent": name,
        "kind": kind,
        "message": failure.message,
        "file": str(failure.file),
        "line": None,  # set for declarative agent.yaml files only
        "field": None,
    }
    assert hooks.load_failures == [(name, kind)]
    assert not [m for m in sys.modules if m.startswith(ROOT_PACKAGE) and name in m]


async def test_import_traceback_shows_the_authors_code(tmp_path: Path, make_registry: Any) -> None:
    write_agent(tmp_path, "Boom", "import helpers\n", helpers_py="def f():\n    raise KeyError('k')\nf()\n")
    [failure] = (await make_registry(tmp_path)).failures()
    message = failure.message
    assert message.startswith("Traceback")
    assert f'{tmp_path / "Boom" / "agent.py"}", line 1' in message
    assert f'{tmp_path / "Boom" / "helpers.py"}", line 3' in message
    assert "importlib" not in message and "adapters" not in message
    assert failure.summary == "KeyError: 'k'"  # the one line an error response quotes


async def test_listing_describes_each_loaded_agent(tmp_path: Path, make_registry: Any) -> None:
    write_agent(
        tmp_path,
        "Described",
        """
        from agents import Agent, function_tool
        __celgate__ = {"description": "Says hi.", "max_turns": 3, "upstream": "http://u/v1"}
        @function_tool
        def hello() -> str:
            \"\"\"Hi.\"\"\"
            return "hi"
        agent = Agent(name="d", model="gpt-4.1-mini", tools=[hello])
        """,
    )
    [listed] = (await make_registry(tmp_path)).agents()
    assert listed.pop("loaded_at").endswith("+00:00")
    assert listed == {
        "name": "Described",
        "source": str(tmp_path / "Described" / "agent.py"),
        "kind": "agent",
        "model": "gpt-4.1-mini",
        "tools": ["hello"],
        "description": "Says hi.",
        "max_turns": 3,
        "upstream": "http://u/v1",
        "stale": False,
    }


async def test_exports_import_with_placeholder_credentials_routed_to_celgate(
    tmp_path: Path, make_registry: Any, gateway: FakeGateway
) -> None:
    os.environ.pop("OPENAI_API_KEY", None)
    write_agent(
        tmp_path,
        "Export",
        """
        from openai import AsyncOpenAI
        from agents import Agent
        client = AsyncOpenAI()
        agent = Agent(name="e")
        """,
    )
    registry = await make_registry(tmp_path)
    client = registry.get("Export").module.client
    assert str(client.base_url).rstrip("/") == gateway.url
    assert client.api_key == "celgate-placeholder"
    assert os.environ["OPENAI_AGENTS_DISABLE_TRACING"] == "1"


def run_python(code: str, cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = str(REPO)
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_the_agents_folder_does_not_shadow_the_sdk() -> None:
    assert (REPO / "agents" / "WeatherAgent" / "agent.py").is_file()
    assert not (REPO / "agents" / "__init__.py").exists()
    location = run_python("import agents; print(agents.__file__)", cwd=REPO)
    assert "site-packages" in location and location.endswith("__init__.py")


def test_the_sdk_is_imported_only_once_a_drop_in_exists(tmp_path: Path) -> None:
    (tmp_path / "not_an_agent").mkdir()
    output = run_python(
        f"""
        import asyncio, sys
        from pathlib import Path
        from celgate.adapters import AgentRegistry, AgentSettings
        directory = Path({str(tmp_path)!r})
        async def main():
            registry = AgentRegistry(AgentSettings(directory, None), hooks=None)
            await registry.start()
            print("agents" in sys.modules, "openai" in sys.modules)
            (directory / "A").mkdir()
            (directory / "A" / "agent.py").write_text("from agents import Agent\\nagent = Agent(name='a')\\n")
            await registry.start()
            print("agents" in sys.modules, registry.names())
        asyncio.run(main())
        """,
        cwd=tmp_path,
    )
    assert output.splitlines() == ["False False", "True ['A']"]
