"""The tools a request offers the model, in both APIs, and removing those policy can never allow.

Chat completions offers ``tools`` (``{"type": "function", "function": {...}}``
or ``{"type": "custom", "custom": {...}}``) and legacy ``functions``; the
Responses API offers ``tools`` with the name at the top (``{"type":
"function", "name": ...}``) and hosted tools by type (``web_search``,
``mcp``, ...). Policy sees every offered tool by name (functions and custom
tools) or type (hosted tools) in ``request.tools``, and their definitions in
``request.tool_definitions``. Functions and custom tools no rule could allow
are removed before the request goes upstream, with any ``tool_choice`` /
``function_call`` that names them; hosted tools are the provider's to run,
so they are judged at admission only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import BadRequest

__all__ = ["OfferedTool", "offered_tools", "without_tools"]

_NAMED_TYPES = frozenset({"function", "custom"})
_SCALARS = (str, int, float, bool)


@dataclass(frozen=True, slots=True)
class OfferedTool:
    name: str  # a function's or custom tool's name, else the hosted tool's type
    type: str
    definition: Mapping[str, Any]  # what rules read: type, name, and the definition's scalar fields

    @property
    def named(self) -> bool:
        """A function or custom tool: the app runs its calls, and policy decides each one."""
        return self.type in _NAMED_TYPES


def offered_tools(body: Mapping[str, Any]) -> list[OfferedTool]:
    """Every tool the request offers; a malformed entry is the client's mistake (400)."""
    offered = [_offered(entry, "tools") for entry in _entries(body, "tools")]
    for entry in _entries(body, "functions"):
        offered.append(_named("function", entry.get("name"), entry, "functions"))
    return offered


def without_tools(body: dict[str, Any], keep: Callable[[str], bool]) -> bool:
    """Remove the functions and custom tools whose name ``keep`` refuses, in place; True if any went."""
    removed: set[str] = set()
    for field in ("tools", "functions"):
        entries = body.get(field)
        if not isinstance(entries, list):
            continue
        kept = []
        for entry in entries:
            tool = _offered(entry, field) if field == "tools" else _named("function", entry.get("name"), entry, field)
            if tool.named and not keep(tool.name):
                removed.add(tool.name)
            else:
                kept.append(entry)
        body[field] = kept
    if not removed:
        return False
    _drop_choices_naming(body, removed)
    if not body.get("tools"):
        for field in ("tools", "tool_choice", "parallel_tool_calls"):
            body.pop(field, None)
    if not body.get("functions"):
        body.pop("functions", None)
        body.pop("function_call", None)
    return True


def _entries(body: Mapping[str, Any], field: str) -> list[dict[str, Any]]:
    entries = body.get(field)
    if entries is None:
        return []
    if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
        raise BadRequest(f"'{field}' must be an array of objects", param=field, code="invalid_type")
    return entries


def _offered(entry: Any, field: str) -> OfferedTool:
    if not isinstance(entry, dict) or not isinstance(entry.get("type"), str):
        raise BadRequest(f"every entry of '{field}' needs a string 'type'", param=field, code="invalid_type")
    kind = entry["type"]
    if kind not in _NAMED_TYPES:
        return OfferedTool(kind, kind, _definition(kind, "", entry))
    nested = entry.get(kind)  # chat nests the definition: {"type": "function", "function": {...}}
    if isinstance(nested, dict) and "name" in entry and entry["name"] != nested.get("name"):
        # both shapes at once: policy and a lenient upstream could read different tools
        raise BadRequest(f"an entry of '{field}' names one tool at the top and another inside", param=field)
    source = nested if isinstance(nested, dict) else entry
    return _named(kind, source.get("name"), source, field)


def _named(kind: str, name: Any, source: Mapping[str, Any], field: str) -> OfferedTool:
    if not isinstance(name, str) or not name:
        raise BadRequest(f"every {kind} in '{field}' needs a non-empty string 'name'", param=field, code="invalid_type")
    return OfferedTool(name, kind, _definition(kind, name, source))


def _definition(kind: str, name: str, source: Mapping[str, Any]) -> dict[str, Any]:
    scalars = {k: v for k, v in source.items() if isinstance(v, _SCALARS) and k not in ("type", "name")}
    return {**scalars, "type": kind, "name": name}


def _drop_choices_naming(body: dict[str, Any], removed: set[str]) -> None:
    """A ``tool_choice`` / ``function_call`` that forces a removed tool goes too (the upstream would refuse it)."""
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        nested = choice.get("allowed_tools")  # chat nests the list; the Responses API does not
        allowed: dict[str, Any] = nested if isinstance(nested, dict) else choice
        if choice.get("type") == "allowed_tools" and isinstance(allowed.get("tools"), list):
            allowed["tools"] = [t for t in allowed["tools"] if _choice_name(t) not in removed]
            if not allowed["tools"]:
                body.pop("tool_choice")
        elif _choice_name(choice) in removed:
            body.pop("tool_choice")
    legacy = body.get("function_call")
    if isinstance(legacy, dict) and legacy.get("name") in removed:
        body.pop("function_call")


def _choice_name(choice: Any) -> str | None:
    if not isinstance(choice, dict):
        return None
    nested = choice.get(choice.get("type", ""))
    name = nested.get("name") if isinstance(nested, dict) else choice.get("name")
    return name if isinstance(name, str) else None
