"""Run a loaded drop-in for one chat completion or Responses request, streamed or not.

Every run is a coroutine on celgate's event loop. Plain agents and Agent
Builder workflows take the same path: each top-level ``Runner.run`` goes
through ``CelgateRunner``, installed as the SDK's default runner, which

- injects celgate's run settings: the gateway model provider, tracing off,
  ``include_usage``, ``max_turns`` and "invented tool name -> error result";
- for streaming requests, runs ``run_streamed`` internally and forwards text
  deltas and tool events to the request's queue, so even the ``Runner.run``
  calls inside an Agent Builder ``run_workflow`` stream to the client;
- adds each run's usage to the request's total.

Runs started inside a run (agents-as-tools) inherit the parent's settings and
are neither reconfigured nor forwarded. Both APIs share the run; only the
formatting differs (``chunks`` for chat, ``responses`` for the Responses API).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Protocol

import openai
from agents.exceptions import MaxTurnsExceeded
from agents.run import AgentRunner

from agents import Agent, ModelSettings, RunConfig, Usage

from . import chunks, messages, responses, responses_input, workflow
from .dropin import LoadedAgent
from .errors import AgentRunError
from .exports import prepare_agents
from .gateway import GatewayProvider, routable_model
from .host import CallerContext
from .scope import CURRENT_RUN, RunScope

__all__ = [
    "RUNNER",
    "CelgateRunner",
    "Conversation",
    "run_completion",
    "run_response",
    "stream_completion",
    "stream_response",
]

logger = logging.getLogger("celgate.agents")

_WITH_USAGE = ModelSettings(include_usage=True)


class Conversation(Protocol):
    """A request's conversation as a run takes it.

    Chat's is ``messages.ChatConversation``, the Responses API's ``responses_input.ResponsesConversation``.
    """

    def input_items(self) -> list[dict[str, Any]]:
        """The whole conversation as SDK input items, for an agent."""

    def last_user_text(self) -> str:
        """The last user message's text, for an Agent Builder workflow."""


@dataclass(frozen=True, slots=True)
class _Finished:
    """The last piece of a streamed run: its final output and the usage of every model call."""

    output: Any
    usage: Usage


class CelgateRunner(AgentRunner):
    """The SDK's default runner inside celgate (``agents.run.set_default_agent_runner``).

    Outside a celgate run (no ``CURRENT_RUN``) it behaves exactly like the SDK's.
    """

    async def run(self, starting_agent: Agent[Any], input: Any, **kwargs: Any) -> Any:
        scope = CURRENT_RUN.get()
        if scope is None or scope.nested:
            return await super().run(starting_agent, input, **kwargs)
        _configure(scope, starting_agent, kwargs)
        inner = dataclasses.replace(scope, nested=True)
        if scope.sink is None:
            token = CURRENT_RUN.set(inner)
            try:
                result = await super().run(starting_agent, input, **kwargs)
            finally:
                CURRENT_RUN.reset(token)
        else:
            result = await self._run_forwarding(inner, starting_agent, input, kwargs)
        scope.usage.add(result.context_wrapper.usage)
        return result

    def run_streamed(self, starting_agent: Agent[Any], input: Any, **kwargs: Any) -> Any:
        scope = CURRENT_RUN.get()
        if scope is None or scope.nested:
            return super().run_streamed(starting_agent, input, **kwargs)
        _configure(scope, starting_agent, kwargs)  # export code streaming a run itself
        return self._start_streamed(dataclasses.replace(scope, nested=True), starting_agent, input, kwargs)

    def _start_streamed(self, inner: RunScope, starting_agent: Agent[Any], input: Any, kwargs: dict[str, Any]) -> Any:
        token = CURRENT_RUN.set(inner)  # the run's background task copies the context now
        try:
            return super().run_streamed(starting_agent, input, **kwargs)
        finally:
            CURRENT_RUN.reset(token)

    async def _run_forwarding(
        self, inner: RunScope, starting_agent: Agent[Any], input: Any, kwargs: dict[str, Any]
    ) -> Any:
        """Stream the run into the request's queue; the result duck-types ``RunResult``."""
        assert inner.sink is not None
        result = self._start_streamed(inner, starting_agent, input, kwargs)
        translator = chunks.EventTranslator()
        try:
            async for event in result.stream_events():
                for piece in translator.translate(event):
                    inner.sink.put_nowait(piece)
        finally:
            result.cancel()  # a cancelled consumer must stop the model stream and tool tasks
        return result


