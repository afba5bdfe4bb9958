"""Watch mode with real files: reload one agent per change, keep the last good version."""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from celgate.adapters import AgentRegistry, stream_completion
from tests.helpers.observe import eventually

from .conftest import FakeGateway, FakeHooks, Text, ToolCalls, caller_for, collect, write_agent

VERSIONED = """
import helpers
from agents import Agent, function_tool

@function_tool
def version() -> str:
    \"\"\"The helper's version.\"\"\"
    return helpers.VERSION

agent = Agent(name="v", tools=[version])
"""


@pytest.fixture
async def watched(tmp_path: Path, make_registry: Any) -> AsyncIterator[Callable[[], Any]]:
    """``await watched()`` -> a registry over tmp_path with its watch task running."""
    tasks: list[asyncio.Task[None]] = []

    async def start() -> AgentRegistry:
        registry = await make_registry(tmp_path)
        tasks.append(asyncio.create_task(registry.watch()))
        await asyncio.sleep(0.2)  # the watcher is set up on the task's first step
        return registry

    yield start
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def versioned(tmp_path: Path, name: str, version: str) -> Path:
    return write_agent(tmp_path, name, VERSIONED, helpers_py=f'VERSION = "{version}"\n')


async def test_editing_a_helper_reloads_only_that_agent(tmp_path: Path, watched: Any) -> None:
    versioned(tmp_path, "One", "1.0")
    versioned(tmp_path, "Two", "2.0")
    registry = await watched()
    one, two = registry.get("One"), registry.get("Two")
    (tmp_path / "One" / "helpers.py").write_text('VERSION = "1.1"\n')
    await eventually(lambda: registry.get("One") is not one)
    assert registry.get("One").module.helpers.VERSION == "1.1"
    assert registry.get("Two") is two
    assert one.module.helpers.VERSION == "1.0"  # the old version is untouched


async def test_any_file_in_the_folder_triggers_a_reload(tmp_path: Path, watched: Any) -> None:
    versioned(tmp_path, "Data", "1")
    registry = await watched()
    before = registry.get("Data")
    (tmp_path / "Data" / "prompts").mkdir()
    (tmp_path / "Data" / "prompts" / "system.txt").write_text("be nice")
    await eventually(lambda: registry.get("Data") is not before)


async def test_new_folders_appear_and_deleted_ones_disappear(tmp_path: Path, watched: Any) -> None:
    versioned(tmp_path, "Old", "1")
    registry = await watched()
    versioned(tmp_path, "team/New", "1")
    await eventually(lambda: registry.names() == ["Old", "team/New"])
    shutil.rmtree(tmp_path / "Old")
    await eventually(lambda: registry.names() == ["team/New"])
    (tmp_path / "team" / "New" / "agent.py").unlink()
    await eventually(lambda: registry.names() == [])


async def test_failed_reload_keeps_the_previous_version_and_is_logged_once(
    tmp_path: Path, watched: Any, hooks: FakeHooks, caplog: pytest.LogCaptureFixture
) -> None:
    folder = versioned(tmp_path, "Fragile", "1")
    registry = await watched()
    good = registry.get("Fragile")
    (folder / "agent.py").write_text(VERSIONED + "\nundefined_name\n")
    await eventually(lambda: bool(registry.failures()))
    assert registry.get("Fragile") is good
    assert registry.agents()[0]["stale"] is True
    assert registry.failures()[0].kind == "import_error"
    assert registry.failures()[0].summary == "NameError: name 'undefined_name' is not defined"

    (folder / "notes.md").write_text("same failure again")  # reloads, fails identically
    versioned(tmp_path, "Marker", "1")  # processed after the batch above
    await eventually(lambda: "Marker" in registry.names())
    assert hooks.load_failures == [("Fragile", "import_error")]
    assert len([r for r in caplog.records if r.levelno == logging.ERROR and "Fragile" in r.getMessage()]) == 1
    assert "previous version keeps serving" in caplog.text

    (folder / "agent.py").write_text(VERSIONED)
    await eventually(lambda: registry.get("Fragile") is not good)
    assert registry.failures() == []
    assert registry.agents()[0]["stale"] is False


async def test_a_run_in_flight_finishes_on_the_version_it_started_with(
    tmp_path: Path, watched: Any, gateway: FakeGateway
) -> None:
    folder = versioned(tmp_path, "Live", "old")
    registry = await watched()
    started = registry.get("Live")
    hold = asyncio.Event()
    gateway.reply(ToolCalls([("c1", "version", "{}")], hold=hold), Text("done"))
    run = asyncio.create_task(
        collect(
            stream_completion(started, {"messages": [{"role": "user", "content": "v?"}]}, caller_for(gateway, "Live"))
        )
    )
    await eventually(lambda: len(gateway.requests) == 1)
    (folder / "helpers.py").write_text('VERSION = "new"\n')
    await eventually(lambda: registry.get("Live") is not started)
    hold.set()
    results = [c["celgate"] for c in await run if c.get("celgate", {}).get("type") == "tool_result"]
    assert results[0]["output"] == "old"


async def test_watch_returns_when_disabled(tmp_path: Path, make_registry: Any) -> None:
    registry = await make_registry(tmp_path, watch=False)
    await asyncio.wait_for(registry.watch(), timeout=1)
