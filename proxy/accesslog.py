"""Logging setup and the per-request access log.

An access line through ``logging`` costs ~35 µs per request, more than the
rest of the proxy's handler, so access lines take a cheap path: one
pre-formatted JSON line appended to a buffer that is flushed to the stream
every ``flush_interval`` seconds (and at shutdown). Diagnostic logs use
``logging`` with a JSON or text formatter, and both pass every line through
``redact``: log messages quote exceptions, tracebacks and upstream errors,
which can carry keys and passwords.

A flush writes whole lines, at most ``ATOMIC_WRITE_BYTES`` a write: the
workers of ``--workers N`` share stdout and log files, and a write that size
is never interleaved with another process's (pipes guarantee it up to
PIPE_BUF; appends to a file are one write each).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Iterator
from typing import IO, Any

from .jsontext import compact_json
from .redaction import redact, redact_json

__all__ = ["ATOMIC_WRITE_BYTES", "AccessLog", "JsonLineWriter", "configure_logging", "log_handler"]

ATOMIC_WRITE_BYTES = 4096  # PIPE_BUF on Linux


class _JsonFormatter(logging.Formatter):
    """One JSON object per record; each string is redacted before encoding, so masking never breaks the JSON."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        extra = getattr(record, "fields", None)
        if extra:
            entry.update(extra)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return compact_json(redact_json(entry))


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def log_handler(fmt: str, stream: IO[str]) -> logging.Handler:
    """A handler writing celgate's diagnostic lines (``json`` or ``text``, redacted) to ``stream``."""
    handler = logging.StreamHandler(stream)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(_TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    return handler


def configure_logging(level: str, fmt: str) -> None:
    """Diagnostics go to stderr; stdout is kept for access and audit lines."""
    root = logging.getLogger()
    root.handlers[:] = [log_handler(fmt, sys.stderr)]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").disabled = True  # celgate writes its own access lines
    for chatty in ("httpx", "httpx2", "openai", "openai.agents"):  # a line per agent model call otherwise
        logging.getLogger(chatty).setLevel(max(logging.WARNING, root.level))


class JsonLineWriter:
    """Buffered JSON-lines sink shared by the access and audit logs."""

    def __init__(self, target: str, flush_interval: float = 0.2) -> None:
        self._target = target
        self._stream: IO[str] | None = None
        self._buffer: list[str] = []
        self._flush_interval = flush_interval
        self._task: asyncio.Task[None] | None = None

    def write_line(self, line: str) -> None:
        self._buffer.append(line)

    def write(self, record: dict[str, Any]) -> None:
        """Append ``record``, redacted: audit records can quote tool arguments and policy reasons."""
        self._buffer.append(compact_json(redact_json(record)) + "\n")

    def start(self) -> None:
        """Open the target (``-``: stdout) and flush every ``flush_interval`` seconds until ``close``."""
        self._stream = sys.stdout if self._target == "-" else open(self._target, "a", encoding="utf-8")  # noqa: SIM115
        self._task = asyncio.get_running_loop().create_task(self._flush_periodically())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self.flush()
        if self._stream is not None and self._stream is not sys.stdout:
            self._stream.close()
        self._stream = None

    def flush(self) -> None:
        if self._buffer and self._stream is not None:
            lines, self._buffer = self._buffer, []
            for text in _whole_line_writes(lines):
                self._stream.write(text)
                self._stream.flush()

    async def _flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(self._flush_interval)
            self.flush()


class AccessLog:
    """One JSON line per request: time, id, method, path, model, principal, status, duration.

    The client chooses path and model (a key pasted as a model name must not be
    logged), so both are redacted; they repeat, so each distinct value is
    redacted once (up to ``_MEMO`` of them, then on every line).
    """

    _MEMO = 4096

    def __init__(self, writer: JsonLineWriter) -> None:
        self.writer = writer
        self._redacted: dict[str, str] = {}

    def _clean(self, value: str) -> str:
        clean = self._redacted.get(value)
        if clean is None:
            clean = redact(value)
            if len(self._redacted) < self._MEMO:
                self._redacted[value] = clean
        return clean

    def log(
        self,
        request_id: str,
        method: str,
        path: str,
        status: int,
        duration: float,
        model: str,
        principal: str,
        stream: bool,
    ) -> None:
        self.writer.write_line(
            f'{{"ts":{time.time():.3f},"type":"access","request_id":{compact_json(request_id)},'
            f'"method":"{method}","path":{compact_json(self._clean(path))},"status":{status},'
            f'"duration_ms":{duration * 1000:.2f},"model":{compact_json(self._clean(model))},'
            f'"principal":{compact_json(principal)},"stream":{"true" if stream else "false"}}}\n'
        )


def _whole_line_writes(lines: list[str]) -> Iterator[str]:
    """``lines`` joined into writes of at most ``ATOMIC_WRITE_BYTES`` (a longer line is a write of its own)."""
    batch: list[str] = []
    size = 0
    for line in lines:
        length = len(line.encode())
        if batch and size + length > ATOMIC_WRITE_BYTES:
            yield "".join(batch)
            batch, size = [], 0
        batch.append(line)
        size += length
    if batch:
        yield "".join(batch)
