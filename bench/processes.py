"""Processes for the project's benchmarks: a free port, the ``celgate serve`` command, and a service
started, awaited and stopped by group."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = ["REPO", "celgate_env", "free_port", "process", "serve_command"]

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_command(port: int, upstream_port: int, *args: str) -> list[str]:
    """``celgate serve`` on a loopback ``port`` in front of a mock on ``upstream_port``, plus ``args``."""
    upstream = f"http://127.0.0.1:{upstream_port}/v1"
    serve = ["-m", "celgate.proxy", "serve", "--host", "127.0.0.1", "--port", str(port), "--upstream", upstream]
    return [sys.executable, *serve, *args]


def celgate_env() -> dict[str, str]:
    """This environment without ``OPENAI_*`` and ``CELGATE_*``: only the flags configure the celgate measured."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "CELGATE_"))}


@contextlib.contextmanager
def process(args: list[str], port: int, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """Start a process in its own group, wait until ``port`` accepts, stop it (by its group id) at the end."""
    with tempfile.TemporaryFile() as stderr:  # a file, not a pipe: a chatty process never blocks on it
        proc = subprocess.Popen(
            args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
                if proc.poll() is not None or time.monotonic() > deadline:
                    stderr.seek(0)
                    raise RuntimeError(f"{' '.join(args[:6])} did not start: {stderr.read().decode()[-2000:]}")
                time.sleep(0.05)
            yield proc
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
