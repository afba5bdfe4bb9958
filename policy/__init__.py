"""celgate's policy engine: CEL + glob rules over principals, models, agents and tool calls.

Pure Python, no I/O on the evaluation path. ``load_policies`` compiles a
directory of ``*.yaml`` files into an immutable ``PolicySet``; ``PolicyStore``
keeps the active set and reloads it when the files change. Rules decide the
routes celgate governs or knows to be tool-free (``classify``, the route
table); ``routes:`` entries open the others (``PolicySet.open_route``).
See ``docs/policies.md`` for the policy language.
"""

from .decision import Decision, Explanation, RuleTrace, audit_record
from .errors import CelCompileError, CelEvalError, PolicyError, PolicyLoadError, Problem
from .evaluate import decide, explain, explain_route, open_route
from .loader import load_policies
from .policyset import PolicySet
from .route_table import Kind, NonCanonicalPath, RouteMatch, classify
from .schema import (
    ANONYMOUS,
    Action,
    Defaults,
    Effect,
    Mode,
    Point,
    Principal,
    RequestInfo,
    Route,
    Rule,
    ToolCall,
)
from .store import PolicyStore, ReloadResult

__all__ = [
    "ANONYMOUS",
    "Action",
    "CelCompileError",
    "CelEvalError",
    "Decision",
    "Defaults",
    "Effect",
    "Explanation",
    "Kind",
    "Mode",
    "NonCanonicalPath",
    "Point",
    "PolicyError",
    "PolicyLoadError",
    "PolicySet",
    "PolicyStore",
    "Principal",
    "Problem",
    "ReloadResult",
    "RequestInfo",
    "Route",
    "RouteMatch",
    "Rule",
    "RuleTrace",
    "ToolCall",
    "audit_record",
    "classify",
    "decide",
    "explain",
    "explain_route",
    "load_policies",
    "open_route",
]
