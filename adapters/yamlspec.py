"""Reading the YAML files authors write (``agent.yaml``, HTTP tools, MCP servers) with a line for every field.

A typo in a declarative file must point at the file, the line and the field,
never hide the agent or tool silently. ``read_spec`` parses a file into plain
values and remembers the line of every field path (``tools[1]``,
``output.schema``); validators raise ``SpecError(field, message)`` and
``SpecFile.error`` turns it into a ``LoadError`` carrying file, line and
field. Unknown keys are errors, with the allowed keys listed. Pure: no SDK.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import LoadError

__all__ = [
    "SpecError",
    "SpecFile",
    "expand_env",
    "mapping_field",
    "name_field",
    "positive_field",
    "read_spec",
    "text_field",
]

_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_PLAIN_COLLECTIONS = frozenset({"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"})


class SpecError(Exception):
    """One invalid field of a spec file; ``field`` is its path (``""`` for the whole file).

    ``kind`` is the failure label: ``invalid_spec``, or ``missing_env`` for an unset variable.
    """

    def __init__(self, field: str, message: str, kind: str = "invalid_spec") -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.kind = kind


@dataclass(frozen=True, slots=True)
class SpecFile:
    """A parsed spec file: its top-level mapping and the line of each field path."""

    path: Path
    data: dict[str, Any]
    lines: Mapping[str, int]

    def line_of(self, field: str) -> int | None:
        """The line of ``field``, else of its nearest parent that has one."""
        while field:
            if field in self.lines:
                return self.lines[field]
            field = re.sub(r"(\.[^.\[]*|\[\d+\])$", "", field) if re.search(r"[.\[]", field) else ""
        return self.lines.get("")

    def error(self, problem: SpecError) -> LoadError:
        line = self.line_of(problem.field)
        return LoadError(problem.kind, problem.message, self.path, line=line, field=problem.field or None)

    def check_keys(self, mapping: Mapping[str, Any], allowed: set[str], where: str = "") -> None:
        """Unknown keys are an error: a misspelt ``max_turn`` must not silently mean the default."""
        for key in mapping:
            if key not in allowed:
                raise SpecError(_join(where, key), f"unknown key {key!r}; allowed: {', '.join(sorted(allowed))}")


def read_spec(path: Path) -> SpecFile:
    """Parse ``path`` (a YAML mapping); raises ``LoadError`` (``invalid_yaml``) with the line of a syntax error."""
    lines: dict[str, int] = {}
    try:
        node = yaml.compose(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
        if not isinstance(node, yaml.MappingNode):
            line = node.start_mark.line + 1 if node is not None else 1
            raise LoadError("invalid_spec", "expected a mapping of field: value", path, line=line)
        data = _value(node, "", lines, yaml.SafeLoader(""))
    except SpecError as problem:
        raise SpecFile(path, {}, lines).error(problem) from None
    except yaml.YAMLError as exc:  # syntax, or a tag the safe loader refuses (!!python/object, ...)
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise LoadError("invalid_yaml", f"not valid YAML: {exc}", path, line=line) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise LoadError("invalid_yaml", f"cannot read the file: {exc}", path) from exc
    return SpecFile(path, data, lines)


def expand_env(text: str, field: str) -> str:
    """``${NAME}`` replaced by the environment variable; an unset one is an error (fail closed, never empty)."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise SpecError(field, f"environment variable {name} is not set", "missing_env")
        return os.environ[name]

    return _ENV_REFERENCE.sub(value, text)


def name_field(data: dict[str, Any], key: str) -> str:
    """A tool name the APIs accept (``^[a-zA-Z0-9_-]{1,64}$``)."""
    name = data.get(key)
    if not isinstance(name, str) or _NAME.fullmatch(name) is None:
        raise SpecError(key, f"{key} must be 1-64 letters, digits, '_' or '-'")
    return name


def text_field(data: dict[str, Any], key: str, default: str) -> str:
    value = data.get(key, default)
    if not isinstance(value, str):
        raise SpecError(key, f"{key} must be a string")
    return value


def positive_field(data: dict[str, Any], key: str, default: float, *, integer: bool = False) -> float:
    value = data.get(key, default)
    number = isinstance(value, int) or (isinstance(value, float) and not integer)
    if isinstance(value, bool) or not number or value <= 0:
        raise SpecError(key, f"{key} must be a positive {'integer' if integer else 'number'}")
    return float(value)


def mapping_field(data: dict[str, Any], key: str) -> dict[str, str]:
    """A mapping of strings whose ``${NAME}`` references come from celgate's environment."""
    value = data.get(key, {})
    if not isinstance(value, dict) or not all(isinstance(v, str | int | float) for v in value.values()):
        raise SpecError(key, f"{key} must be a mapping of name: string")
    return {str(k): expand_env(str(v), f"{key}.{k}") for k, v in value.items()}


def _value(node: yaml.Node, path: str, lines: dict[str, int], loader: yaml.SafeLoader) -> Any:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.CollectionNode) and node.tag not in _PLAIN_COLLECTIONS:
        raise SpecError(path, f"the YAML tag {node.tag} is not allowed here", "invalid_yaml")
    if isinstance(node, yaml.MappingNode):
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = str(loader.construct_object(key_node))
            field = _join(path, key)
            lines[field] = key_node.start_mark.line + 1
            if key in result:
                raise SpecError(field, f"duplicate key {key!r}")
            result[key] = _value(value_node, field, lines, loader)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_value(item, f"{path}[{index}]", lines, loader) for index, item in enumerate(node.value)]
    return loader.construct_object(node)


def _join(parent: str, key: str) -> str:
    return f"{parent}.{key}" if parent else key
