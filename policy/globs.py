"""Glob matching: the semantics of every glob list and of CEL's ``glob()``.

Globs are fnmatch-style and case-sensitive (``fnmatch.fnmatchcase``
semantics): ``*``, ``?``, ``[...]``; ``/`` and ``.`` are ordinary characters.
Patterns are translated to regular expressions once; a list of patterns is
one alternation, so matching a list costs one regex call. This module is the
bottom of the package: it imports nothing of celgate's.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Sequence
from functools import lru_cache

__all__ = ["GlobList", "glob"]

_Matcher = Callable[[str], "re.Match[str] | None"]


@lru_cache(maxsize=4096)
def _compile(pattern: str) -> _Matcher:
    return re.compile(fnmatch.translate(pattern)).match


def glob(value: str, pattern: str) -> bool:
    """The CEL ``glob(value, pattern)`` function: cached compiled patterns, fnmatchcase semantics."""
    return _compile(pattern)(value) is not None


class GlobList:
    """A glob list (a rule's ``principals``, ``models``, ..., a route's ``paths``): matches if any pattern matches."""

    __slots__ = ("_match", "patterns")

    def __init__(self, patterns: Sequence[str]) -> None:
        self.patterns = tuple(patterns)
        self._match: _Matcher = re.compile("|".join(fnmatch.translate(p) for p in self.patterns)).match

    def matches(self, value: str) -> bool:
        return self._match(value) is not None

    def __repr__(self) -> str:
        return f"GlobList({list(self.patterns)!r})"
