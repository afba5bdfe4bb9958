"""Put every tool an agent can execute under celgate's ``tool_call`` policy, without code changes.

At load time each ``FunctionTool`` in the agent graph (the agent's tools,
agents-as-tools and handoff targets, recursively) gets the two below; the
tools of agents a ``run_workflow`` builds only when it runs get them when
their run starts:

- ``policy_gate`` as its first tool input guardrail: it asks the proxy
  (``GatewayHooks.check_tool``) before the body runs; a blocked decision
  rejects the call and its message becomes the tool result the model sees;
- timing around the tool body, reported as ``GatewayHooks.tool_finished``.

Guardrails live on the tool objects, so they also apply inside
agents-as-tools and inside Agent Builder ``run_workflow`` code. MCP servers get
the gate too (their tools are built per run, so they are not timed).
Handoffs themselves are not tools and are not gated.
"""

from __future__ import annotations

import functools
import time
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

from agents.handoffs import Handoff

from agents import (
    Agent,
    FunctionTool,
    ToolGuardrailFunctionOutput,
    ToolInputGuardrailData,
    tool_input_guardrail,
)
from celgate.policy import ToolCall

from .scope import CURRENT_RUN

__all__ = ["OUTSIDE_RUN_MESSAGE", "govern", "iter_agents", "policy_gate", "tool_names"]

OUTSIDE_RUN_MESSAGE = "celgate: tool calls are only allowed inside a celgate agent run"
_TIMED = "__celgate_timed__"


@tool_input_guardrail(name="celgate_policy")
async def policy_gate(data: ToolInputGuardrailData) -> ToolGuardrailFunctionOutput:
    """Decide the call with the proxy's policy; fail closed outside a celgate run."""
    scope = CURRENT_RUN.get()
    if scope is None:
        return ToolGuardrailFunctionOutput.reject_content(OUTSIDE_RUN_MESSAGE)
    ctx = data.context
    call = ToolCall(ctx.tool_name, ctx.tool_arguments, ctx.tool_call_id, "agent")
    decision = scope.agent.runtime.hooks.check_tool(scope.caller, call)
    if decision.blocked:
        return ToolGuardrailFunctionOutput.reject_content(decision.message)
    return ToolGuardrailFunctionOutput.allow()


def iter_agents(roots: Iterable[Agent[Any]]) -> Iterator[Agent[Any]]:
    """Every agent reachable from ``roots`` via agents-as-tools and handoffs, once each."""
    seen: set[int] = set()
    queue = deque(roots)
    while queue:
        agent = queue.popleft()
        if id(agent) in seen:
            continue
        seen.add(id(agent))
        yield agent
        queue.extend(_children(agent))


def govern(agent: Agent[Any]) -> None:
    """Attach the policy gate and timing to the agent's own tools; idempotent."""
    for tool in agent.tools:
        if isinstance(tool, FunctionTool):
            _add_gate(tool)
            _time_invocations(tool)
    for server in agent.mcp_servers:
        _add_gate(server)


def tool_names(agents: Iterable[Agent[Any]]) -> tuple[str, ...]:
    return tuple(sorted({getattr(t, "name", type(t).__name__) for a in agents for t in a.tools}))


def _children(agent: Agent[Any]) -> Iterator[Agent[Any]]:
    for tool in agent.tools:
        # Agent.as_tool keeps the wrapped agent in a private attribute (SDK 0.24).
        nested = getattr(tool, "_agent_instance", None)
        if isinstance(nested, Agent):
            yield nested
    for handoff in agent.handoffs:
        target: Any = handoff
        if isinstance(handoff, Handoff):
            # handoff(agent) keeps a weak reference to its target (SDK 0.24, private).
            target = handoff._agent_ref() if handoff._agent_ref is not None else None
        if isinstance(target, Agent):
            yield target


def _add_gate(owner: Any) -> None:
    """Put the gate first (before the author's own guardrails), once."""
    current = getattr(owner, "tool_input_guardrails", None) or []
    if policy_gate not in current:
        owner.tool_input_guardrails = [policy_gate, *current]


def _time_invocations(tool: FunctionTool) -> None:
    """Wrap the tool body so its duration and exceptions are reported.

    ``@function_tool`` bodies sit inside the SDK's failure handler, which turns
    an exception into the model-visible error string. Wrapping the body
    *inside* that handler (its private ``_invoke_tool_impl``) sees the
    exception and keeps the SDK's behaviour; other tools are wrapped whole.
    """
    invoker = tool.on_invoke_tool
    owner: Any = invoker if hasattr(invoker, "_invoke_tool_impl") else tool
    attribute = "_invoke_tool_impl" if owner is invoker else "on_invoke_tool"
    body = getattr(owner, attribute)
    if getattr(body, _TIMED, False):
        return

    @functools.wraps(body)
    async def timed(ctx: Any, arguments: str) -> Any:
        started = time.perf_counter()
        try:
            result = await body(ctx, arguments)
        except Exception:
            _report(tool.name, started, failed=True)
            raise
        _report(tool.name, started, failed=False)
        return result

    setattr(timed, _TIMED, True)
    setattr(owner, attribute, timed)


def _report(tool_name: str, started: float, *, failed: bool) -> None:
    scope = CURRENT_RUN.get()
    if scope is not None:
        scope.agent.runtime.hooks.tool_finished(tool_name, time.perf_counter() - started, failed)
