"""``celgate serve --workers N`` on real processes: one port, summed metrics, replaced workers, signals, logs."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.mmap_dict import MmapedDict

from celgate.proxy.accesslog import ATOMIC_WRITE_BYTES, JsonLineWriter
from celgate.proxy.settings import SettingsError, load_settings
from tests.helpers import free_port, write_policy
from tests.helpers.fakeupstream import FakeUpstream, Script, text_stream
from tests.helpers.observe import Samples, eventually, get_json, labelled, metric, scrape
from tests.helpers.process import Running, clean_env, refused

Serve = Callable[..., Awaitable[Running]]
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
DEADLINE = 20.0


def workers_of(supervisor: int) -> set[int]:
    """The worker processes ``supervisor`` spawned now (not multiprocessing's resource tracker)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes()
        except (OSError, IndexError):
            continue  # it exited while we looked
        if parent == supervisor and b"spawn_main" in command:
            found.add(int(entry.name))
    return found


def metrics_dir(worker: int) -> Path:
    environ = Path(f"/proc/{worker}/environ").read_bytes().split(b"\0")
    [value] = [item.split(b"=", 1)[1] for item in environ if item.startswith(b"PROMETHEUS_MULTIPROC_DIR=")]
    return Path(value.decode())


def chat_requests_counted_by(directory: Path, worker: int) -> float:
    """What one worker's own metrics file holds for ``celgate_requests_total`` on the chat route."""
    path = directory / f"counter_{worker}.db"
    if not path.exists():
        return 0.0
    return sum(
        value
        for key, value, *_ in MmapedDict.read_all_values_from_file(str(path))
        if '"celgate_requests"' in key and "chat/completions" in key
    )


async def scrape_once(served: Running) -> Samples:
    async with aiohttp.ClientSession() as http:
        return await scrape(http, served)


async def chat_on_new_connections(root: str, count: int) -> list[int]:
    """``count`` chat requests, each on its own connection, so the kernel hands each to some worker."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:

        async def one() -> int:
            async with http.post(root + "/v1/chat/completions", json=CHAT) as response:
                await response.read()
                return response.status

        return list(await asyncio.gather(*(one() for _ in range(count))))


async def start_workers(serve: Serve, upstream: FakeUpstream, *extra: str) -> Running:
    """``celgate serve --workers 2`` in front of ``upstream``, both workers up; ``--no-policy`` unless given one."""
    port = free_port()
    extra = extra if "--policies" in extra else ("--no-policy", *extra)
    running = await serve(
        "--port", str(port), "--upstream", upstream.base_url, "--workers", "2", "--no-upstream-check",
        "--access-log", "off", *extra, port=port, env=clean_env(),
    )  # fmt: skip
    await eventually(lambda: len(workers_of(running.process.pid)) == 2, "two workers")
    return running


def test_workers_auto_is_the_usable_cores_and_zero_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no celgate.yaml
    assert load_settings({"workers": "auto"}, environ={}).workers == len(os.sched_getaffinity(0))
    assert load_settings({}, environ={"CELGATE_WORKERS": "3"}).workers == 3
    with pytest.raises(SettingsError, match="workers must be >= 1"):
        load_settings({"workers": "0"}, environ={})


async def test_two_workers_answer_on_one_port_and_metrics_sum_across_them(serve: Serve, upstream: FakeUpstream) -> None:
    running = await start_workers(serve, upstream)
    workers = workers_of(running.process.pid)
    directory = metrics_dir(next(iter(workers)))
    sent = 0
    while not all(chat_requests_counted_by(directory, pid) for pid in workers):  # until both have answered
        assert sent < 400, "one worker answered every connection"
        assert set(await chat_on_new_connections(running.root, 20)) == {200}
        sent += 20

    samples = await scrape_once(running)
    labels = frozenset({("route", "/v1/chat/completions"), ("model", "m"), ("status", "200")})
    assert samples[("celgate_requests_total", labels)] == sent  # whichever worker answered the scrape
    async with aiohttp.ClientSession() as http:
        as_json = await get_json(http, running.root + "/admin/metrics")
    [chat] = [s for s in as_json["celgate_requests"]["samples"] if s["labels"] == dict(labels)]
    assert chat["value"] == sent  # the JSON view reads the same files
    assert samples[("celgate_worker_restarts_total", frozenset())] == 0

    async def loop_lag_sampled() -> bool:
        return bool(metric(await scrape_once(running), "celgate_event_loop_lag_seconds_count"))

    await eventually(loop_lag_sampled, "an event-loop lag sample")  # the first comes 0.25 s after a start
    assert sent == sum(chat_requests_counted_by(directory, pid) for pid in workers)


async def test_a_killed_worker_is_replaced_and_counted(serve: Serve, upstream: FakeUpstream) -> None:
    running = await start_workers(serve, upstream)
    supervisor_fds = Path(f"/proc/{running.process.pid}/fd")
    fds_before = len(list(supervisor_fds.iterdir()))
    victim = min(workers_of(running.process.pid))
    os.kill(victim, signal.SIGKILL)
    await eventually(lambda: len(workers_of(running.process.pid) - {victim}) == 2, "a replacement worker")
    # the dead worker's pipe closed, the new one's open (eventually: spawning holds a pipe of its own a moment)
    await eventually(lambda: len(list(supervisor_fds.iterdir())) == fds_before, "the supervisor's fds back")

    assert set(await chat_on_new_connections(running.root, 20)) == {200}
    samples = await scrape_once(running)
    assert samples[("celgate_worker_restarts_total", frozenset())] == 1
    assert f"(pid {victim}) exited with -9; replacing it" in running.output()


async def test_a_worker_that_keeps_dying_young_is_replaced_ever_more_slowly(
    serve: Serve, upstream: FakeUpstream
) -> None:
    """1, 2, then 4 s before each replacement: a worker that cannot live must not become a respawn storm."""
    running = await start_workers(serve, upstream)
    current = workers_of(running.process.pid)
    victim = min(current)
    waited = []
    for _ in range(3):
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        await eventually(lambda before=current: bool(workers_of(running.process.pid) - before), "a replacement")
        waited.append(time.monotonic() - killed_at)
        [victim] = workers_of(running.process.pid) - current  # the same slot's replacement, killed young next
        current = workers_of(running.process.pid)
    assert all(w >= 0.95 * expected for w, expected in zip(waited, (1, 2, 4), strict=True)), waited
    samples = await scrape_once(running)
    assert samples[("celgate_worker_restarts_total", frozenset())] == 3


async def test_a_reload_while_a_worker_starts_does_not_kill_it(serve: Serve, upstream: FakeUpstream) -> None:
    """SIGHUP's default action ends a process: a worker still importing must not get it before it can reload."""
    running = await start_workers(serve, upstream)
    victim = min(workers_of(running.process.pid))
    os.kill(victim, signal.SIGKILL)
    await eventually(lambda: len(workers_of(running.process.pid) - {victim}) == 2, "a replacement worker")
    for _ in range(10):  # while the replacement imports and builds its app
        running.process.send_signal(signal.SIGHUP)
        await asyncio.sleep(0.05)
    assert set(await chat_on_new_connections(running.root, 20)) == {200}
    samples = await scrape_once(running)
    assert samples[("celgate_worker_restarts_total", frozenset())] == 1  # the kill, and nothing since
    assert len(workers_of(running.process.pid)) == 2


async def test_sigterm_drains_every_worker_exits_0_and_removes_the_metrics(
    serve: Serve, upstream: FakeUpstream
) -> None:
    running = await start_workers(serve, upstream, "--drain-seconds", "5")
    directory = metrics_dir(next(iter(workers_of(running.process.pid))))
    upstream.push(Script(steps=text_stream([f" w{i}" for i in range(10)], delay=0.1)))
    async with aiohttp.ClientSession() as http:
        stream = await http.post(running.root + "/v1/chat/completions", json={**CHAT, "stream": True})
        await stream.content.readline()  # the stream is under way on some worker
        running.process.send_signal(signal.SIGTERM)
        body = await stream.read()
    assert body.endswith(b"data: [DONE]\n\n")  # finished within the drain
    assert await asyncio.wait_for(running.process.wait(), DEADLINE) == 0
    assert not directory.exists()


AGENT_POLICY = """\
version: 1
defaults:
  decision: deny
rules:
  - name: clients-may-use-the-agent
    on: request
    models: ["EchoAgent"]
    effect: allow
  - name: only-the-agent-may-use-its-model   # matches only a call celgate knows is the agent's own
    on: request
    agents: ["EchoAgent"]
    models: ["up"]
    effect: allow
"""


async def test_a_drop_in_agents_model_calls_are_recognised_by_every_worker(
    serve: Serve, upstream: FakeUpstream, tmp_path: Path
) -> None:
    """An agent's loopback call may land on the other worker: the gateway token is shared, so it is still its own."""
    agent = tmp_path / "agents" / "EchoAgent"
    agent.mkdir(parents=True)
    (agent / "agent.py").write_text('from agents import Agent\nagent = Agent(name="EchoAgent", instructions="Echo.")\n')
    policies = write_policy(tmp_path, AGENT_POLICY)
    running = await start_workers(
        serve, upstream, "--policies", str(policies), "--agents", str(tmp_path / "agents"), "--agents-model", "up"
    )
    body = {"model": "EchoAgent", "messages": [{"role": "user", "content": "hi"}]}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
        for _ in range(10):
            async with http.post(running.root + "/v1/chat/completions", json=body) as response:
                assert response.status == 200, await response.text()
    assert [request.body["model"] for request in upstream.requests] == ["up"] * 10


@pytest.mark.parametrize("how", ["SIGHUP", "POST /admin/reload"])
async def test_a_reload_reaches_every_worker(serve: Serve, upstream: FakeUpstream, tmp_path: Path, how: str) -> None:
    policies = write_policy(tmp_path, "version: 1\ndefaults:\n  decision: allow\n")
    running = await start_workers(serve, upstream, "--policies", str(policies), "--no-watch")
    assert set(await chat_on_new_connections(running.root, 10)) == {200}
    (policies / "policy.yaml").write_text("version: 1\ndefaults:\n  decision: deny\n")
    if how == "SIGHUP":
        running.process.send_signal(signal.SIGHUP)
    else:
        async with aiohttp.ClientSession() as http, http.post(running.root + "/admin/reload") as response:
            assert (await response.json())["other_workers"] == "signalled"

    async def every_worker_denies() -> bool:
        return set(await chat_on_new_connections(running.root, 20)) == {403}

    await eventually(every_worker_denies, "every worker to deny (one kept the old policy)")
    versions = labelled(await scrape_once(running), "celgate_policy_info")
    assert sorted(versions.values()) == [0, 1]  # the old version reads 0 (its series stays in the files), the new one 1
    assert running.process.returncode is None and len(workers_of(running.process.pid)) == 2  # nobody died


async def test_a_port_in_use_fails_once_before_any_worker_starts(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        code, stderr = await refused("--no-policy", "--workers", "2", "--port", str(port), cwd=tmp_path)
    assert code == 2 and f"cannot listen on 127.0.0.1:{port}" in stderr


class FlushedWrites(io.StringIO):
    """A stream that records what each ``flush`` pushed out: one OS write per flush for a buffered stream."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []
        self._pending = ""

    def write(self, text: str) -> int:
        self._pending += text
        return len(text)

    def flush(self) -> None:
        if self._pending:
            self.writes.append(self._pending)
            self._pending = ""


async def test_log_writes_are_whole_lines_small_enough_not_to_interleave(monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers share stdout: a write of whole lines up to PIPE_BUF is never cut into by another process's."""
    stdout = FlushedWrites()
    monkeypatch.setattr(sys, "stdout", stdout)
    writer = JsonLineWriter("-")
    writer.start()
    records = [{"n": n, "text": "x" * 200} for n in range(60)] + [{"n": 60, "text": "y" * 6000}]
    for record in records:
        writer.write(record)
    await writer.close()

    assert len(stdout.writes) > 2 and all(write.endswith("\n") for write in stdout.writes)
    fits = [len(write.encode()) <= ATOMIC_WRITE_BYTES for write in stdout.writes]
    assert fits == [True] * (len(fits) - 1) + [False]  # only the line longer than that is a write of its own
    assert [json.loads(line) for line in "".join(stdout.writes).splitlines()] == records


async def test_workers_stop_when_their_supervisor_is_killed(serve: Serve, upstream: FakeUpstream) -> None:
    running = await start_workers(serve, upstream)
    workers = workers_of(running.process.pid)
    running.process.kill()
    await eventually(lambda: not any(Path(f"/proc/{pid}").exists() for pid in workers), "orphaned workers to exit")
