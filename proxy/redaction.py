"""``redact(text)``: mask secrets in text celgate records or shows (logs, admin JSON, error messages).

Upstream error bodies go to clients through ``redact_body``: an upstream may quote the key it got, and in
sidecar mode that key is celgate's.

Two kinds of secret are masked. Known *shapes* (API keys, bearer tokens,
``Authorization`` values, URL passwords, ``password=``-style values, AWS
access keys, PEM private keys) are matched by pattern. Known *values* are the
secrets a running app holds: its upstream key, its admin token, its internal
gateway token, and every principal key its policy knows. Principal keys are
known only by their SHA-256, so each key-like token of the text (8 to 512
URL-safe characters) is hashed and checked against the active policy.

The values are registered process-wide (``holding_secrets``) because logging,
which needs them, is process-wide too; an app registers its values while it
runs. Registration swaps immutable tuples, so a thread logging meanwhile sees
a consistent set.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

__all__ = ["REDACTED", "holding_secrets", "redact", "redact_body", "redact_json"]

REDACTED = "[redacted]"

KeyCheck = Callable[[str], bool]

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)", re.S),
        f"-----BEGIN PRIVATE KEY----- {REDACTED}",
    ),  # no END (a cut message): the rest of the text goes
    (re.compile(r"(?i)((?<![\w-])(?:proxy-)?authorization['\"]?\s*[:=]\s*['\"]?)[^\r\n'\",}]+"), rf"\1{REDACTED}"),
    (re.compile(r"(?i)\b(bearer\s+)[\w.~+/=-]+"), rf"\1{REDACTED}"),
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]*:)[^/\s]+@"), rf"\1{REDACTED}@"),  # up to the last @
    (
        re.compile(
            r"(?i)((?<![a-z0-9])(?:password|passwd|pwd|secret|token|api[_-]?key|apikey)['\"]?\s*[:=]\s*)"
            r"(?:(['\"])(?:.*?\2|.*)|[^\s&;,'\"})\[\]]+)"
        ),
        rf"\1\2{REDACTED}\2",
    ),  # quoted: to its quote or EOL
    (re.compile(r"(?<![\w-])sk-[\w-]{8,}"), REDACTED),
    (re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), REDACTED),
)
# Text none of the shapes can match is common (model names, paths): one search of its lowercase form skips them.
_SHAPE_HINTS = re.compile(r"private key|authorization|bearer|://|passw|pwd|secret|token|api[_-]?key|sk-|akia|asia")
# Tokens that may be a principal's key: hashed and checked against the policy. Keys are header-safe strings.
_KEY_LIKE = re.compile(r"[\w.~+/=-]{8,512}")
_KEY_PARTS = re.compile(r"[=/]")

_values: tuple[str, ...] = ()
_key_checks: tuple[KeyCheck, ...] = ()


def redact(text: str) -> str:
    """``text`` with every secret shape and every secret value of a running app replaced by ``[redacted]``."""
    for value in _values:
        if value in text:
            text = text.replace(value, REDACTED)
    if _SHAPE_HINTS.search(text.lower()):
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
    checks = _key_checks
    if checks:
        text = _KEY_LIKE.sub(lambda match: _mask_key(match.group(), checks), text)
    return text


def redact_json(value: Any) -> Any:
    """A JSON-ready value with every string in it (keys of objects too) redacted."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact(str(k)): redact_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_json(item) for item in value]
    return value


def redact_body(body: bytes) -> bytes:
    """An upstream error body as a client may see it: some upstreams quote the credential they got, whole.

    Masking stops at quotes, so JSON stays JSON; bytes that are not UTF-8 pass through as they are.
    """
    text = body.decode("utf-8", "surrogateescape")
    clean = redact(text)
    return body if clean == text else clean.encode("utf-8", "surrogateescape")


@contextlib.contextmanager
def holding_secrets(values: Iterable[str], is_key: KeyCheck) -> Iterator[None]:
    """While open, ``redact`` also masks ``values`` and every token ``is_key`` says is a principal's key."""
    global _values, _key_checks
    held = tuple(sorted({v for v in values if v}, key=len, reverse=True))  # longest first: no partial masks
    _values = tuple(sorted((*_values, *held), key=len, reverse=True))
    _key_checks = (*_key_checks, is_key)
    try:
        yield
    finally:
        remaining = list(_values)
        for value in held:
            remaining.remove(value)
        _values = tuple(remaining)
        checks = list(_key_checks)
        checks.remove(is_key)
        _key_checks = tuple(checks)


def _mask_key(token: str, checks: tuple[KeyCheck, ...]) -> str:
    """``token`` masked if it, or a piece between ``=`` or ``/`` (trailing dots dropped), is a principal key."""
    if any(check(token) for check in checks):
        return REDACTED
    stripped = token.strip(".")
    if stripped == token and not _KEY_PARTS.search(token):
        return token
    pieces = {stripped, *_KEY_PARTS.split(stripped)} - {token}
    hits = sorted((p for p in pieces if p and any(check(p) for check in checks)), key=len, reverse=True)
    for piece in hits:
        token = token.replace(piece, REDACTED)
    return token
