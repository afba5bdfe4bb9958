"""Server-Sent Events: incremental framing (bytes in, whole raw events out) and every SSE byte celgate writes.

Why our own: celgate forwards events byte-identical, so it needs each event's
raw bytes, and it must split events as reads arrive (an event may span reads,
a read may hold many). The decoders in the dependency tree (the openai SDK's
``SSEDecoder``) only yield parsed fields and live in a 40 MiB import the bare
proxy does not load. No aiohttp import here: this is pure bytes handling.

Line endings follow the SSE spec: ``\\r\\n``, ``\\n`` or ``\\r``; an empty
line ends an event; lines starting with ``:`` are comments (keep-alives).
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

from .jsontext import compact_json

__all__ = ["DONE_EVENT", "SSEEvent", "SSESplitter", "data_event", "encode_data_event", "named_event"]

DONE_EVENT = b"data: [DONE]\n\n"  # chat completions' end of stream

# An empty line: a line terminator directly followed by another one.
_BOUNDARY = re.compile(rb"(?:\r\n|\r(?!\n)|\n)(?:\r\n|\r(?!\n)|\n)")


class SSESplitter:
    """Cuts a byte stream into complete raw SSE events, keeping a partial tail."""

    __slots__ = ("_tail",)

    def __init__(self) -> None:
        self._tail = b""

    def feed(self, data: bytes) -> list[bytes]:
        """Return the events completed by ``data``, each with its terminating blank line."""
        buffer = self._tail + data if self._tail else data
        if buffer.find(b"\r") < 0:  # find, not in: see strict.may_hold_calls
            return self._split_lf(buffer)
        return self._split_any(buffer)

    def _split_lf(self, buffer: bytes) -> list[bytes]:
        parts = buffer.split(b"\n\n")
        self._tail = parts.pop()
        return [part + b"\n\n" for part in parts]

    def _split_any(self, buffer: bytes) -> list[bytes]:
        events: list[bytes] = []
        start = 0
        for match in _BOUNDARY.finditer(buffer):
            if match.end() == len(buffer) and buffer.endswith(b"\r"):
                break  # a trailing \r may be the first half of \r\n: wait for more
            events.append(buffer[start : match.end()])
            start = match.end()
        self._tail = buffer[start:]
        return events

    def flush(self) -> list[bytes]:
        """The stream ended: a trailing ``\\r`` was a line end after all; return the events it completes."""
        buffer, self._tail = self._tail, b""
        events: list[bytes] = []
        start = 0
        for match in _BOUNDARY.finditer(buffer):
            events.append(buffer[start : match.end()])
            start = match.end()
        self._tail = buffer[start:]
        return events

    @property
    def pending(self) -> bytes:
        """Bytes of an event not yet terminated (what a cut stream leaves behind)."""
        return self._tail


class SSEEvent(NamedTuple):
    event: str | None
    data: str | None


def encode_data_event(data: str) -> bytes:
    """Frame one ``data:`` event (``data`` holds no newlines: compact JSON)."""
    return b"data: " + data.encode() + b"\n\n"


def data_event(value: Any) -> bytes:
    """An unnamed event carrying ``value`` as compact JSON (chat completion chunks)."""
    return encode_data_event(compact_json(value))


def named_event(name: str, value: Any) -> bytes:
    """An ``event: name`` event carrying ``value`` as compact JSON (Responses events, errors)."""
    return b"event: " + name.encode() + b"\ndata: " + compact_json(value).encode() + b"\n\n"
