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

Gateway tools (the ``--tools`` catalogue) are governed once, when the
catalogue builds them (``govern_gateway_tool``): their gate decides with their
provenance (``tool.source`` ``gateway`` or ``mcp``, ``tool.server``), and each
execution is reported as a ``ToolExecution``. ``govern`` leaves them alone.
"""

from __future__ import annotations

import functools
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from agents.handoffs import Handoff

from agents import (
    Agent,
    FunctionTool,
    ToolGuardrailFunctionOutput,
    ToolInputGuardrail,
    ToolInputGuardrailData,
    tool_input_guardrail,
)
from celgate.policy import ToolCall

from .chunks import tool_text
from .errors import ToolFailure
from .host import ToolExecution
from .scope import CURRENT_RUN

__all__ = [
    "OUTSIDE_RUN_MESSAGE",
    "Provenance",
    "govern",
    "govern_gateway_tool",
    "iter_agents",
    "policy_gate",
    "provenance_of",
    "tool_names",
]

OUTSIDE_RUN_MESSAGE = "celgate: tool calls are only allowed inside a celgate agent run"
_TIMED = "__celgate_timed__"
_PROVENANCE = "__celgate_provenance__"

# Called when a tool body ends: (tool context, start time, the exception it raised or None, its result).
_Observer = Callable[[Any, float, BaseException | None, Any], None]


@dataclass(frozen=True, slots=True)
class Provenance:
    """Where a gateway tool comes from: ``source`` (``gateway`` / ``mcp``), ``origin`` (module, URL, server), server."""

    source: str
    origin: str
    server: str = ""


@tool_input_guardrail(name="celgate_policy")
async def policy_gate(data: ToolInputGuardrailData) -> ToolGuardrailFunctionOutput:
    """Decide a drop-in's own tool call (``tool.source == "agent"``); fail closed outside a celgate run."""
    return _decide(data, "agent", "")


def _decide(data: ToolInputGuardrailData, source: str, server: str) -> ToolGuardrailFunctionOutput:
    scope = CURRENT_RUN.get()
    if scope is None:
        return ToolGuardrailFunctionOutput.reject_content(OUTSIDE_RUN_MESSAGE)
    ctx = data.context
    call = ToolCall(ctx.tool_name, ctx.tool_arguments, ctx.tool_call_id, source, server=server)
    decision = scope.agent.runtime.hooks.check_tool(scope.caller, call)
    if decision.blocked:
        return ToolGuardrailFunctionOutput.reject_content(decision.message)
    return ToolGuardrailFunctionOutput.allow()


def govern_gateway_tool(tool: FunctionTool, provenance: Provenance, *, record: bool = True) -> FunctionTool:
    """Gate ``tool`` with its provenance and (``record``) report each execution; returns it, marked.

    ``record`` is off for a drop-in's handle on a gateway tool, whose calls
    run the catalogue's tool, which records them itself.
    """

    async def gate(data: ToolInputGuardrailData) -> ToolGuardrailFunctionOutput:
        return _decide(data, provenance.source, provenance.server)

    tool.tool_input_guardrails = [
        ToolInputGuardrail(guardrail_function=gate, name="celgate_policy"),
        *(tool.tool_input_guardrails or []),
    ]
    if record:
        _observe(tool, functools.partial(_report_execution, tool.name, provenance))
    setattr(tool, _PROVENANCE, provenance)
    return tool


def provenance_of(tool: Any) -> Provenance | None:
    """The provenance of a gateway tool; ``None`` for any other tool."""
    found = getattr(tool, _PROVENANCE, None)
    return found if isinstance(found, Provenance) else None


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
        if isinstance(tool, FunctionTool) and provenance_of(tool) is None:
            _add_gate(tool)
            _observe(tool, functools.partial(_report_finished, tool.name))
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


def _observe(tool: FunctionTool, observer: _Observer) -> None:
    """Wrap the tool body so ``observer`` learns its duration, exception and result; once per tool.

    ``@function_tool`` bodies sit inside the SDK's failure handler, which turns
    an exception into the model-visible error string. Wrapping the body
    *inside* that handler (its private ``_invoke_tool_impl``) sees the
    exception and keeps the SDK's behaviour; other tools are wrapped whole.
    A ``ToolFailure`` (a gateway tool's own error) becomes its message.
    """
    invoker = tool.on_invoke_tool
    owner: Any = invoker if hasattr(invoker, "_invoke_tool_impl") else tool
    attribute = "_invoke_tool_impl" if owner is invoker else "on_invoke_tool"
    body = getattr(owner, attribute)
    if getattr(body, _TIMED, False):
        return

    @functools.wraps(body)
    async def observed(ctx: Any, arguments: str) -> Any:
        started = time.perf_counter()
        try:
            result = await body(ctx, arguments)
        except ToolFailure as failure:
            observer(ctx, started, failure, failure.message)
            return failure.message
        except Exception as exc:
            observer(ctx, started, exc, None)
            raise
        observer(ctx, started, None, result)
        return result

    setattr(observed, _TIMED, True)
    setattr(owner, attribute, observed)


def _report_finished(tool_name: str, ctx: Any, started: float, error: BaseException | None, result: Any) -> None:
    scope = CURRENT_RUN.get()
    if scope is not None:
        scope.agent.runtime.hooks.tool_finished(tool_name, time.perf_counter() - started, error is not None)


def _report_execution(
    tool_name: str, provenance: Provenance, ctx: Any, started: float, error: BaseException | None, result: Any
) -> None:
    scope = CURRENT_RUN.get()
    if scope is None:
        return
    execution = ToolExecution(
        agent=scope.agent.name,
        tool=tool_name,
        call_id=str(getattr(ctx, "tool_call_id", "")),
        source=provenance.source,
        origin=provenance.origin,
        server=provenance.server,
        seconds=time.perf_counter() - started,
        outcome="ok" if error is None else "error",
        result_bytes=len(tool_text(result).encode()),
    )
    scope.agent.runtime.hooks.tool_executed(scope.caller, execution)
