"""What a CEL expression reads, taken from its parse tree (celpy's Lark grammar for CEL).

The evaluator uses this to decide, once at load, whether a rule's result may
be cached (it reads only stable fields such as ``principal.team`` or
``request.model``), whether a rule needs ``now``, and whether it reads the
tool call's arguments. The loader uses it to enforce celgate's CEL subset
(known functions; ``matches`` in method form; valid regex literals). A read
missed here would be a stale cached decision, so the walk is exact where it
understands the tree and conservative everywhere else:

- ``root.field`` (also through parentheses, ``has()`` and ``.root``) reads
  that field; any other use of a root (``root[...]``, ``size(root)``, a method
  on it) reads the root as a whole.
- A comprehension variable (``list.all(tool, ...)``) shadows a root of the same
  name inside its macro, as in CEL; ``.tool`` means the root, except inside
  such a macro, where the engines disagree (cel-cpp: the root; celpy: the
  variable) and the walk gives up.
- Comments and string literals are tokens of the grammar, never scanned.
- Syntax the grammar rejects, a node type the walk does not know, a string
  literal the two CEL lexers could end at different quotes, or a tree too deep
  to walk make the result incomplete: every ``reads*`` question then answers
  True, and ``problem`` says why (the loader refuses such expressions).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from functools import cache
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import lark
from lark.exceptions import LexError, ParseError, UnexpectedCharacters, UnexpectedToken

__all__ = ["References", "scan"]

# Accessors of ``now`` whose value is the same for every instant of one second (tz offsets are whole seconds):
# a rule that reads ``now`` only through them may be cached per second.
_CLOCK_ACCESSORS = frozenset(
    {"getFullYear", "getMonth", "getDayOfYear", "getDayOfMonth", "getDate", "getDayOfWeek", "getHours", "getMinutes",
     "getSeconds"}
)  # fmt: skip
_MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})  # receiver macros binding a variable
_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|[0-7]{3}|[abfnrtv\"'\\`?])")
_SIMPLE_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
# Single-child wrappers the grammar puts around every operand; the walk sees through them.
_WRAPPERS = frozenset(
    {"expr", "conditionalor", "conditionaland", "relation", "addition", "multiplication", "unary", "member", "primary"}
)
# Nodes whose children are ordinary sub-expressions (operators, literals' containers, argument lists).
_STRUCTURAL = _WRAPPERS | {
    "paren_expr",
    "member_index",
    "list_lit",
    "map_lit",
    "exprlist",
    "mapinits",
    "unary_not",
    "unary_neg",
    *(f"relation_{op}" for op in ("lt", "le", "gt", "ge", "eq", "ne", "in")),
    *(f"addition_{op}" for op in ("add", "sub")),
    *(f"multiplication_{op}" for op in ("mul", "div", "mod")),
}
_STRING_TOKENS = frozenset({"STRING_LIT", "MLSTRING_LIT", "BYTES_LIT"})


@dataclass(frozen=True, slots=True)
class References:
    """The variables, fields and functions an expression uses.

    ``fields`` holds ``(root, field)`` pairs such as ``("tool", "arguments")``;
    ``whole`` the roots read other than through a plain ``.field``;
    ``functions`` every function or macro called, ``global_calls`` those
    called without a receiver, ``calls`` each ``(function, argument count)``;
    ``regexes`` the decoded string literals given to ``.matches()``;
    ``clock`` the accessors called on ``now`` (``now.getHours("UTC")``) when
    that is how ``now`` is read: any other use puts ``now`` in ``whole``.
    ``complete`` is False when the walk met something it cannot follow
    (``problem`` says what): then every ``reads*`` question answers True.
    """

    fields: frozenset[tuple[str, str]]
    whole: frozenset[str]
    functions: frozenset[str]
    global_calls: frozenset[str]
    calls: frozenset[tuple[str, int]]
    regexes: tuple[str, ...]
    complete: bool
    problem: str = ""
    clock: frozenset[str] = frozenset()

    def reads(self, root: str, field: str | None = None) -> bool:
        """Whether the expression may read ``root`` (any field of it) or ``root.field``."""
        if not self.complete or root in self.whole or (root == "now" and self.clock):
            return True
        if field is None:
            return any(r == root for r, _ in self.fields)
        return (root, field) in self.fields


def _everything(problem: str) -> References:
    return References(frozenset(), frozenset(), frozenset(), frozenset(), frozenset(), (), False, problem)


class _Incomplete(Exception):
    """The walk met something it cannot follow; the message says what."""


def _bool_literal(token: lark.Token) -> lark.Token:
    """``true`` and ``false`` lex as IDENT; celpy's lexer callback retypes them, and so does this one."""
    if token.value in ("true", "false"):
        return lark.Token("BOOL_LIT", token.value)
    return token


