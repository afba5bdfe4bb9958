"""What a CEL expression reads, found by a conservative scan of its tokens.

The evaluator uses this to decide, once at load, whether a rule's result may
be cached (it reads only stable fields such as ``principal.team`` or
``request.model``), whether a rule needs ``now``, and whether it reads the
tool call's arguments. The loader uses it to enforce celgate's CEL subset
(known functions; ``matches`` in method form; valid regex literals).

The scan is deliberately conservative: anything it does not understand
(unknown characters, a root read as a whole, a root indexed with ``[...]``)
widens the result to "reads everything under that root" or, for syntax it
cannot tokenize, to "reads everything"; it never under-reports.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["References", "scan"]

_TOKEN = re.compile(
    r"""
    (?P<space>\s+|//[^\n]*)
  | (?P<string>[rRbB]{0,2}(?:\"\"\"(?:\\.|[^\\])*?\"\"\"|'''(?:\\.|[^\\])*?'''|"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*'))
  | (?P<number>(?:0[xX][0-9a-fA-F]+|\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)[uU]?)
  | (?P<ident>[_a-zA-Z][_a-zA-Z0-9]*)
  | (?P<punct>&&|\|\||==|!=|<=|>=|[-.()\[\]{}!<>+*/%?:,])
    """,
    re.VERBOSE | re.DOTALL,
)
_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|[0-7]{3}|[abfnrtv\"'\\`?])")
_SIMPLE_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}


@dataclass(frozen=True, slots=True)
class References:
    """The variables, fields and functions an expression uses.

    ``fields`` holds ``(root, field)`` pairs such as ``("tool", "arguments")``;
    ``whole`` the roots read other than through a plain ``.field``;
    ``functions`` every function or macro called, ``global_calls`` those
    called without a receiver, ``calls`` each ``(function, argument count)``;
    ``regexes`` the decoded string literals given
    to ``.matches()``. ``complete`` is False when the scanner met syntax it
    cannot follow: then every ``reads*`` question answers True.
    """

    fields: frozenset[tuple[str, str]]
    whole: frozenset[str]
    functions: frozenset[str]
    global_calls: frozenset[str]
    calls: frozenset[tuple[str, int]]
    regexes: tuple[str, ...]
    complete: bool

    def reads(self, root: str, field: str | None = None) -> bool:
        """Whether the expression may read ``root`` (any field of it) or ``root.field``."""
        if not self.complete or root in self.whole:
            return True
        if field is None:
            return any(r == root for r, _ in self.fields)
        return (root, field) in self.fields


_EVERYTHING = References(frozenset(), frozenset(), frozenset(), frozenset(), frozenset(), (), complete=False)


def _tokenize(source: str) -> list[tuple[str, str]] | None:
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(source):
        m = _TOKEN.match(source, pos)
        if m is None:
            return None
        kind = m.lastgroup or ""
        if kind != "space":
            tokens.append((kind, m.group()))
        pos = m.end()
    return tokens


def _decode(literal: str) -> str | None:
    """The value of a CEL string literal, or None for bytes literals."""
    prefix = re.match(r"[rRbB]*", literal).group()  # type: ignore[union-attr]
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


def _argument_count(tokens: list[tuple[str, str]], open_paren: int) -> int:
    """Arguments of the call whose ``(`` is at ``open_paren``: top-level commas + 1 (0 for ``()``)."""
    depth, commas = 0, 0
    for kind, text in tokens[open_paren:]:
        if kind != "punct":
            continue
        if text in "([{":
            depth += 1
        elif text in ")]}":
            depth -= 1
            if depth == 0:
                break
        elif text == "," and depth == 1:
            commas += 1
    return 0 if tokens[open_paren + 1 : open_paren + 2] == [("punct", ")")] else commas + 1


def scan(source: str, roots: frozenset[str]) -> References:
    """Scan ``source`` for reads of the variables named in ``roots``."""
    tokens = _tokenize(source)
    if tokens is None:
        return _EVERYTHING
    fields: set[tuple[str, str]] = set()
    whole: set[str] = set()
    functions: set[str] = set()
    global_calls: set[str] = set()
    calls: set[tuple[str, int]] = set()
    regexes: list[str] = []

    def at(i: int) -> str:
        return tokens[i][1] if 0 <= i < len(tokens) else ""

    def kind_at(i: int) -> str:
        return tokens[i][0] if 0 <= i < len(tokens) else ""

    for i, (kind, text) in enumerate(tokens):
        if kind != "ident":
            continue
        after_dot = at(i - 1) == "."
        if at(i + 1) == "(":
            functions.add(text)
            calls.add((text, _argument_count(tokens, i + 1)))
            if not after_dot:
                global_calls.add(text)
            elif text == "matches" and kind_at(i + 2) == "string" and at(i + 3) == ")":
                pattern = _decode(at(i + 2))
                if pattern is not None:
                    regexes.append(pattern)
        elif not after_dot and text in roots:
            if at(i + 1) == "." and kind_at(i + 2) == "ident" and at(i + 3) != "(":
                fields.add((text, at(i + 2)))
            else:
                whole.add(text)
    return References(
        frozenset(fields),
        frozenset(whole),
        frozenset(functions),
        frozenset(global_calls),
        frozenset(calls),
        tuple(regexes),
        complete=True,
    )
