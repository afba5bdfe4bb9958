"""Which tool and model names policy decides on: one spelling only, or the call is denied.

Globs match names exactly and case-sensitively, and an app looks its tools up
by exact name, so ``Shell.exec`` is simply another tool. But an app or
upstream may strip whitespace, drop control or invisible characters, or
normalise Unicode before it looks a name up; then ``shell.exec `` would run
``shell.exec`` past a deny rule that did not match it. A name that any such
step could change is not plausible, and is denied without evaluating rules.
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache

__all__ = ["MAX_NAME_LENGTH", "name_problem"]

MAX_NAME_LENGTH = 256  # OpenAI allows 64 characters, MCP 128


@lru_cache(maxsize=4096)
def name_problem(name: str) -> str | None:
    """Why ``name`` is not one plausible spelling of a name, or None (memoized: names repeat)."""
    if not name:
        return "it is empty"
    if len(name) > MAX_NAME_LENGTH:
        return f"it is longer than {MAX_NAME_LENGTH} characters"
    if name.isascii():
        bad = next((c for c in name if not c.isprintable() or c == " "), None)
    else:
        bad = next((c for c in name if unicodedata.category(c)[0] in "CZ"), None)
    if bad is not None:
        return f"it holds U+{ord(bad):04X} (whitespace, a control or an invisible character)"
    if not name.isascii() and unicodedata.normalize("NFKC", name) != name:
        return "Unicode normalisation (NFKC) changes it"
    return None
