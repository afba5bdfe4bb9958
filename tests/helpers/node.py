"""Running the real Node clients (openai-node, the Vercel AI SDK, the JS Agents SDK) against a base URL from pytest.

celgate must work for the clients people actually use, and the Node ones parse
streams their own way. The versions pinned in ``tests/helpers/node/package.json``
(with its lock file) are installed with ``npm ci`` once into a cache directory
named by a hash of those two files, and reused by every later session on the
machine. Each script in ``tests/helpers/node/`` reads ``{baseURL, apiKey, args}``
as JSON on stdin and prints one JSON object on stdout; ``run_node`` runs one
with a timeout and returns that object.

Tests skip (with the reason) only when ``node``/``npm`` are missing or too old,
or the install fails because the registry cannot be reached; any other install
failure fails the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

__all__ = [
    "NODE_DIR",
    "NODE_PACKAGES",
    "NodeEnv",
    "NodeUnavailable",
    "ensure_node_env",
    "node_env",
    "run_node",
    "run_node_sync",
]

NODE_DIR = Path(__file__).resolve().parent / "node"
"""The JS scripts, and the package.json / package-lock.json that pin what they run on."""

NODE_PACKAGES: dict[str, str] = json.loads((NODE_DIR / "package.json").read_text())["dependencies"]
"""The pinned npm versions (the newest majors that still run on the machine's Node 20)."""

MIN_NODE_MAJOR = 20
_OFFLINE = re.compile(
    r"ENOTFOUND|EAI_AGAIN|ECONNREFUSED|ECONNRESET|ETIMEDOUT|ENETUNREACH|EHOSTUNREACH|network|offline", re.IGNORECASE
)
_installed: NodeEnv | None = None
_failure: NodeUnavailable | None = None


class NodeUnavailable(Exception):
    """Node clients cannot run here, for a reason a test may skip on (no node/npm, no registry)."""


@dataclass(frozen=True)
class NodeEnv:
    """An installed client set: the ``node`` binary and the directory whose ``node_modules`` the scripts load."""

    node: str
    root: Path
    install_seconds: float | None  # how long this process's install took; None when a cached install was reused

    @property
    def node_modules(self) -> Path:
        return self.root / "node_modules"


def _cache_key() -> str:
    digest = hashlib.sha256()
    for name in ("package.json", "package-lock.json"):
        digest.update((NODE_DIR / name).read_bytes())
    return digest.hexdigest()[:16]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` so parallel test processes install once, not concurrently."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _node_binary() -> str:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        raise NodeUnavailable(f"Node clients need node and npm on PATH (node: {node}, npm: {npm})")
    version = subprocess.run(
        [node, "--version"], capture_output=True, text=True, timeout=30, check=False
    ).stdout.strip()
    match = re.match(r"v(\d+)", version)
    if not match or int(match[1]) < MIN_NODE_MAJOR:
        raise NodeUnavailable(f"Node clients need node >= {MIN_NODE_MAJOR}, found {version or 'nothing'}")
    return node


def ensure_node_env(*, cache_root: Path | None = None, timeout: float = 600.0) -> NodeEnv:
    """The installed clients, installing them first if this machine has no cached install (once per process).

    Raises ``NodeUnavailable`` when node/npm are missing or the registry is
    unreachable, and ``RuntimeError`` (with npm's output) for any other failure.
    """
    global _installed, _failure
    if _installed is not None:
        return _installed
    if _failure is not None:
        raise _failure
    try:
        node = _node_binary()
    except NodeUnavailable as error:
        _failure = error
        raise
    root = (cache_root or Path(tempfile.gettempdir())) / f"celgate-node-{_cache_key()}"
    root.parent.mkdir(parents=True, exist_ok=True)
    with _locked(root.with_name(root.name + ".lock")):
        if (root / ".complete").exists() and (root / "node_modules").is_dir():
            _installed = NodeEnv(node, root, None)
            return _installed
        staging = root.with_name(f"{root.name}.tmp-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        for name in ("package.json", "package-lock.json"):
            shutil.copy2(NODE_DIR / name, staging / name)
        started = time.monotonic()
        command = ["npm", "ci", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error"]
        try:
            done = subprocess.run(command, cwd=staging, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as error:
            shutil.rmtree(staging, ignore_errors=True)
            _failure = NodeUnavailable(
                f"npm ci did not finish in {timeout:.0f} s (registry unreachable?): {error.stderr!r}"
            )
            raise _failure from None
        seconds = time.monotonic() - started
        if done.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            output = f"{done.stdout}\n{done.stderr}".strip()
            if _OFFLINE.search(output):
                _failure = NodeUnavailable(f"npm ci could not reach the registry: {output[-2000:]}")
                raise _failure
            raise RuntimeError(f"npm ci failed (exit {done.returncode}):\n{output[-4000:]}")
        (staging / ".complete").write_text(json.dumps({"seconds": round(seconds, 1), "packages": NODE_PACKAGES}))
        shutil.rmtree(root, ignore_errors=True)
        staging.rename(root)
    _installed = NodeEnv(node, root, seconds)
    return _installed


@pytest.fixture(scope="session")
def node_env() -> NodeEnv:
    """The installed Node clients; skips when Node or the registry is unavailable (import it into the test module)."""
    try:
        return ensure_node_env()
    except NodeUnavailable as reason:
        pytest.skip(str(reason))


def _command(script: str, env: NodeEnv | None) -> tuple[list[str], dict[str, str], NodeEnv]:
    installed = env or ensure_node_env()
    path = NODE_DIR / script
    if not path.suffix:
        path = path.with_suffix(".cjs")
    if not path.is_file():
        raise FileNotFoundError(f"no Node script {path}")
    # A clean environment: no OPENAI_* from the developer's shell may redirect or authenticate the clients.
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "AI_GATEWAY_", "VERCEL_"))}
    environ.update(NODE_PATH=str(installed.node_modules), NO_COLOR="1", NODE_NO_WARNINGS="1")
    return [installed.node, str(path)], environ, installed


def _output(stdout: str | bytes | None, stderr: str | bytes | None) -> str:
    """A script's output for an assertion message: the end of stdout, and more of stderr (where Node puts stacks)."""
    out, err = (v.decode(errors="replace") if isinstance(v, bytes) else (v or "") for v in (stdout, stderr))
    return f"\n--- stdout ---\n{out[-4000:]}\n--- stderr ---\n{err[-8000:]}"


def _result(script: str, returncode: int | None, stdout: str, stderr: str, expect_error: bool) -> dict[str, Any]:
    """The script's JSON line, or an ``AssertionError`` carrying its stdout and stderr."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    context = f"node {script} exited {returncode}{_output(stdout, stderr)}"
    if returncode != 0 or not lines:
        raise AssertionError(context)
    try:
        result: Any = json.loads(lines[-1])
    except ValueError:
        result = None
    assert isinstance(result, dict), f"the last stdout line is not a JSON object\n{context}"
    if not result.get("ok") and not expect_error:
        raise AssertionError(f"the client failed: {json.dumps(result.get('error'), indent=2)}\n{context}")
    if result.get("ok") and expect_error:
        raise AssertionError(f"expected the client to fail\n{context}")
    return result


def _stdin(base_url: str, api_key: str, args: Mapping[str, Any] | None) -> bytes:
    return json.dumps({"baseURL": base_url, "apiKey": api_key, "args": dict(args or {})}).encode()


async def run_node(
    script: str,
    base_url: str,
    api_key: str = "sk-test",
    args: Mapping[str, Any] | None = None,
    *,
    env: NodeEnv | None = None,
    timeout: float = 60.0,
    expect_error: bool = False,
) -> dict[str, Any]:
    """Run ``tests/helpers/node/<script>`` (``.cjs`` implied) against ``base_url`` and return its JSON result.

    Async, so a FakeUpstream or celgate serving on the test's own event loop keeps
    serving while the client runs. The result has ``ok``; a client-side error
    (an API error the client raised) is ``{"ok": false, "error": {...}}`` and fails
    the call unless ``expect_error``. A crash, a timeout or non-JSON output raise
    ``AssertionError`` with the script's stdout and stderr.
    """
    command, environ, _ = _command(script, env)
    process = await asyncio.create_subprocess_exec(
        *command,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=environ,
        cwd=NODE_DIR,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(_stdin(base_url, api_key, args)), timeout)
    except TimeoutError:
        process.kill()
        stdout, stderr = await process.communicate()
        raise AssertionError(f"node {script} timed out after {timeout} s{_output(stdout, stderr)}") from None
    return _result(script, process.returncode, stdout.decode(), stderr.decode(), expect_error)


def run_node_sync(
    script: str,
    base_url: str,
    api_key: str = "sk-test",
    args: Mapping[str, Any] | None = None,
    *,
    env: NodeEnv | None = None,
    timeout: float = 60.0,
    expect_error: bool = False,
) -> dict[str, Any]:
    """``run_node`` for callers without an event loop (the server runs in another process or thread)."""
    command, environ, _ = _command(script, env)
    try:
        done = subprocess.run(
            command,
            input=_stdin(base_url, api_key, args),
            capture_output=True,
            env=environ,
            cwd=NODE_DIR,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise AssertionError(
            f"node {script} timed out after {timeout} s{_output(error.stdout, error.stderr)}"
        ) from None
    return _result(script, done.returncode, done.stdout.decode(), done.stderr.decode(), expect_error)