RUNNER = CelgateRunner()


async def run_completion(agent: LoadedAgent, body: dict[str, Any], caller: CallerContext) -> dict[str, Any]:
    """One ``chat.completion`` with the run's final output and total usage."""
    scope = _new_scope(agent, caller, sink=None)
    output = await _run(scope, messages.ChatConversation(body.get("messages")))
    return chunks.completion(agent.name, chunks.output_text(output), chunks.usage_dict(scope.usage))


async def run_response(agent: LoadedAgent, body: dict[str, Any], caller: CallerContext) -> dict[str, Any]:
    """One Responses ``response`` with the run's final output and total usage."""
    conversation = responses_input.ResponsesConversation(body)
    scope = _new_scope(agent, caller, sink=None)
    output = await _run(scope, conversation)
    return responses.response_object(agent.name, body, chunks.output_text(output), responses.usage_dict(scope.usage))


async def stream_completion(
    agent: LoadedAgent, body: dict[str, Any], caller: CallerContext
) -> AsyncGenerator[dict[str, Any], None]:
    """``chat.completion.chunk`` dicts as the run produces them (see ``chunks``).

    The first chunk (``role: assistant``) is yielded with the first output, so
    a run that fails before producing anything raises ``AgentRunError`` from
    the first ``__anext__`` and the proxy can still answer with an HTTP error.
    If no text delta was streamed (structured output, or a workflow that only
    returns a value), the final output follows as one content delta. Closing
    the generator, or cancelling the task iterating it, cancels the run.
    """
    factory = chunks.ChunkFactory(agent.name)
    started = streamed_text = False
    async with aclosing(_stream(agent, messages.ChatConversation(body.get("messages")), caller)) as pieces:
        async for piece in pieces:
            if not started:
                started = True
                yield factory.role()
            if isinstance(piece, _Finished):
                if not streamed_text and (text := chunks.output_text(piece.output)):
                    yield factory.text(text)
                yield factory.finish()
                if (body.get("stream_options") or {}).get("include_usage"):
                    yield factory.usage(chunks.usage_dict(piece.usage))
            else:
                streamed_text |= isinstance(piece, str)
                yield factory.text(piece) if isinstance(piece, str) else factory.event(piece)


async def stream_response(
    agent: LoadedAgent, body: dict[str, Any], caller: CallerContext
) -> AsyncGenerator[dict[str, Any], None]:
    """Responses stream events as the run produces them (see ``responses``); first and last as ``stream_completion``.

    ``response.created`` is yielded with the first output, so a failure before
    it raises from the first ``__anext__``; a failure later raises mid-stream,
    and no ``response.completed`` follows.
    """
    stream = responses.ResponseStream(agent.name, body)
    conversation = responses_input.ResponsesConversation(body)
    async with aclosing(_stream(agent, conversation, caller)) as pieces:
        async for piece in pieces:
            if isinstance(piece, str):
                events = stream.text(piece)
            elif isinstance(piece, _Finished):
                events = stream.complete(chunks.output_text(piece.output), responses.usage_dict(piece.usage))
            else:
                events = stream.tool_activity()
            for event in events:
                yield event


async def _stream(
    agent: LoadedAgent, conversation: Conversation, caller: CallerContext
) -> AsyncGenerator[str | dict[str, Any] | _Finished, None]:
    """Text deltas and tool events of the run as they happen, then ``_Finished``; closing it cancels the run."""
    queue: asyncio.Queue[str | dict[str, Any] | None] = asyncio.Queue()
    scope = _new_scope(agent, caller, sink=queue)
    task = asyncio.create_task(_run(scope, conversation), name=f"celgate-agent-{agent.name}")
    task.add_done_callback(lambda _: queue.put_nowait(None))
    try:
        while (piece := await queue.get()) is not None:
            yield piece
        yield _Finished(task.result(), scope.usage)
    finally:
        await _stop(task)


