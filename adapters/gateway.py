"""Route every model call of a drop-in through celgate itself, over loopback HTTP.

Agents call ``caller.gateway_url`` (celgate's own ``/v1``) with one shared
``AsyncOpenAI`` per URL. A request hook on its HTTP client adds the headers of
the run that is making the call (``RunScope.headers``: the caller's
``Authorization``, ``x-celgate-agent``, ``x-request-id``, the internal token,
``x-celgate-upstream``), so an agent's model calls pass the same auth,
request and tool-call policy and metrics as any client call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx2
from agents.models import get_default_model_settings
from agents.models.interface import Model, ModelProvider
from openai import AsyncOpenAI, DefaultAsyncHttpxClient

from agents import Agent, ModelSettings, OpenAIChatCompletionsModel, OpenAIResponsesModel

from .errors import AgentRunError
from .scope import CURRENT_RUN

if TYPE_CHECKING:
    from .dropin import LoadedAgent

__all__ = [
    "GatewayClients",
    "GatewayProvider",
    "gateway_client",
    "routable_model",
    "route_through_gateway",
]

_EMPTY_SETTINGS = ModelSettings()


class GatewayClients:
    """One ``AsyncOpenAI`` (one connection pool) per gateway URL, owned by a registry."""

    def __init__(self, api_key: str) -> None:
        self._api_key = api_key
        self._clients: dict[str, AsyncOpenAI] = {}

    def get(self, base_url: str) -> AsyncOpenAI:
        client = self._clients.get(base_url)
        if client is None:
            client = self._clients[base_url] = gateway_client(base_url, self._api_key)
        return client

    async def aclose(self) -> None:
        clients, self._clients = self._clients, {}
        for client in clients.values():
            await client.close()


def gateway_client(base_url: str, api_key: str) -> AsyncOpenAI:
    """A client whose requests carry the current run's headers.

    Inside a run the caller's ``Authorization`` replaces ``api_key`` (or none
    is sent); outside one (the SDK's default client) ``api_key`` is sent.
    ``max_retries=0``: a policy denial or upstream error must reach the agent
    once, not be repeated (and re-audited) by the client.
    """
    http_client = DefaultAsyncHttpxClient(event_hooks={"request": [_add_run_headers]})
    return AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0, http_client=http_client)


class GatewayProvider(ModelProvider):
    """Resolves model names for one run: ``__celgate__['model']`` > the agent's > the default.

    The model speaks the registry's ``AgentSettings.api`` to celgate.
    """

    def __init__(self, client: AsyncOpenAI, agent: LoadedAgent) -> None:
        self._client = client
        self._agent = agent

    def get_model(self, model_name: str | None) -> Model:
        name = self._agent.config.model or model_name or self._agent.runtime.settings.default_model
        if not name:
            raise AgentRunError(
                500,
                "agent_error",
                "agent_no_model",
                f"agent {self._agent.name!r} has no model; set --agents-model "
                "(CELGATE_AGENTS_MODEL) or __celgate__['model']",
            )
        if self._agent.runtime.settings.api == "responses":
            return OpenAIResponsesModel(model=name, openai_client=self._client)
        return OpenAIChatCompletionsModel(model=name, openai_client=self._client)


def routable_model(model: Any) -> Any:
    """OpenAI model objects carry their own client; keep only the name so celgate routes it."""
    if isinstance(model, OpenAIChatCompletionsModel | OpenAIResponsesModel):
        return model.model
    return model


def route_through_gateway(agent: Agent[Any]) -> None:
    """Make the agent's model calls go through the run's provider, without implicit settings.

    The SDK gives agents it considers GPT-5 (including agents with no model,
    via its ``gpt-5.*`` default name) implicit ``reasoning``/``verbosity``
    settings, which many upstreams reject. Settings equal to those implicit
    defaults are reset to empty; settings the author wrote differently stay.
    """
    model = routable_model(agent.model)
    if model is not agent.model:
        agent.model = model
    # Runs call this for every agent they start; an already reset agent is the cheap common case.
    if agent.model_settings != _EMPTY_SETTINGS and agent.model_settings == _implicit_settings(model):
        agent.model_settings = ModelSettings()


def _implicit_settings(model: Any) -> ModelSettings:
    if model is None:
        return get_default_model_settings()
    if isinstance(model, str):
        return get_default_model_settings(model)
    return ModelSettings()


async def _add_run_headers(request: httpx2.Request) -> None:
    scope = CURRENT_RUN.get()
    if scope is None:
        return
    if scope.caller.authorization is None and "authorization" in request.headers:
        del request.headers["authorization"]
    request.headers.update(scope.headers())
