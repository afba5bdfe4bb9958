"""Policy files → a compiled ``PolicySet``, or a ``PolicyLoadError`` listing every problem.

Every ``*.yaml`` / ``*.yml`` file directly in the directory (not in
subdirectories; names starting with ``.`` are skipped) is one part of the set.
Files are read through symlinks, as a Kubernetes ConfigMap volume presents
them (``policy.yaml -> ..data/policy.yaml``); a symlink whose target is
missing is a problem, not a file silently left out of the set.
The YAML is walked node by node so every problem carries its file and line,
and so ``on:`` stays a key (plain YAML 1.1 would read it as ``true``).

Beyond structure, the loader lints what would otherwise fail silently at run
time: every ``when`` is compiled once (syntax, undeclared variables, types on
cel-expr); a ``request`` rule or a route may not read ``tool``; functions
outside celgate's CEL subset, ``matches`` in function form, invalid regex
literals and expressions celgate cannot analyse are rejected. ``routes:``
entries (the ungoverned paths a policy opens) are read and checked like rules.
All problems are collected before failing.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .backends import DEFAULT_BACKEND, VARIABLES, Backend, Program, get_backend
from .context import NOW_SECOND, PER_CALL_FIELDS, ROOTS
from .errors import CelCompileError, PolicyLoadError, Problem
from .globs import GlobList
from .policyset import PolicySet
from .schema import RULE_POINTS, Action, Defaults, Effect, Mode, Point, Principal, Route, Rule

if TYPE_CHECKING:
    from .references import References

__all__ = ["SUPPORTED_FUNCTIONS", "is_policy_name", "load_policies", "policy_files"]

SUPPORTED_FUNCTIONS = frozenset(
    {
        # macros
        "has",
        "all",
        "exists",
        "exists_one",
        "map",
        "filter",
        # strings, lists, maps
        "size",
        "contains",
        "startsWith",
        "endsWith",
        "matches",
        # types and conversions
        "type",
        "int",
        "uint",
        "double",
        "string",
        "bool",
        "bytes",
        "timestamp",
        "duration",
        # timestamp accessors
        "getFullYear",
        "getMonth",
        "getDate",
        "getDayOfMonth",
        "getDayOfWeek",
        "getDayOfYear",
        "getHours",
        "getMinutes",
        "getSeconds",
        "getMilliseconds",
        # celgate
        "glob",
    }
)

_TOP_KEYS = ("version", "defaults", "principals", "rules", "routes")
_DEFAULT_KEYS = ("decision", "mode", "deny_message")
_RULE_KEYS = ("name", "on", "principals", "models", "agents", "tools", "when", "effect", "reason", "mode", "action")
_GLOB_KEYS = ("principals", "models", "agents", "tools")
_ROUTE_KEYS = ("id", "paths", "methods", "principals", "when", "description")
_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
# A canonical path has no empty, "." or ".." segment; a pattern with one could never match.
_NOT_CANONICAL = re.compile(r"//|/\.\.?(?:/|$)")
_PRINCIPAL_RESERVED = ("id", "key_sha256", "key_env")
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_NULL_TAG = "tag:yaml.org,2002:null"


def is_policy_name(name: str) -> bool:
    """Whether an entry named ``name`` belongs to the set; dot names (a ConfigMap's ``..data``) never do."""
    return name.endswith((".yaml", ".yml")) and not name.startswith(".")


def policy_files(directory: Path) -> list[Path]:
    """The files a policy set is made of, in load order.

    A dangling symlink is kept so that reading it fails the load: dropping it
    would silently remove its rules from the set.
    """
    candidates = (p for p in directory.iterdir() if is_policy_name(p.name))
    return sorted(p for p in candidates if p.is_file() or (p.is_symlink() and not p.exists()))


@dataclass
class _Located:
    """A value from a policy file with the line it came from."""

    value: Any
    file: str
    line: int


@dataclass
class _RawRule:
    file: str
    line: int
    name: str
    fields: dict[str, Any]
    when_line: int | None = None


@dataclass
class _RawRoute:
    file: str
    line: int
    id: str
    fields: dict[str, Any]
    when_line: int | None = None


@dataclass
class _RawPrincipal:
    file: str
    line: int
    id: str
    attributes: dict[str, Any]
    key_sha256: str | None
    key_env: str | None


@dataclass
class _Parsed:
    defaults: dict[str, _Located] = field(default_factory=dict)
    principals: list[_RawPrincipal] = field(default_factory=list)
    rules: list[_RawRule] = field(default_factory=list)
    routes: list[_RawRoute] = field(default_factory=list)


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


def _content_line(node: Node) -> int:
    """First line of a scalar's text: block scalars (``|``, ``>``) start on the next line."""
    return _line(node) + (1 if isinstance(node, ScalarNode) and node.style in ("|", ">") else 0)


def _suggest(key: str, known: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


class _FileReader:
    """Walks one file's YAML nodes, appending problems instead of stopping at the first."""

    def __init__(self, path: Path, text: str, parsed: _Parsed, problems: list[Problem]) -> None:
        self.file = str(path)
        self._parsed = parsed
        self._problems = problems
        self._loader = yaml.SafeLoader(text)

    def problem(self, line: int | None, rule: str | None, message: str) -> None:
        self._problems.append(Problem(self.file, line, rule, message))

    def read(self) -> None:
        try:
            root = self._loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            self.problem(mark.line + 1 if mark else None, None, f"invalid YAML: {exc.problem or exc}")
            return
        except yaml.YAMLError as exc:
            self.problem(None, None, f"invalid YAML: {exc}")
            return
        if not isinstance(root, MappingNode):
            self.problem(
                None if root is None else _line(root), None, "expected a mapping with `version: 1` and `rules:`"
            )
            return
        self._read_top(root)

    def _pairs(self, node: MappingNode, rule: str | None, known: tuple[str, ...], what: str) -> dict[str, Node]:
        """A mapping's values by key; unknown and duplicate keys are problems."""
        pairs: dict[str, Node] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value) if isinstance(key_node, ScalarNode) else ""
            if key not in known:
                self.problem(_line(key_node), rule, f"unknown key {key!r} in {what}{_suggest(key, known)}")
            elif key in pairs:
                self.problem(_line(key_node), rule, f"duplicate key {key!r} in {what}")
            else:
                pairs[key] = value_node
        return pairs

    def _read_top(self, root: MappingNode) -> None:
        pairs = self._pairs(root, None, _TOP_KEYS, "the policy file")
        version = pairs.get("version")
        if version is None:
            self.problem(_line(root), None, "missing `version: 1`")
        elif not (isinstance(version, ScalarNode) and version.value == "1"):
            self.problem(_line(version), None, f"unsupported version {getattr(version, 'value', '?')!r}; expected 1")
        if "defaults" in pairs:
            self._read_defaults(pairs["defaults"])
        readers = (("principals", self._read_principal), ("rules", self._read_rule), ("routes", self._read_route))
        for key, reader in readers:
            node = pairs.get(key)
            if node is None or (isinstance(node, ScalarNode) and node.tag == _NULL_TAG):
                continue
            if not isinstance(node, SequenceNode):
                self.problem(_line(node), None, f"`{key}` must be a list")
                continue
            for item in node.value:
                reader(item)

    def _scalar(self, node: Node, rule: str | None, key: str) -> str | None:
        """The raw text of a scalar (no YAML 1.1 bool/number guessing), or a problem."""
        if not isinstance(node, ScalarNode) or node.tag == _NULL_TAG or node.value == "":
            self.problem(_line(node), rule, f"`{key}` must be a non-empty string")
            return None
        return str(node.value)

    def _choice(self, node: Node, rule: str | None, key: str, members: Iterable[StrEnum]) -> Any:
        """One of ``members`` (an enum, or some of its members) by value, or a problem listing them."""
        text = self._scalar(node, rule, key)
        if text is None:
            return None
        value = next((member for member in members if member.value == text), None)
        if value is None:
            choices = " | ".join(member.value for member in members)
            self.problem(_line(node), rule, f"`{key}` must be one of {choices}, not {text!r}")
        return value

    def _read_defaults(self, node: Node) -> None:
        if not isinstance(node, MappingNode):
            self.problem(_line(node), None, "`defaults` must be a mapping")
            return
        pairs = self._pairs(node, None, _DEFAULT_KEYS, "defaults")
        readers: dict[str, Callable[[Node], Any]] = {
            "decision": lambda n: self._choice(n, None, "defaults.decision", Effect),
            "mode": lambda n: self._choice(n, None, "defaults.mode", Mode),
            "deny_message": self._deny_message,
        }
        for key, value_node in pairs.items():
            value = readers[key](value_node)
            if value is not None:
                self._parsed.defaults.setdefault(key, _Located(value, self.file, _line(value_node)))
                self._check_default_conflict(key, value, value_node)

    def _check_default_conflict(self, key: str, value: Any, node: Node) -> None:
        first = self._parsed.defaults[key]
        if first.value != value:
            self.problem(_line(node), None, f"defaults.{key} conflicts with {first.file}:{first.line}")

    def _deny_message(self, node: Node) -> str | None:
        text = self._scalar(node, None, "defaults.deny_message")
        if text is None:
            return None
        try:
            text.format(subject="", rule="", reason="")
        except (KeyError, IndexError, ValueError) as exc:
            self.problem(
                _line(node), None, f"deny_message: bad placeholder {exc}; use {{subject}}, {{rule}}, {{reason}}"
            )
            return None
        return text

    def _read_principal(self, node: Node) -> None:
        if not isinstance(node, MappingNode):
            self.problem(_line(node), None, "each principal must be a mapping with an `id`")
            return
        values: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            if key in values:
                self.problem(_line(key_node), None, f"duplicate key {key!r} in principal")
            try:
                values[key] = self._loader.construct_object(value_node, deep=True)
            except yaml.YAMLError as exc:
                self.problem(_line(value_node), None, f"principal field {key!r}: {exc}")
        pid = values.get("id")
        if not isinstance(pid, str) or not pid:
            self.problem(_line(node), None, "principal needs an `id` (a non-empty string)")
            return
        self._check_principal(node, pid, values)

    def _check_principal(self, node: Node, pid: str, values: dict[str, Any]) -> None:
        key_sha256, key_env = values.get("key_sha256"), values.get("key_env")
        problems_before = len(self._problems)
        if pid == "anonymous":
            self.problem(_line(node), pid, "principal id 'anonymous' is reserved for callers without a known key")
        if (key_sha256 is None) == (key_env is None):
            self.problem(_line(node), pid, "principal needs exactly one of `key_sha256` or `key_env`")
        if key_sha256 is not None and not (isinstance(key_sha256, str) and _SHA256.fullmatch(key_sha256)):
            self.problem(_line(node), pid, "`key_sha256` must be 64 hex digits (sha256 of the key)")
        if key_env is not None and not (isinstance(key_env, str) and key_env):
            self.problem(_line(node), pid, "`key_env` must name an environment variable")
        attributes = {k: v for k, v in values.items() if k not in _PRINCIPAL_RESERVED}
        for name, value in attributes.items():
            bad = _non_json(value)
            if bad:
                self.problem(_line(node), pid, f"attribute {name!r}: unsupported value type {bad} (quote it)")
        if len(self._problems) == problems_before:
            digest = key_sha256.lower() if isinstance(key_sha256, str) else None
            self._parsed.principals.append(_RawPrincipal(self.file, _line(node), pid, attributes, digest, key_env))

    def _read_rule(self, node: Node) -> None:
        if not isinstance(node, MappingNode):
            self.problem(_line(node), None, "each rule must be a mapping")
            return
        name_node = next((v for k, v in node.value if isinstance(k, ScalarNode) and k.value == "name"), None)
        name = name_node.value if isinstance(name_node, ScalarNode) and name_node.value else None
        if name is None:
            self.problem(_line(node), None, "rule needs a `name`")
            return
        raw = _RawRule(self.file, _line(node), str(name), {})
        for key, value_node in self._pairs(node, raw.name, _RULE_KEYS, "rule").items():
            value = self._rule_value(raw, key, value_node)
            if value is not None:
                raw.fields[key] = value
        if self._check_rule(raw, node):
            self._parsed.rules.append(raw)

    def _rule_value(self, raw: _RawRule, key: str, node: Node) -> Any:
        if key == "on":
            return self._choice(node, raw.name, key, RULE_POINTS)
        enums = {"effect": Effect, "mode": Mode, "action": Action}
        if key in enums:
            return self._choice(node, raw.name, key, enums[key])
        if key in _GLOB_KEYS:
            return self._globs(node, raw.name, key)
        if key == "when":
            raw.when_line = _content_line(node)
        return self._scalar(node, raw.name, key)

    def _strings(self, node: Node, rule: str, key: str, what: str) -> list[str] | None:
        """A non-empty list of non-empty strings, or a problem."""
        if not isinstance(node, SequenceNode) or not node.value:
            self.problem(_line(node), rule, f"`{key}` must be a non-empty list of {what}")
            return None
        items = [str(item.value) for item in node.value if isinstance(item, ScalarNode) and item.value]
        if len(items) != len(node.value):
            self.problem(_line(node), rule, f"`{key}` entries must be non-empty strings")
            return None
        return items

    def _globs(self, node: Node, rule: str, key: str) -> GlobList | None:
        patterns = self._strings(node, rule, key, "glob patterns")
        return GlobList(patterns) if patterns is not None else None

    def _read_route(self, node: Node) -> None:
        if not isinstance(node, MappingNode):
            self.problem(_line(node), None, "each route must be a mapping with an `id` and `paths`")
            return
        id_node = next((v for k, v in node.value if isinstance(k, ScalarNode) and k.value == "id"), None)
        route_id = id_node.value if isinstance(id_node, ScalarNode) and id_node.value else None
        if route_id is None:
            self.problem(_line(node), None, "route needs an `id`")
            return
        raw = _RawRoute(self.file, _line(node), str(route_id), {})
        for key, value_node in self._pairs(node, raw.id, _ROUTE_KEYS, "route").items():
            value = self._route_value(raw, key, value_node)
            if value is not None:
                raw.fields[key] = value
        if "paths" in raw.fields:  # complete enough to compile, so its `when` is checked too
            self._parsed.routes.append(raw)
        elif not any(k.value == "paths" for k, _ in node.value):
            self.problem(raw.line, raw.id, "route needs `paths`")

    def _route_value(self, raw: _RawRoute, key: str, node: Node) -> Any:
        if key == "paths":
            return self._paths(node, raw.id)
        if key == "methods":
            return self._methods(node, raw.id)
        if key == "principals":
            return self._globs(node, raw.id, key)
        if key == "when":
            raw.when_line = _content_line(node)
        return self._scalar(node, raw.id, key)

    def _paths(self, node: Node, route: str) -> GlobList | None:
        patterns = self._strings(node, route, "paths", "path globs")
        if patterns is None:
            return None
        for pattern in patterns:
            if not pattern.startswith("/"):
                self.problem(_line(node), route, f"path {pattern!r} must start with '/'")
                return None
            if _NOT_CANONICAL.search(pattern):
                self.problem(_line(node), route, f"path {pattern!r} can never match a canonical path")
                return None
        return GlobList(patterns)

    def _methods(self, node: Node, route: str) -> tuple[str, ...] | None:
        methods = self._strings(node, route, "methods", "HTTP methods")
        if methods is None:
            return None
        for method in methods:
            if method not in _METHODS:
                hint = f" (did you mean {method.upper()!r}?)" if method.upper() in _METHODS else ""
                self.problem(
                    _line(node), route, f"`methods` entry {method!r} is not one of {' | '.join(_METHODS)}{hint}"
                )
                return None
        return tuple(dict.fromkeys(methods))

    def _check_rule(self, raw: _RawRule, node: Node) -> bool:
        """Cross-field checks; True when the rule is complete enough to compile."""
        problems_before = len(self._problems)
        fields = raw.fields
        for key in ("on", "effect"):
            if key not in fields and not any(k.value == key for k, _ in node.value):
                self.problem(raw.line, raw.name, f"rule needs `{key}`")
        point, effect = fields.get("on"), fields.get("effect")
        if point is Point.REQUEST and "tools" in fields:
            self.problem(raw.line, raw.name, "`tools` applies only to `on: tool_call` rules")
        if "action" in fields and point is Point.REQUEST:
            self.problem(raw.line, raw.name, "`action` applies only to `on: tool_call` rules")
        elif "action" in fields and effect is Effect.ALLOW:
            self.problem(raw.line, raw.name, "`action` applies only to deny rules")
        if fields.get("mode") is Mode.DRY_RUN and effect is Effect.ALLOW:
            message = "`mode: dry-run` on an allow rule would allow for real (dry-run softens denials only)"
            self.problem(raw.line, raw.name, message)
        return len(self._problems) == problems_before and point is not None and effect is not None


def _non_json(value: Any) -> str | None:
    """The name of the first type in ``value`` that is not JSON-like, or None."""
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**63:
        return "int beyond 64 bits"
    if value is None or isinstance(value, str | bool | int | float):
        return None
    if isinstance(value, list):
        return next(filter(None, map(_non_json, value)), None)
    if isinstance(value, dict):
        bad_key = next((type(k).__name__ for k in value if not isinstance(k, str)), None)
        return bad_key or next(filter(None, map(_non_json, value.values())), None)
    return type(value).__name__


def _defaults(parsed: _Parsed) -> Defaults:
    values = {key: located.value for key, located in parsed.defaults.items()}
    return Defaults(**values)


def _key_digest(raw: _RawPrincipal, environ: Mapping[str, str]) -> str | None:
    """sha256 hex of the principal's key; None when its ``key_env`` variable is unset or empty."""
    if raw.key_env is None:
        return raw.key_sha256
    key = environ.get(raw.key_env, "")
    return hashlib.sha256(key.encode()).hexdigest() if key else None


def _principals(
    parsed: _Parsed, environ: Mapping[str, str], problems: list[Problem], warnings: list[Problem]
) -> tuple[dict[str, Principal], dict[str, Principal]]:
    """Declared principals by id, and by sha256 of their key."""
    by_id: dict[str, Principal] = {}
    by_key: dict[str, Principal] = {}
    first_line: dict[str, str] = {}
    for raw in parsed.principals:
        if raw.id in by_id:
            message = f"duplicate principal id (first at {first_line[raw.id]})"
            problems.append(Problem(raw.file, raw.line, raw.id, message))
            continue
        principal = by_id[raw.id] = Principal(raw.id, raw.attributes)
        first_line[raw.id] = f"{raw.file}:{raw.line}"
        digest = _key_digest(raw, environ)
        if digest is None:
            message = f"${raw.key_env} is not set: no key maps to this principal"
            warnings.append(Problem(raw.file, raw.line, raw.id, message))
        elif digest in by_key:
            problems.append(Problem(raw.file, raw.line, raw.id, f"same key as principal {by_key[digest].id!r}"))
        else:
            by_key[digest] = principal
    return by_id, by_key


def _lint(refs: References) -> str | None:
    """celgate's CEL subset, checked the same way whichever backend compiles."""
    unsupported = sorted(refs.functions - SUPPORTED_FUNCTIONS)
    if unsupported:
        return f"function {unsupported[0]!r} is not in celgate's CEL subset (see docs/policies.md)"
    if "matches" in refs.global_calls:
        return "use the method form of matches: value.matches(regex)"
    if ("map", 3) in refs.calls:
        return "map(x, filter, transform) is not in celgate's CEL subset: use .filter(...).map(...)"
    for pattern in refs.regexes:
        detail = _regex_error(pattern)
        if detail is not None:
            return f"invalid regular expression {pattern!r}: {detail}"
    return None


def _regex_error(pattern: str) -> str | None:
    """Why RE2, the engine CEL's ``matches`` uses, refuses ``pattern``; None when it compiles.

    google-re2 is imported here, not with the module: ~1.5 MiB that a proxy without a policy, or with one
    that has no ``matches`` literal, never needs.
    """
    import re2  # google-re2 ships no type information (mypy: ignore_missing_imports in pyproject)

    options = re2.Options()
    options.log_errors = False
    try:
        re2.compile(pattern, options)
    except re2.error as exc:
        return exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else str(exc)
    return None


_NO_TOOL = {
    Point.REQUEST: "request rules cannot read `tool` (it exists only in `on: tool_call` rules)",
    Point.ROUTE: "routes cannot read `tool` (it exists only in `on: tool_call` rules)",
}


def _compile_when(source: str, point: Point, engine: Backend) -> tuple[Program, References]:
    """Compile a rule's or route's ``when`` for ``point``; raises ``CelCompileError``.

    celgate's own checks run on the parse tree first, so a function outside the
    subset is named as such; the engine then compiles (its syntax and type
    errors win); last, an expression the tree walk could not follow is refused,
    since celgate could not tell what it reads.
    """
    from .references import scan  # with lark, only once there is a policy: a --no-policy proxy never needs it

    refs = scan(source, ROOTS)
    problem = _lint(refs)
    if problem:
        raise CelCompileError(problem)
    variables = VARIABLES if point is Point.TOOL_CALL else VARIABLES - {"tool"}
    try:
        program = engine.compile(source, variables)
    except CelCompileError as exc:
        if point in _NO_TOOL and "undeclared reference to 'tool" in exc.message:
            raise CelCompileError(_NO_TOOL[point], exc.position) from None
        raise
    if not refs.complete:
        raise CelCompileError(f"celgate cannot analyse this expression: {refs.problem} (see Supported CEL)")
    if point in _NO_TOOL and refs.reads("tool"):
        raise CelCompileError(_NO_TOOL[point])
    return program, refs


def _cache_paths(refs: References) -> tuple[tuple[str, str], ...] | None:
    """The (root, field) pairs a rule's outcome depends on, or None when it reads per-call data.

    ``now`` read only through accessors constant within a second (``getHours``, ...) is the pair
    ``NOW_SECOND``: the outcome is cached per second.
    """
    if not refs.complete or refs.whole or refs.fields & PER_CALL_FIELDS or any(r == "now" for r, _ in refs.fields):
        return None
    return tuple(sorted(refs.fields | ({NOW_SECOND} if refs.clock else set())))


def _build_rule(raw: _RawRule, index: int, defaults: Defaults, engine: Backend) -> Rule:
    fields = raw.fields
    point, effect = fields["on"], fields["effect"]
    program, refs = _compile_when(fields["when"], point, engine) if "when" in fields else (None, None)
    return Rule(
        index=index,
        name=raw.name,
        point=point,
        effect=effect,
        mode=fields.get("mode", defaults.mode),
        action=fields.get("action", Action.STRIP),
        reason=fields.get("reason", f"{'allowed' if effect is Effect.ALLOW else 'denied'} by rule {raw.name}"),
        principals=fields.get("principals"),
        models=fields.get("models"),
        agents=fields.get("agents"),
        tools=fields.get("tools"),
        when=fields.get("when"),
        program=program,
        cache_paths=_cache_paths(refs) if refs is not None else (),
        roots=frozenset(root for root in ROOTS if refs is not None and refs.reads(root)),
        reads_arguments=refs is not None and (refs.reads("tool", "arguments") or refs.reads("tool", "raw_arguments")),
        parses_arguments=refs is not None and refs.reads("tool", "arguments"),
        file=raw.file,
        line=raw.line,
        reads_headers=refs is not None and refs.reads("request", "headers"),
    )


def _rules(parsed: _Parsed, defaults: Defaults, engine: Backend, problems: list[Problem]) -> list[Rule]:
    rules: list[Rule] = []
    seen: dict[str, str] = {}
    for raw in parsed.rules:
        if raw.name in seen:
            problems.append(Problem(raw.file, raw.line, raw.name, f"duplicate rule name (first at {seen[raw.name]})"))
            continue
        seen[raw.name] = f"{raw.file}:{raw.line}"
        try:
            rules.append(_build_rule(raw, len(rules), defaults, engine))
        except CelCompileError as exc:
            problems.append(Problem(raw.file, raw.when_line, raw.name, _when_problem(exc)))
    return rules


def _when_problem(exc: CelCompileError) -> str:
    where = f" at {exc.position[0]}:{exc.position[1]}" if exc.position else ""
    return f"when{where}: {exc.message}"


def _build_route(raw: _RawRoute, index: int, engine: Backend) -> Route:
    fields = raw.fields
    program, refs = _compile_when(fields["when"], Point.ROUTE, engine) if "when" in fields else (None, None)
    return Route(
        index=index,
        id=raw.id,
        paths=fields["paths"],
        methods=fields.get("methods"),
        principals=fields.get("principals"),
        when=fields.get("when"),
        program=program,
        roots=frozenset(root for root in ROOTS if refs is not None and refs.reads(root)),
        description=fields.get("description", ""),
        file=raw.file,
        line=raw.line,
    )


def _routes(parsed: _Parsed, engine: Backend, problems: list[Problem]) -> list[Route]:
    """Route entries in policy order; ids are unique and differ from rule names (decisions name either)."""
    routes: list[Route] = []
    seen: dict[str, str] = {}
    rule_lines = {raw.name: f"{raw.file}:{raw.line}" for raw in reversed(parsed.rules)}  # first definitions
    for raw in parsed.routes:
        if raw.id in seen:
            problems.append(Problem(raw.file, raw.line, raw.id, f"duplicate route id (first at {seen[raw.id]})"))
            continue
        seen[raw.id] = f"{raw.file}:{raw.line}"
        if raw.id in rule_lines:
            problems.append(Problem(raw.file, raw.line, raw.id, f"route id is also a rule name ({rule_lines[raw.id]})"))
            continue
        try:
            routes.append(_build_route(raw, len(routes), engine))
        except CelCompileError as exc:
            problems.append(Problem(raw.file, raw.when_line, raw.id, _when_problem(exc)))
    return routes


def _read_files(directory: Path, problems: list[Problem]) -> tuple[list[Path], _Parsed, str]:
    """Parse every policy file; returns the files, their merged content and the set's version hash."""
    if not directory.is_dir():
        problems.append(Problem(str(directory), None, None, "policy directory not found"))
        return [], _Parsed(), ""
    files = policy_files(directory)
    if not files:
        problems.append(Problem(str(directory), None, None, "no policy files (*.yaml, *.yml) in this directory"))
    parsed = _Parsed()
    digest = hashlib.sha256()
    for path in files:
        try:
            data = path.read_bytes()
        except OSError as exc:  # vanished or unreadable between listing and reading, or a dangling symlink
            via = f" (symlink to {os.path.realpath(path)})" if path.is_symlink() else ""
            problems.append(Problem(str(path), None, None, f"cannot read: {exc.strerror or exc}{via}"))
            continue
        digest.update(path.name.encode() + b"\0" + data + b"\0")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            problems.append(Problem(str(path), None, None, f"not UTF-8: {exc}"))
            continue
        _FileReader(path, text, parsed, problems).read()
    return files, parsed, digest.hexdigest()[:12]


def load_policies(
    directory: str | Path, backend: str = DEFAULT_BACKEND, *, environ: Mapping[str, str] | None = None
) -> PolicySet:
    """Load, lint and compile every policy file in ``directory``; raise ``PolicyLoadError`` on any problem.

    ``environ`` supplies ``key_env`` keys (default: the process environment).
    """
    engine = get_backend(backend)
    problems: list[Problem] = []
    warnings: list[Problem] = []
    files, parsed, version = _read_files(Path(directory), problems)
    defaults = _defaults(parsed)
    by_id, by_key = _principals(parsed, os.environ if environ is None else environ, problems, warnings)
    rules = _rules(parsed, defaults, engine, problems)
    routes = _routes(parsed, engine, problems)
    if problems:
        raise PolicyLoadError(problems)
    return PolicySet(
        rules=rules,
        routes=routes,
        principals=by_id,
        keys=by_key,
        defaults=defaults,
        engine=engine,
        version=version,
        files=tuple(p.name for p in files),
        warnings=tuple(warnings),
    )