def _new_scope(agent: LoadedAgent, caller: CallerContext, sink: asyncio.Queue[Any] | None) -> RunScope:
    client = agent.runtime.clients.get(caller.gateway_url)
    return RunScope(caller, agent, GatewayProvider(client, agent), Usage(), sink)


async def _run(scope: RunScope, conversation: Conversation) -> Any:
    """The run's final output; every failure leaves as ``AgentRunError``."""
    token = CURRENT_RUN.set(scope)
    try:
        return await _invoke(scope.agent, conversation)
    except AgentRunError:
        raise
    except Exception as exc:
        raise _run_error(scope.agent, exc) from exc
    finally:
        CURRENT_RUN.reset(token)


async def _invoke(agent: LoadedAgent, conversation: Conversation) -> Any:
    if agent.workflow is not None:
        assert agent.workflow_input is not None
        return await agent.workflow(workflow.build_input(agent.workflow_input, conversation.last_user_text()))
    assert agent.entry is not None
    result = await RUNNER.run(agent.entry, conversation.input_items())
    return result.final_output


def _configure(scope: RunScope, starting_agent: Agent[Any], kwargs: dict[str, Any]) -> None:
    """Overlay celgate's settings on the run's own (export code builds its own RunConfig)."""
    prepare_agents([starting_agent])  # agents built inside run_workflow are governed too
    config = kwargs.get("run_config") or RunConfig(model_provider=scope.provider)
    if isinstance(config, dict):
        config = RunConfig(**config)
    run_config = dataclasses.replace(
        config,
        model=routable_model(config.model),
        model_provider=scope.provider,
        model_settings=None,
        tracing_disabled=True,
        tool_not_found_behavior="return_error_to_model",
    )
    # Assigned after construction: RunConfig.__post_init__ coerces a non-None model_settings via
    # typing.get_type_hints (~0.5 ms per run in SDK 0.24), for a value that is a ModelSettings already.
    run_config.model_settings = (config.model_settings or ModelSettings()).resolve(_WITH_USAGE)
    kwargs["run_config"] = run_config
    kwargs["max_turns"] = scope.agent.max_turns


def _run_error(agent: LoadedAgent, exc: Exception) -> AgentRunError:
    """What the SDK or the ``openai`` client raised, as the HTTP error the client gets."""
    if isinstance(exc, MaxTurnsExceeded):
        return AgentRunError(
            500,
            "agent_error",
            "max_turns_exceeded",
            f"agent {agent.name!r} exceeded max_turns={agent.max_turns}; raise "
            "__celgate__['max_turns'] or --agents-max-turns",
        )
    if isinstance(exc, openai.APIStatusError):
        # The gateway's own error (e.g. a policy denial of the agent's model call), passed on.
        body = exc.body if isinstance(exc.body, dict) else {}
        message = body.get("message")
        return AgentRunError(
            exc.status_code,
            exc.type or "upstream_error",
            exc.code or "agent_model_error",
            message if isinstance(message, str) else exc.message,
        )
    if isinstance(exc, openai.APIConnectionError):
        message = f"agent {agent.name!r} could not reach celgate: {exc}"
        return AgentRunError(502, "upstream_error", "gateway_unreachable", message)
    if isinstance(exc, openai.APIError) and isinstance(exc.body, dict) and exc.type:
        # An error event inside the gateway's stream (e.g. a tool call denied with `action: error`): celgate
        # puts the status it would have answered with into the event; one relayed from an upstream has none.
        status = exc.body.get("status")
        if not (isinstance(status, int) and 400 <= status <= 599):
            status = 502
        return AgentRunError(status, exc.type, exc.code or "agent_model_error", exc.message)
    logger.error("agent %s failed", agent.name, exc_info=exc)
    return AgentRunError(
        500, "agent_error", "agent_failed", f"agent {agent.name!r} failed: {type(exc).__name__}: {exc}"
    )


async def _stop(task: asyncio.Task[Any]) -> None:
    """Cancel the run if still going and wait for it, so its tools stop before we return."""
    task.cancel()
    await asyncio.wait({task})
    if not task.cancelled():
        task.exception()  # retrieved: raised above already, or moot once the client is gone
