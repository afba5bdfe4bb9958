"""The celgate every interop test talks to: the shared policy (tests/helpers/interop.py) before the fake upstream."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from tests.helpers import Celgate, write_policy
from tests.helpers.fakeupstream import FakeUpstream
from tests.helpers.interop import POLICY

# LiteLLM fetches its model price map from the internet when imported unless told to use the bundled copy.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


@pytest.fixture
async def gate(upstream: FakeUpstream, start_celgate: Callable[..., Awaitable[Celgate]], tmp_path: Path) -> Celgate:
    return await start_celgate(upstream=upstream.base_url, no_policy=False, policies=write_policy(tmp_path, POLICY))


@pytest.fixture
async def stateful_upstream() -> AsyncIterator[FakeUpstream]:
    """An upstream that keeps responses as the real API does: ``previous_response_id`` chains, and refuses a
    continuation that leaves a call of the previous response unanswered (a call celgate stripped included)."""
    fake = FakeUpstream(store=True, enforce_tool_outputs=True)
    await fake.start()
    yield fake
    await fake.close()


@pytest.fixture
async def stateful_gate(
    stateful_upstream: FakeUpstream, start_celgate: Callable[..., Awaitable[Celgate]], tmp_path: Path
) -> Celgate:
    return await start_celgate(
        upstream=stateful_upstream.base_url, no_policy=False, policies=write_policy(tmp_path, POLICY)
    )
