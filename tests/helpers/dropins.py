"""Drop-in agents in tests: writing one to disk, and undoing the Agents SDK's process-wide setup."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from celgate.adapters.sdkenv import prepare_sdk

__all__ = ["SDK_VARIABLES", "sdk_environment", "write_agent"]

SDK_VARIABLES = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_AGENTS_DISABLE_TRACING")


def write_agent(root: Path, name: str, source: str, **files: str) -> Path:
    """``root/name/agent.py`` (dedented) plus extra files: ``helpers_py="..."`` -> ``helpers.py`` (``_txt``: .txt)."""
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "agent.py").write_text(textwrap.dedent(source))
    for file_name, content in files.items():
        (folder / file_name.replace("_py", ".py").replace("_txt", ".txt")).write_text(textwrap.dedent(content))
    return folder


@pytest.fixture(autouse=True)
def sdk_environment() -> Iterator[None]:
    """Each test starts without the SDK's OPENAI_* variables, and whatever a registry set is undone after it.

    ``prepare_sdk`` is cached per gateway URL, so it is cleared too: the next
    registry must set the variables again (an Agent Builder export's
    import-time ``AsyncOpenAI()`` needs ``OPENAI_API_KEY``). Autouse in the
    modules that import it.
    """
    saved = dict(os.environ)
    for name in SDK_VARIABLES:
        os.environ.pop(name, None)
    prepare_sdk.cache_clear()
    yield
    os.environ.clear()
    os.environ.update(saved)
    prepare_sdk.cache_clear()
