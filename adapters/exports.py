"""What an imported ``agent.py`` exports, in precedence order (the SDK-dependent half of loading).

1. a module attribute ``agent`` that is an ``agents.Agent``;
2. an ``async def run_workflow(workflow_input)`` (Agent Builder export);
3. exactly one module-level ``Agent`` that no other module-level Agent uses as
   a handoff or tool (so sub-agents defined next to the entry agent are fine).

Anything else is a ``LoadError``. Every agent reachable from the module's
agents is prepared for celgate before the first run (tools governed, model
calls routed through the gateway).
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from agents import Agent

from . import workflow
from .errors import LoadError
from .gateway import route_through_gateway
from .guardrails import govern, iter_agents, tool_names

__all__ = ["Export", "prepare_agents", "resolve"]


@dataclass(frozen=True, slots=True)
class Export:
    """The resolved entry point of a drop-in and the tool names of its agent graph."""

    kind: str
    entry: Agent[Any] | None
    workflow: Callable[[Any], Awaitable[Any]] | None
    workflow_input: type | None
    tools: tuple[str, ...]


def resolve(module: types.ModuleType) -> Export:
    """Pick the export by precedence; raises ``LoadError`` when none or several qualify."""
    module_agents = _module_agents(module)
    prepare_agents(module_agents)
    named = getattr(module, "agent", None)
    if isinstance(named, Agent):
        return _agent_export("agent", named)
    run_workflow = getattr(module, "run_workflow", None)
    if run_workflow is not None:
        return _workflow_export(module, run_workflow, module_agents)
    roots = _roots(module_agents)
    if len(roots) == 1:
        return _agent_export("single_agent", roots[0])
    if not module_agents:
        hint = f" (`agent` is a {type(named).__name__}, not an Agent)" if named is not None else ""
        raise LoadError(
            "no_export",
            "agent.py exports nothing celgate can serve" + hint + ": define `agent = Agent(...)`, "
            "an `async def run_workflow(workflow_input)`, or exactly one module-level Agent",
        )
    names = ", ".join(sorted(a.name for a in module_agents))
    raise LoadError(
        "ambiguous_export",
        f"agent.py defines {len(module_agents)} module-level Agents ({names}) and none is the "
        "single entry point: name the entry agent `agent`",
    )


def prepare_agents(roots: list[Agent[Any]]) -> None:
    """Govern and route every agent reachable from ``roots``; idempotent."""
    for agent in iter_agents(roots):
        govern(agent)
        route_through_gateway(agent)


def _agent_export(kind: str, entry: Agent[Any]) -> Export:
    return Export(kind, entry, None, None, tool_names(iter_agents([entry])))


def _workflow_export(module: types.ModuleType, run_workflow: Any, module_agents: list[Agent[Any]]) -> Export:
    if not inspect.iscoroutinefunction(run_workflow):
        raise LoadError("bad_export", "run_workflow must be an `async def` taking one input model")
    input_model = workflow.input_model(module, run_workflow)
    tools = tool_names(iter_agents(module_agents))
    return Export("run_workflow", None, run_workflow, input_model, tools)


def _module_agents(module: types.ModuleType) -> list[Agent[Any]]:
    seen: dict[int, Agent[Any]] = {}
    for value in vars(module).values():
        if isinstance(value, Agent):
            seen.setdefault(id(value), value)
    return list(seen.values())


def _roots(module_agents: list[Agent[Any]]) -> list[Agent[Any]]:
    """Module agents that no other module agent reaches as a handoff or agent-as-tool."""
    used: set[int] = set()
    for agent in module_agents:
        used |= {id(a) for a in iter_agents([agent]) if a is not agent}
    return [a for a in module_agents if id(a) not in used]
