"""celgate's policy engine: CEL + glob rules over principals, models, agents and tool calls.

Pure Python, no I/O on the evaluation path. ``load_policies`` compiles a
directory of ``*.yaml`` files into an immutable ``PolicySet``; ``PolicyStore``
keeps the active set and reloads it when the files change. See
``docs/policies.md`` for the policy language.
"""

from .decision import Decision, Explanation, RuleTrace, audit_record
from .errors import CelCompileError, CelEvalError, PolicyError, PolicyLoadError, Problem
from .evaluate import decide, explain
from .loader import load_policies
from .model import ANONYMOUS, Action, Defaults, Effect, Mode, Point, Principal, RequestInfo, Rule, ToolCall
from .policyset import PolicySet
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
    "Mode",
    "Point",
    "PolicyError",
    "PolicyLoadError",
    "PolicySet",
    "PolicyStore",
    "Principal",
    "Problem",
    "ReloadResult",
    "RequestInfo",
    "Rule",
    "RuleTrace",
    "ToolCall",
    "audit_record",
    "decide",
    "explain",
    "load_policies",
]
