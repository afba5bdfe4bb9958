"""The one compact JSON encoder celgate writes with (SSE data, access lines, rewritten bodies)."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["compact_json"]

_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def compact_json(value: Any) -> str:
    """``value`` as JSON with no spaces and non-ASCII kept (what OpenAI sends, and the shortest)."""
    return _ENCODE(value)