# celpy's parser options (``CELParser.__init__`` in celpy/celparser.py), less ``debug``, which only logs. The
# lexer callback and regex flags are given again when shipped tables are loaded: a table file cannot hold them.
_GRAMMAR_OPTIONS: dict[str, Any] = {
    "parser": "lalr",
    "start": "expr",
    "propagate_positions": True,
    "maybe_placeholders": False,
    "priority": "invert",
}
_LOAD_OPTIONS: dict[str, Any] = {"lexer_callbacks": {"IDENT": _bool_literal}, "g_regex_flags": re.M}
# Generated by tests/policy/test_cel_parser_tables.py (CELGATE_WRITE_TABLES=1): the LALR tables lark builds from
# celpy's grammar, with the grammar's hash and the lark version they were built by.
_TABLES = Path(__file__).with_name("cel_parser.json")


def _grammar() -> str:
    """celpy's CEL grammar, read from its package folder without importing celpy."""
    spec = find_spec("celpy")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("celpy (cel-python) is not installed: its CEL grammar is needed")
    return (Path(spec.origin).parent / "cel.lark").read_text()


def _tables_key(grammar: str) -> dict[str, str]:
    """What shipped tables must have been built from to be used: this grammar, by this lark."""
    return {"grammar_sha256": hashlib.sha256(grammar.encode()).hexdigest(), "lark": lark.__version__}


def _build(grammar: str) -> lark.Lark:
    return lark.Lark(grammar, **_GRAMMAR_OPTIONS, **_LOAD_OPTIONS)


def _untagged(value: dict[str, Any]) -> Any:
    """``json.loads`` hook: lark's tables hold tuples and int-keyed dicts, which the file tags (JSON has neither)."""
    if "__tuple__" in value:
        return tuple(value["__tuple__"])
    if "__int_keys__" in value:
        return dict(value["__int_keys__"])
    return value


def _read_tables(grammar: str) -> dict[str, Any] | None:
    """The shipped tables when they were built from ``grammar`` by the running lark, else None."""
    try:
        shipped: dict[str, Any] = json.loads(_TABLES.read_text(), object_hook=_untagged)
    except FileNotFoundError:
        return None
    key = _tables_key(grammar)
    return shipped if {name: shipped.get(name) for name in key} == key else None


@cache
def _parser() -> lark.Lark:
    """celpy's CEL parser, built on first use from its grammar with celpy's options.

    Not through ``celpy.celparser.CELParser``: importing it loads all of celpy (its evaluator, pendulum,
    dateutil, decimal), and it analyses the grammar with ``debug=True``: ~2.6 MiB of RSS that a cel-expr process
    never gives back. Analysing the grammar at all leaves ~2 MiB more behind, so the tables shipped in
    ``cel_parser.json`` are loaded instead (``_load_from_dict`` is the loader of lark's standalone parsers), unless
    the installed grammar or lark differ from those they were built with: then the grammar is analysed here.
    """
    grammar = _grammar()
    shipped = _read_tables(grammar)
    if shipped is None:
        return _build(grammar)
    data, memo = shipped["data"], shipped["memo"]
    parser: lark.Lark = lark.Lark._load_from_dict(data, memo, **_LOAD_OPTIONS)  # type: ignore[no-untyped-call]
    return parser


def _decode(literal: str) -> str | None:
    """The value of a CEL string literal, or None for bytes literals."""
    prefix = literal[: len(literal) - len(literal.lstrip("rRbB"))]
    if "b" in prefix.lower():
        return None
    body = literal[len(prefix) :]
    quote = 3 if body[:3] in ('"""', "'''") else 1
    body = body[quote:-quote]
    if "r" in prefix.lower():
        return body
    return _ESCAPE.sub(_unescape, body)


def _unescape(m: re.Match[str]) -> str:
    code = m.group(1)
    if code[0] in "xuU":
        return chr(int(code[1:], 16))
    if code[0].isdigit():
        return chr(int(code, 8))
    return _SIMPLE_ESCAPES.get(code, code)


def _ends_alike(literal: str) -> bool:
    """Whether cel-cpp's lexer ends this string literal where celpy's did.

    celpy's token pattern honours ``\\"`` even in raw strings and, when nothing
    else matches, lets a string end right after a backslash; cel-cpp would then
    end the string earlier or later and read the text between as code. So the
    body must hold no unescaped closing quote and no dangling backslash.
    """
    prefix = literal[: len(literal) - len(literal.lstrip("rRbB"))]
    body = literal[len(prefix) :]
    quote = body[:3] if body[:3] in ('"""', "'''") else body[:1]
    inner, raw = body[len(quote) : -len(quote)], "r" in prefix.lower()
    i = 0
    while i < len(inner):
        if inner.startswith(quote, i):
            return False
        i += 2 if inner[i] == "\\" and not raw else 1
    return i == len(inner)


def _unwrap(node: Any) -> Any:
    """The node below the grammar's single-child wrappers and parentheses."""
    while isinstance(node, lark.Tree) and (
        (node.data in _WRAPPERS and len(node.children) == 1) or node.data == "paren_expr"
    ):
        node = node.children[0]
    return node


def _arguments(node: lark.Tree[Any]) -> list[Any]:
    """The argument expressions of a call node whose last child may be an ``exprlist``."""
    last = node.children[-1] if node.children else None
    return list(last.children) if isinstance(last, lark.Tree) and last.data == "exprlist" else []


