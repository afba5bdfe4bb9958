"""Which rules or routes could apply: glob lists checked, and the memoized candidate index.

The candidate index answers "which rules could apply here?" from the glob
lists alone, and memoizes the answer (with whatever the evaluator derives
from it) per (point, principal, model, agent, tool) in a bounded LRU, so
steady-state traffic does a single dict lookup instead of scanning every rule.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import Generic, TypeVar

from .schema import Effect, Point, Route, Rule

__all__ = ["CandidateIndex", "mismatched_lists", "mismatched_route_lists"]

T = TypeVar("T")


def mismatched_lists(rule: Rule, principal_id: str, model: str, agent: str, tool: str) -> tuple[str, ...]:
    """Names of the rule's glob lists that do not match; empty means the rule is a candidate.

    A rule with an ``agents`` list never matches a request that has no agent (``agent == ""``).
    A tool call without a model (a stored object read back: the read names none) meets every
    ``tool_call`` deny rule whatever its ``models``, since the model that made the call is unknown.
    """
    failed = []
    if rule.principals is not None and not rule.principals.matches(principal_id):
        failed.append("principals")
    if rule.models is not None and not (rule.models.matches(model) or _unknown_model_denies(rule, model)):
        failed.append("models")
    if rule.agents is not None and not (agent and rule.agents.matches(agent)):
        failed.append("agents")
    if rule.tools is not None and not rule.tools.matches(tool):
        failed.append("tools")
    return tuple(failed)


def _unknown_model_denies(rule: Rule, model: str) -> bool:
    return not model and rule.point is Point.TOOL_CALL and rule.effect is Effect.DENY


def mismatched_route_lists(route: Route, principal_id: str, method: str, path: str) -> tuple[str, ...]:
    """Names of the route's lists (``paths``, ``methods``, ``principals``) that do not match; empty: a candidate."""
    failed = []
    if not route.paths.matches(path):
        failed.append("paths")
    if route.methods is not None and method not in route.methods:
        failed.append("methods")
    if route.principals is not None and not route.principals.matches(principal_id):
        failed.append("principals")
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
