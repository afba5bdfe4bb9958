"""Process-wide setup of the Agents SDK, done before the first drop-in is imported.

Agent Builder exports build ``AsyncOpenAI()`` at import time and wrap runs in
``trace(...)``. So that they import without real credentials and never call
out on their own, ``prepare_sdk`` sets the environment first (this is the
only place adapters touch ``os.environ``), then imports and configures the
SDK; a repeated call with the same arguments does nothing:

- ``OPENAI_API_KEY`` (only if unset) to ``PLACEHOLDER_API_KEY``, the key
  celgate's own gateway clients carry too;
- ``OPENAI_BASE_URL`` to celgate's own ``/v1`` when known, else to a closed
  loopback port, so clients created by drop-in code talk to celgate or fail
  fast, never to api.openai.com;
- tracing export off (``OPENAI_AGENTS_DISABLE_TRACING`` and
  ``set_tracing_disabled``: a run config alone does not stop ``trace(...)``);
- the SDK's default client (the gateway client) and API (``api``: Chat
  Completions or Responses, through the gateway client), and
  ``CelgateRunner`` as the default runner, so ``Runner.run`` calls inside
  export code route through celgate.
"""

from __future__ import annotations

import functools
import os

__all__ = ["PLACEHOLDER_API_KEY", "PLACEHOLDER_BASE_URL", "prepare_sdk"]

PLACEHOLDER_API_KEY = "celgate-placeholder"
PLACEHOLDER_BASE_URL = "http://127.0.0.1:9/v1"  # the discard port: nothing listens


@functools.cache
def prepare_sdk(gateway_url: str | None, api: str) -> None:
    """Configure the environment, then import and configure the SDK (~1 s the first time).

    ``api`` is ``AgentSettings.api``: ``"chat"`` or ``"responses"``.
    """
    base_url = gateway_url or PLACEHOLDER_BASE_URL
    os.environ.setdefault("OPENAI_API_KEY", PLACEHOLDER_API_KEY)
    os.environ["OPENAI_BASE_URL"] = base_url
    os.environ["OPENAI_AGENTS_DISABLE_TRACING"] = "1"

    from agents.run import set_default_agent_runner

    import agents

    from .gateway import gateway_client
    from .runner import RUNNER

    agents.set_tracing_disabled(True)
    agents.set_default_openai_client(gateway_client(base_url, PLACEHOLDER_API_KEY), use_for_tracing=False)
    agents.set_default_openai_api("responses" if api == "responses" else "chat_completions")
    set_default_agent_runner(RUNNER)