class _Walk:
    """One walk of a parse tree, collecting what ``References`` reports."""

    def __init__(self, roots: frozenset[str]) -> None:
        self.roots = roots
        self.fields: set[tuple[str, str]] = set()
        self.whole: set[str] = set()
        self.functions: set[str] = set()
        self.global_calls: set[str] = set()
        self.calls: set[tuple[str, int]] = set()
        self.regexes: list[str] = []
        self.clock: set[str] = set()

    def references(self) -> References:
        return References(
            frozenset(self.fields),
            frozenset(self.whole),
            frozenset(self.functions),
            frozenset(self.global_calls),
            frozenset(self.calls),
            tuple(self.regexes),
            complete=True,
            clock=frozenset(self.clock),
        )

    def root(self, node: Any, bound: frozenset[str]) -> str | None:
        """The root variable ``node`` names (``tool``, ``.tool``), unless a comprehension variable shadows it."""
        node = _unwrap(node)
        if not isinstance(node, lark.Tree) or node.data not in ("ident", "dot_ident"):
            return None
        name = str(node.children[0])
        if name in bound and node.data == "dot_ident":
            raise _Incomplete(f".{name} inside a macro binding {name}: the two CEL engines resolve it differently")
        if name not in self.roots or name in bound:
            return None
        return name

    def visit(self, node: Any, bound: frozenset[str]) -> None:
        if not isinstance(node, lark.Tree):
            return  # a token: operators and names are handled by their parent
        kind = node.data
        if kind in ("ident", "dot_ident"):
            name = self.root(node, bound)
            if name is not None:
                self.whole.add(name)
        elif kind == "member_dot":
            target, name_token = node.children
            root = self.root(target, bound)
            if root is not None:
                self.fields.add((root, str(name_token)))
            else:
                self.visit(target, bound)
        elif kind == "member_dot_arg":
            self.method_call(node, bound)
        elif kind in ("ident_arg", "dot_ident_arg"):
            name = str(node.children[0])
            arguments = _arguments(node)
            self.functions.add(name)
            self.global_calls.add(name)
            self.calls.add((name, len(arguments)))
            for argument in arguments:
                self.visit(argument, bound)
        elif kind == "literal":
            token = node.children[0]
            if isinstance(token, lark.Token) and token.type in _STRING_TOKENS and not _ends_alike(str(token)):
                raise _Incomplete(f"string literal {str(token)[:20]!r} is read differently by the two CEL engines")
        elif kind in _STRUCTURAL:
            for child in node.children:
                self.visit(child, bound)
        elif kind == "member_object":
            raise _Incomplete("message construction (Type{field: value}) is outside celgate's CEL subset")
        else:  # a node a later grammar added: its reads are unknown
            raise _Incomplete(f"unsupported syntax ({kind})")

    def method_call(self, node: lark.Tree[Any], bound: frozenset[str]) -> None:
        """``target.name(arguments)``: a method, or a macro binding its first argument in the others."""
        target, name = node.children[0], str(node.children[1])
        arguments = _arguments(node)
        self.functions.add(name)
        self.calls.add((name, len(arguments)))
        if name in _CLOCK_ACCESSORS and self.root(target, bound) == "now":
            self.clock.add(name)
        else:
            self.visit(target, bound)
        if name == "matches" and len(arguments) == 1:
            literal = _unwrap(arguments[0])
            if isinstance(literal, lark.Tree) and literal.data == "literal":
                token = literal.children[0]
                if isinstance(token, lark.Token) and token.type in ("STRING_LIT", "MLSTRING_LIT"):
                    pattern = _decode(str(token))
                    if pattern is not None:
                        self.regexes.append(pattern)
        if name in _MACROS and len(arguments) == 3 and name != "map":
            raise _Incomplete(f"two-variable {name}() is outside celgate's CEL subset")
        if name in _MACROS and len(arguments) in (2, 3):
            variable = _unwrap(arguments[0])
            if not (isinstance(variable, lark.Tree) and variable.data == "ident"):
                raise _Incomplete(f"the first argument of {name}() must be a variable name")
            inner = bound | {str(variable.children[0])}
            for argument in arguments[1:]:
                self.visit(argument, inner)
            return
        for argument in arguments:
            self.visit(argument, bound)


def scan(source: str, roots: frozenset[str]) -> References:
    """What ``source`` reads of the variables named in ``roots``, from its parse tree."""
    try:
        tree = _parser().parse(source)
    except (UnexpectedToken, UnexpectedCharacters) as exc:  # the errors celpy reports with a position
        where = f" at {exc.line}:{exc.column}" if exc.line is not None else ""
        return _everything(f"celgate's CEL grammar rejects it{where}")
    except (LexError, ParseError):
        return _everything("celgate's CEL grammar rejects it")
    except RecursionError:
        return _everything("nested too deeply")
    walk = _Walk(roots)
    try:
        walk.visit(tree, frozenset())
    except _Incomplete as exc:
        return _everything(str(exc))
    except RecursionError:
        return _everything("nested too deeply")
    return walk.references()
