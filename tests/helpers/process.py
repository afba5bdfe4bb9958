"""``celgate serve`` as a real subprocess: started, probed healthy, signalled, stopped."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest

from tests.helpers import free_port

__all__ = ["CELGATE", "STARTUP_SECONDS", "Running", "clean_env", "refused", "serve", "stop", "wait_healthy"]

CELGATE = Path(sys.executable).parent / "celgate"
STARTUP_SECONDS = 30


def clean_env(**extra: str) -> dict[str, str]:
    """The test process's environment without any celgate or OpenAI settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELGATE_") and not k.startswith("OPENAI_")}
    return {**env, **extra}


class Running:
    def __init__(self, process: asyncio.subprocess.Process, port: int, logs: Path) -> None:
        self.process = process
        self.port = port
        self.root = f"http://127.0.0.1:{port}"
        self.logs = logs

    def output(self) -> str:
        return "".join(p.read_text() for p in sorted(self.logs.glob("*.log")))


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[Callable[..., asyncio.Future[Running]]]:
    """``await serve(*args, port=..., cwd=..., env=...)``: ``celgate serve ...`` up and healthy; stopped after.

    Without ``port``, a free one is chosen and passed as ``--port``; with it, ``args`` (or the
    environment, or the config file) must make celgate listen there.
    """
    started: list[Running] = []

    async def start(
        *args: str, port: int | None = None, cwd: Path | None = None, env: dict[str, str] | None = None
    ) -> Running:
        if port is None:
            port = free_port()
            args = ("--port", str(port), *args)
        logs = tmp_path / f"celgate-{len(started)}"
        logs.mkdir()
        with open(logs / "stdout.log", "wb") as out, open(logs / "stderr.log", "wb") as err:
            process = await asyncio.create_subprocess_exec(
                str(CELGATE), "serve", *args, cwd=cwd or tmp_path, env=env or clean_env(), stdout=out, stderr=err
            )
        running = Running(process, port, logs)
        started.append(running)
        await wait_healthy(running)
        return running

    yield start  # type: ignore[misc]
    for running in started:
        await stop(running)


async def refused(*args: str, cwd: Path, env: dict[str, str] | None = None) -> tuple[int | None, str]:
    """Run ``celgate serve *args``, which must exit before it serves: its exit code and stderr."""
    process = await asyncio.create_subprocess_exec(
        str(CELGATE),
        "serve",
        *args,
        cwd=cwd,
        env=env or clean_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=STARTUP_SECONDS)
    return process.returncode, stderr.decode()


async def wait_healthy(running: Running) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
        async with asyncio.timeout(STARTUP_SECONDS):
            while True:
                if running.process.returncode is not None:
                    pytest.fail(f"celgate exited with {running.process.returncode}:\n{running.output()}")
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with http.get(running.root + "/healthz") as response:
                        if response.status == 200:
                            return
                await asyncio.sleep(0.05)


async def stop(running: Running) -> int:
    if running.process.returncode is None:
        running.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(running.process.wait(), timeout=10)
        except TimeoutError:
            running.process.kill()
            await running.process.wait()
    return running.process.returncode  # type: ignore[return-value]
