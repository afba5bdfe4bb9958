"""Admission: one step turns a request into a ``Caller`` (who asks, under which policy, for what).

Every governed route is read -> ``admit`` -> dispatch. ``admit`` takes the
policy snapshot the whole request will use, resolves the principal, builds
the policy's view of the request, decides the request point and records the
decision; the ``Caller`` it returns then answers the later questions (which
offered tools are usable, how to decide a tool call) for that same snapshot.
Under ``--no-policy`` nothing is decided: no check, no hook, no record.

Agent identity comes from celgate alone: ``x-celgate-agent`` is honoured
only on celgate's own loopback calls (the internal token); from any other
client it is ignored, so claiming an agent's name grants nothing.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from aiohttp import web

from celgate.policy import Action, Decision, Effect, Mode, Point, PolicySet, Principal, RequestInfo, ToolCall

from .client_request import request_info
from .enforcement import Enforcer
from .errors import PolicyDenied
from .keys import AGENTS, AUTH, ENFORCER, GATEWAY_TOKEN, LIMITS, RECORD
from .toolcalls import ALLOWED, ProposedCall, ToolVerdict, Verdict

__all__ = ["Caller", "PolicyToolHook", "admit", "is_internal_call", "open_route"]


class Caller(NamedTuple):
    """One admitted request: its principal, its policy view, its id, and the policy snapshot it uses."""

    principal: Principal
    info: RequestInfo
    request_id: str
    policy: PolicySet
    enforcer: Enforcer

    def usable_tools(self, names: Iterable[str]) -> frozenset[str]:
        """The offered tool names some call could be allowed for (all of them under ``--no-policy``)."""
        if not self.enforcer.enforcing:
            return frozenset(names)
        return self.policy.usable_tools(self.principal, self.info, names)

    def tool_hook(self, source: str) -> PolicyToolHook | None:
        """The hook deciding this request's tool calls from ``source``; None: nothing to intercept."""
        return PolicyToolHook(self, source) if self.enforcer.enforcing else None

    @property
    def max_held_bytes(self) -> int:
        """How much of one tool call a stream may hold while policy decides (``--max-held-call-bytes``)."""
        return self.enforcer.max_held_call_bytes

    def check_tool(self, tool: ToolCall) -> Decision:
        """Decide (and record) one tool call against this request's snapshot."""
        decision = self.policy.check_tool_call(self.principal, self.info, tool)
        if self.enforcer.enforcing:
            self.enforcer.record(decision, self.request_id, self.principal, tool)
        return decision


class PolicyToolHook:
    """``toolcalls.ToolCallHook`` over one caller."""

    __slots__ = ("_caller", "_source")

    def __init__(self, caller: Caller, source: str) -> None:
        self._caller = caller
        self._source = source

    def needs_arguments(self, name: str) -> bool:
        caller = self._caller
        return caller.policy.reads_arguments(caller.principal, caller.info, name)

    def decide(self, call: ProposedCall) -> ToolVerdict:
        tool = ToolCall(
            name=call.name, raw_arguments=call.raw_arguments, id=call.call_id, source=self._source, type=call.type
        )
        decision = self._caller.check_tool(tool)
        if not decision.blocked:
            return ALLOWED
        verdict = Verdict.ERROR if decision.action is Action.ERROR else Verdict.STRIP
        return ToolVerdict(verdict, decision.message)

    def refuse(self, call: ProposedCall, reason: str) -> ToolVerdict:
        caller = self._caller
        tool = ToolCall(name=call.name, raw_arguments="", id=call.call_id, source=self._source, type=call.type)
        message = f"celgate: tool {call.name} denied: {reason}"
        decision = Decision(
            Point.TOOL_CALL,
            Effect.DENY,
            Mode.ENFORCE,
            "celgate:held-call-limit",
            reason,
            Action.STRIP,
            (),
            (),
            0.0,
            call.name,
            message,
            caller.policy.version,
        )
        caller.enforcer.record(decision, caller.request_id, caller.principal, tool)
        return ToolVerdict(Verdict.STRIP, message)


def admit(request: web.Request, body: Mapping[str, Any] | None) -> Caller:
    """Admit the request or raise (401 unknown key in sidecar mode, 403 denied by policy)."""
    app = request.app
    enforcer = app[ENFORCER]
    policy = enforcer.policy()
    principal = app[AUTH].principal(request.headers, policy)
    agent = _agent(request, body)
    info = request_info(
        request,
        body,
        agent,
        for_policy=enforcer.enforcing,
        headers_read=lambda model: policy.reads_headers(principal, model, agent),
    )
    record = request[RECORD]
    record.principal, record.model, record.stream = principal.id, info.model, info.stream
    caller = Caller(principal, info, record.request_id, policy, enforcer)
    if enforcer.enforcing:
        decision = policy.check_request(principal, info)
        enforcer.record(decision, record.request_id, principal)
        if decision.blocked:
            raise PolicyDenied(decision.message)
    record.slots = app[LIMITS].take(principal, info.stream)
    return caller


def open_route(request: web.Request, path: str) -> None:
    """A path celgate does not govern goes on only if a policy ``routes:`` entry opens it for this caller."""
    enforcer = request.app[ENFORCER]
    if not enforcer.enforcing:
        return  # --no-policy: everything is allowed
    policy = enforcer.policy()
    principal = request.app[AUTH].principal(request.headers, policy)
    record = request[RECORD]
    decision = policy.open_route(principal, request_info(request, None, None))
    enforcer.record(decision, record.request_id, principal)
    if decision.blocked:
        raise PolicyDenied(
            f"celgate: {request.method} {path} is not governed by celgate (it can carry tool calls celgate does "
            "not parse, or celgate does not know it) and no policy routes: entry opens it",
            code="route_not_governed",
        )


def is_internal_call(request: web.Request) -> bool:
    """A call from celgate's own agent runtime (it carries the per-process internal token)."""
    token = request.headers.get("x-celgate-internal")
    return token is not None and hmac.compare_digest(token.encode(), request.app[GATEWAY_TOKEN].encode())


def _agent(request: web.Request, body: Mapping[str, Any] | None) -> str | None:
    """``request.agent``: the agent celgate runs for this call, never a name a client claims."""
    if is_internal_call(request):
        return request.headers.get("x-celgate-agent")
    model = body.get("model") if body else None
    registry = request.app.get(AGENTS)
    if registry is None or not isinstance(model, str):
        return None
    return model if registry.get(model) is not None or registry.failure(model) is not None else None
