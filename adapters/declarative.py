"""Declarative agents: ``agents/<Name>/agent.yaml`` compiled into an Agents SDK ``Agent``.

::

    description: Answers order questions.
    model: gpt-4.1-mini          # optional: else --agents-model
    instructions: You answer questions about orders. Use the tools.
    tools: [lookup_order, "docs_*"]      # names or globs over the gateway tool catalogue
    tool_choice: auto            # auto | required | none | one tool's name
    parallel_tool_calls: true
    max_turns: 6
    handoffs: [Billing]          # other agents (declarative or Python) by model name
    output: text                 # or {schema: {...JSON schema...}, strict: true}

A compiled agent is an ordinary ``Agent``, served through the drop-in
runtime: the same streaming, policy, audit and metrics. Compiling is cheap
and happens again whenever the catalogue or another agent changes
(``compile_agents``), so a declarative agent always offers the current
tools and hands off to the current versions. Every problem is a
``LoadError`` with file, line and field; an exact tool name or handoff that
does not exist is one too (a glob may match nothing).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
from agents.agent_output import AgentOutputSchemaBase
from agents.exceptions import ModelBehaviorError

from agents import Agent, FunctionTool, ModelSettings

from .catalogue import ToolCatalogue, is_glob
from .errors import LoadError
from .yamlspec import SpecError, SpecFile, positive_field, read_spec, text_field

__all__ = ["DeclarativeSpec", "JsonSchemaOutput", "compile_agents", "read_declarative"]

_KEYS = {
    "description",
    "model",
    "instructions",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "max_turns",
    "handoffs",
    "output",
}
_OUTPUT_KEYS = {"schema", "strict"}
_CHOICES = ("auto", "required", "none")


@dataclass(frozen=True, slots=True)
class DeclarativeSpec:
    """A validated ``agent.yaml``; ``file`` keeps the lines for errors found when compiling."""

    name: str
    file: SpecFile
    description: str | None
    model: str | None
    instructions: str
    tools: tuple[str, ...]
    tool_choice: str | None
    parallel_tool_calls: bool | None
    max_turns: int | None
    handoffs: tuple[str, ...]
    output: JsonSchemaOutput | None


class JsonSchemaOutput(AgentOutputSchemaBase):
    """Structured output from a JSON schema written in YAML; the final output is the validated object."""

    def __init__(self, schema: dict[str, Any], name: str, strict: bool) -> None:
        self._schema = schema
        self._name = name
        self._strict = strict
        self._validator = jsonschema.Draft202012Validator(schema)

    def is_plain_text(self) -> bool:
        return False

    def name(self) -> str:
        return self._name

    def json_schema(self) -> dict[str, Any]:
        return self._schema

    def is_strict_json_schema(self) -> bool:
        return self._strict

    def validate_json(self, json_str: str) -> Any:
        try:
            value = json.loads(json_str)
        except ValueError as exc:
            raise ModelBehaviorError(f"the model's output is not JSON: {exc}") from exc
        error = jsonschema.exceptions.best_match(self._validator.iter_errors(value))
        if error is not None:
            raise ModelBehaviorError(f"the model's output does not match the {self._name} schema: {error.message}")
        return value


def read_declarative(name: str, path: Path) -> DeclarativeSpec:
    """Read and validate ``agent.yaml``; raises ``LoadError`` with file, line and field."""
    spec = read_spec(path)
    try:
        return _validated(name, spec)
    except SpecError as problem:
        raise spec.error(problem) from None


def compile_agents(
    specs: Mapping[str, DeclarativeSpec], catalogue: ToolCatalogue | None, other: Callable[[str], Agent[Any] | None]
) -> dict[str, Agent[Any] | LoadError]:
    """Every spec as an ``Agent`` (or why it cannot be one); handoffs may point at each other."""
    built: dict[str, Agent[Any] | LoadError] = {}
    for name, spec in specs.items():
        try:
            built[name] = _agent(spec, catalogue)
        except SpecError as problem:
            built[name] = spec.file.error(problem)
    for name, spec in specs.items():
        agent = built[name]
        if isinstance(agent, Agent):
            try:
                agent.handoffs = [
                    _handoff(spec, index, target, built, other) for index, target in enumerate(spec.handoffs)
                ]
            except SpecError as problem:
                built[name] = spec.file.error(problem)
    return built


def _validated(name: str, spec: SpecFile) -> DeclarativeSpec:
    data = spec.data
    spec.check_keys(data, _KEYS)
    instructions = text_field(data, "instructions", "")
    if not instructions.strip():
        raise SpecError("instructions", "instructions are required")
    model = data.get("model")
    if model is not None and (not isinstance(model, str) or not model.strip()):
        raise SpecError("model", "model must be a non-empty string")
    description = data.get("description")
    if description is not None and not isinstance(description, str):
        raise SpecError("description", "description must be a string")
    parallel = data.get("parallel_tool_calls")
    if parallel is not None and not isinstance(parallel, bool):
        raise SpecError("parallel_tool_calls", "parallel_tool_calls must be true or false")
    tools = _names(data, "tools")
    choice = data.get("tool_choice")
    if choice is not None and (not isinstance(choice, str) or not choice):
        raise SpecError("tool_choice", f"tool_choice must be {', '.join(_CHOICES)} or a tool's name")
    max_turns = data.get("max_turns")
    return DeclarativeSpec(
        name=name,
        file=spec,
        description=description,
        model=model,
        instructions=instructions,
        tools=tools,
        tool_choice=choice,
        parallel_tool_calls=parallel,
        max_turns=int(positive_field(data, "max_turns", 1, integer=True)) if max_turns is not None else None,
        handoffs=_names(data, "handoffs"),
        output=_output(data.get("output", "text"), spec, name),
    )


def _names(data: dict[str, Any], key: str) -> tuple[str, ...]:
    value = data.get(key, [])
    if not isinstance(value, list):
        raise SpecError(key, f"{key} must be a list of names")
    for index, item in enumerate(value):
        if not isinstance(item, str) or not item:
            raise SpecError(f"{key}[{index}]", f"{key} entries must be non-empty strings")
    return tuple(value)


def _output(value: Any, spec: SpecFile, agent: str) -> JsonSchemaOutput | None:
    if value == "text":
        return None
    if not isinstance(value, dict):
        raise SpecError("output", "output must be text or a mapping with a JSON schema under schema:")
    spec.check_keys(value, _OUTPUT_KEYS, "output")
    schema = value.get("schema")
    if not isinstance(schema, dict):
        raise SpecError("output.schema", "output.schema must be a JSON schema (a mapping)")
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.exceptions.SchemaError as exc:
        raise SpecError("output.schema", f"not a valid JSON schema: {exc.message}") from None
    strict = value.get("strict", False)
    if not isinstance(strict, bool):
        raise SpecError("output.strict", "output.strict must be true or false")
    return JsonSchemaOutput(schema, f"{agent} output", strict)


def _agent(spec: DeclarativeSpec, catalogue: ToolCatalogue | None) -> Agent[Any]:
    tools = _tools(spec, catalogue)
    choice = spec.tool_choice
    if choice is not None and choice not in _CHOICES and choice not in {t.name for t in tools}:
        raise SpecError("tool_choice", f"tool_choice {choice!r} is not one of this agent's tools")
    settings = ModelSettings(tool_choice=choice, parallel_tool_calls=spec.parallel_tool_calls)
    return Agent(
        name=spec.name,
        instructions=spec.instructions,
        model=spec.model,
        tools=list(tools),
        model_settings=settings,
        output_type=spec.output,
    )


def _tools(spec: DeclarativeSpec, catalogue: ToolCatalogue | None) -> list[FunctionTool]:
    """The catalogue tools the names and globs select, once each, in the order written."""
    chosen: dict[str, FunctionTool] = {}
    for index, pattern in enumerate(spec.tools):
        found = catalogue.matching(pattern) if catalogue is not None else []
        if not found and not is_glob(pattern):
            known = ", ".join(catalogue.names()) if catalogue is not None and catalogue.names() else "none"
            raise SpecError(f"tools[{index}]", f"no gateway tool named {pattern!r} (loaded: {known})")
        chosen.update((tool.name, tool) for tool in found)
    return list(chosen.values())


def _handoff(
    spec: DeclarativeSpec,
    index: int,
    target: str,
    built: Mapping[str, Agent[Any] | LoadError],
    other: Callable[[str], Agent[Any] | None],
) -> Agent[Any]:
    found = built.get(target)
    agent = found if isinstance(found, Agent) else other(target)
    if agent is None:
        raise SpecError(f"handoffs[{index}]", f"no loaded agent {target!r} to hand off to (a plain Agent is needed)")
    return agent
