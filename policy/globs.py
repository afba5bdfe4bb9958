"""Glob matching and the candidate index.

Globs are fnmatch-style and case-sensitive (``fnmatch.fnmatchcase``
semantics): ``*``, ``?``, ``[...]``; ``/`` and ``.`` are ordinary characters.
Patterns are translated to regular expressions once; a rule's list of patterns
is one alternation, so matching a list costs one regex call.

The candidate index answers "which rules could apply here?" from the glob
lists alone, and memoizes the answer (with whatever the evaluator derives
from it) per (point, principal, model, agent, tool) in a bounded LRU, so
steady-state traffic does a single dict lookup instead of scanning every rule.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from typing import Generic, TypeVar

from .model import Point, Rule

__all__ = ["CandidateIndex", "GlobList", "glob", "mismatched_lists"]

T = TypeVar("T")
_Matcher = Callable[[str], "re.Match[str] | None"]


@lru_cache(maxsize=4096)
def _compile(pattern: str) -> _Matcher:
    return re.compile(fnmatch.translate(pattern)).match


def glob(value: str, pattern: str) -> bool:
    """The CEL ``glob(value, pattern)`` function: cached compiled patterns, fnmatchcase semantics."""
    return _compile(pattern)(value) is not None


class GlobList:
    """A rule's glob list (``principals``, ``models``, ...): matches if any pattern matches."""

    __slots__ = ("_match", "patterns")

    def __init__(self, patterns: Sequence[str]) -> None:
        self.patterns = tuple(patterns)
        self._match: _Matcher = re.compile("|".join(fnmatch.translate(p) for p in self.patterns)).match

    def matches(self, value: str) -> bool:
        return self._match(value) is not None

    def __repr__(self) -> str:
        return f"GlobList({list(self.patterns)!r})"


def mismatched_lists(rule: Rule, principal_id: str, model: str, agent: str, tool: str) -> tuple[str, ...]:
    """Names of the rule's glob lists that do not match; empty means the rule is a candidate.

    A rule with an ``agents`` list never matches a request that has no agent (``agent == ""``).
    """
    failed = []
    if rule.principals is not None and not rule.principals.matches(principal_id):
        failed.append("principals")
    if rule.models is not None and not rule.models.matches(model):
        failed.append("models")
    if rule.agents is not None and not (agent and rule.agents.matches(agent)):
        failed.append("agents")
    if rule.tools is not None and not rule.tools.matches(tool):
        failed.append("tools")
    return tuple(failed)


class CandidateIndex(Generic[T]):
    """Rules grouped by point; per-candidate-set values memoized in a bounded LRU owned by one snapshot.

    ``lookup(point, principal_id, model, agent, tool)`` returns ``summarize(candidates)``,
    computed once per distinct key while it stays in the LRU.
    """

    def __init__(
        self, rules: Iterable[Rule], summarize: Callable[[tuple[Rule, ...]], T], memo_size: int = 2048
    ) -> None:
        by_point: dict[Point, list[Rule]] = {}
        for rule in rules:
            by_point.setdefault(rule.point, []).append(rule)
        self._by_point = {point: tuple(group) for point, group in by_point.items()}
        self._summarize = summarize
        self.lookup: Callable[[Point, str, str, str, str], T] = lru_cache(maxsize=memo_size)(self._candidates)

    def rules(self, point: Point) -> tuple[Rule, ...]:
        """Every rule of a point, in policy order."""
        return self._by_point.get(point, ())

    def _candidates(self, point: Point, principal_id: str, model: str, agent: str, tool: str) -> T:
        return self._summarize(
            tuple(rule for rule in self.rules(point) if not mismatched_lists(rule, principal_id, model, agent, tool))
        )
