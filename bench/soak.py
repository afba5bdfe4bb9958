"""Soak: mixed traffic through one celgate process for a while, watching that nothing grows.

    python bench/soak.py                      # 10 minutes, a report every 10 s
    python bench/soak.py --duration 60 --warmup 20 --json result.json

celgate (``celgate serve``, one process, ``--watch`` on) runs in front of the
demo model, served by this script with two faults added: the model name
``fault-status`` gets a 503 and ``fault-reset`` a reset connection. A fixed
number of client loops send, in turn: chat JSON, chat streams, streams in
which the model calls an allowed tool (``get_weather``) and a denied one
(``shell.exec``), a denied call in a JSON reply, a Responses API request,
a stream the client drops after its first event, and both faults. Every 30 s
the policy file is rewritten (a different rule name, so a new version), and
celgate's watcher reloads it.

Every 10 s it prints, for the celgate process: RSS, open file descriptors,
TCP connections to the upstream (its pool) and the event-loop lag (mean and
the largest bucket bound reached, from ``celgate_event_loop_lag_seconds``).
At the end: the RSS slope (least squares, MiB per 10 min) and the fd change
after the warm-up, and every answer that was not the one its kind expects.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import random
import signal
import socket
import struct
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from processes import free_port, process  # bench/ is on sys.path when a benchmark runs
from prometheus_client.parser import text_string_to_metric_families

from celgate.proxy.demo import DemoServer

FAULT_STATUS, FAULT_RESET = "fault-status", "fault-reset"
POLICY = """\
version: 1
defaults:
  decision: allow
rules:
  - name: no-shell-{generation}
    on: tool_call
    tools: ["shell.exec"]
    effect: deny
"""
INTENDED = {"disconnected", "fault_status", "fault_reset"}  # kinds whose "error" is the point


class SoakUpstream(DemoServer):
    """The demo model (deterministic tool calls by message text), plus two faults chosen by model name."""

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        model = (await request.json()).get("model")
        if model == FAULT_STATUS:
            error = {"message": "overloaded (soak)", "type": "server_error", "param": None, "code": None}
            return web.json_response({"error": error}, status=503)
        if model == FAULT_RESET:
            transport = request.transport
            assert transport is not None
            sock = transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.close()
            return web.Response()  # never sent: the connection is gone
        return await super()._chat(request)


def chat(text: str, *, stream: bool = False, model: str = "demo") -> dict[str, Any]:
    return {"model": model, "stream": stream, "messages": [{"role": "user", "content": text}]}


async def one_request(http: aiohttp.ClientSession, base: str, kind: str) -> str | None:
    """Send one request of ``kind``; None when the answer is the one this kind expects, else what was wrong."""
    if kind == "disconnected":
        async with http.post(f"{base}/chat/completions", json=chat("a long story please", stream=True)) as response:
            await response.content.readline()
            response.close()  # the client leaves mid-stream
        return None
    if kind == "responses":
        async with http.post(f"{base}/responses", json={"model": "demo", "input": "hello"}) as response:
            body = await response.read()
            return None if response.status == 200 and b'"output"' in body else f"{response.status} {body[:200]!r}"
    text, stream, model, status, must, must_not = {
        "json": ("hello there", False, "demo", 200, b"You said", None),
        "stream": ("hello there", True, "demo", 200, b"data: [DONE]", None),
        "tool_allowed": ("weather in Oslo?", True, "demo", 200, b'"name":"get_weather"', None),
        "tool_denied": ("open a shell", True, "demo", 200, b"data: [DONE]", b'"name":"shell.exec"'),
        "tool_denied_json": ("open a shell", False, "demo", 200, b"denied by policy", b'"name":"shell.exec"'),
        "fault_status": ("hi", False, FAULT_STATUS, 503, b"overloaded", None),
        "fault_reset": ("hi", False, FAULT_RESET, 502, b'"error"', None),
    }[kind]
    async with http.post(f"{base}/chat/completions", json=chat(text, stream=stream, model=model)) as response:
        body = await response.read()
    if response.status != status or must not in body or (must_not is not None and must_not in body):
        return f"{response.status} {body[:200]!r}"
    return None


KINDS = [
    "json",
    "stream",
    "tool_allowed",
    "tool_denied",
    "tool_denied_json",
    "responses",
    "disconnected",
    "fault_status",
    "fault_reset",
]


@dataclass
class Tally:
    sent: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    unexpected: list[str] = field(default_factory=list)


async def client_loop(base: str, tally: Tally, stop: float, interval: float, seed: int) -> None:
    chooser = random.Random(seed)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        while time.monotonic() < stop:
            kind = chooser.choice(KINDS)
            tally.sent[kind] += 1
            try:
                wrong = await one_request(http, base, kind)
            except (aiohttp.ClientError, TimeoutError) as exc:
                wrong = f"{type(exc).__name__}: {exc}"
            if wrong is not None:
                tally.unexpected.append(f"{kind}: {wrong}")
            await asyncio.sleep(interval * chooser.uniform(0.5, 1.5))


async def rewrite_policy_every(policy: Path, seconds: float, stop: float) -> int:
    generation = 0
    while time.monotonic() + seconds < stop:
        await asyncio.sleep(seconds)
        generation += 1
        policy.write_text(POLICY.format(generation=generation))
    return generation


@dataclass
class Sample:
    t: float
    rss_mib: float
    fds: int
    upstream_connections: int
    lag_mean_ms: float
    lag_max_bound_ms: float
    requests: int


def process_figures(pid: int, upstream_port: int) -> tuple[float, int, int]:
    """RSS (MiB), open fds, and TCP connections to ``upstream_port`` of process ``pid``, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kib = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    fd_dir = Path(f"/proc/{pid}/fd")
    sockets = set()
    fds = 0
    for fd in fd_dir.iterdir():
        fds += 1
        with contextlib.suppress(OSError):
            target = fd.readlink().name
            if target.startswith("socket:["):
                sockets.add(target[8:-1])
    connections = 0
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if remote_port == upstream_port and fields[3] == "01" and fields[9] in sockets:  # 01: ESTABLISHED
                connections += 1
    return rss_kib / 1024, fds, connections


async def lag_and_requests(http: aiohttp.ClientSession, root: str) -> tuple[float, float, dict[float, float], float]:
    """``celgate_event_loop_lag_seconds`` (sum, count, buckets) and the total of ``celgate_requests_total``."""
    async with http.get(root + "/metrics") as response:
        text = await response.text()
    lag_sum = lag_count = requests = 0.0
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "celgate_event_loop_lag_seconds_sum":
                lag_sum = s.value
            elif s.name == "celgate_event_loop_lag_seconds_count":
                lag_count = s.value
            elif s.name == "celgate_event_loop_lag_seconds_bucket":
                buckets[float(s.labels["le"])] = s.value
            elif s.name == "celgate_requests_total" and s.labels.get("route", "").startswith("/v1"):
                requests += s.value
    return lag_sum, lag_count, buckets, requests


async def monitor(pid: int, root: str, upstream_port: int, every: float, stop: float) -> list[Sample]:
    samples: list[Sample] = []
    started = time.monotonic()
    async with aiohttp.ClientSession() as http:
        previous = await lag_and_requests(http, root)
        while time.monotonic() + every <= stop + 0.5:
            await asyncio.sleep(every)
            current = await lag_and_requests(http, root)
            rss, fds, connections = process_figures(pid, upstream_port)
            count = current[1] - previous[1]
            mean_ms = 1000 * (current[0] - previous[0]) / count if count else 0.0
            sample = Sample(
                round(time.monotonic() - started, 1),
                round(rss, 1),
                fds,
                connections,
                round(mean_ms, 2),
                1000 * lag_bound(current[2], previous[2], count),
                int(current[3] - previous[3]),
            )
            samples.append(sample)
            print(
                f"t={sample.t:6.0f}s rss={sample.rss_mib:6.1f} MiB fds={fds:4d} upstream_conns={connections:3d}"
                f" lag_mean={sample.lag_mean_ms:6.2f} ms lag<={sample.lag_max_bound_ms} ms"
                f" requests={sample.requests}",
                flush=True,
            )
            previous = current
    return samples


def lag_bound(buckets: dict[float, float], before: dict[float, float], count: float) -> float:
    """The smallest histogram bound that every lag sample of the period fell under (seconds)."""
    return min(bound for bound, n in buckets.items() if n - before.get(bound, 0) >= count)


def rss_slope_mib_per_10_min(samples: list[Sample]) -> float:
    """Least-squares slope of RSS over time, in MiB per 10 minutes."""
    if len(samples) < 2:
        return 0.0
    mean_t = sum(s.t for s in samples) / len(samples)
    mean_rss = sum(s.rss_mib for s in samples) / len(samples)
    spread = sum((s.t - mean_t) ** 2 for s in samples)
    slope = sum((s.t - mean_t) * (s.rss_mib - mean_rss) for s in samples) / spread
    return round(slope * 600, 2)


async def soak(
    duration: float, warmup: float, every: float, loops: int, rate: float, reload_every: float
) -> dict[str, Any]:
    main = asyncio.current_task()
    assert main is not None
    for signum in (signal.SIGINT, signal.SIGTERM):  # stop cleanly, celgate included, even when started with &
        asyncio.get_running_loop().add_signal_handler(signum, main.cancel)
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)  # celgate closing streams it dropped: intended
    upstream = SoakUpstream(delay_ms=5)
    upstream_url = await upstream.start()
    upstream_port = int(upstream_url.rsplit(":", 1)[1].split("/")[0])
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="celgate-soak-") as scratch:
        policies = Path(scratch) / "policies"
        policies.mkdir()
        policy = policies / "policy.yaml"
        policy.write_text(POLICY.format(generation=0))
        args = [
            sys.executable, "-m", "celgate.proxy", "serve", "--port", str(port), "--upstream", upstream_url,
            "--policies", str(policies), "--agents", str(Path(scratch) / "no-agents"), "--access-log", "off",
            "--no-upstream-check",
        ]  # fmt: skip
        try:
            with process(args, port) as celgate:
                root = f"http://127.0.0.1:{port}"
                stop = time.monotonic() + duration
                tally = Tally()
                results = await asyncio.gather(
                    monitor(celgate.pid, root, upstream_port, every, stop),
                    rewrite_policy_every(policy, reload_every, stop),
                    *(client_loop(root + "/v1", tally, stop, loops / rate, seed) for seed in range(loops)),
                )
                samples, rewrites = results[0], results[1]
                reloads = await policy_reloads(root)
        finally:
            await upstream.close()
    steady = [s for s in samples if s.t >= warmup] or samples
    return {
        "duration_s": duration,
        "warmup_s": warmup,
        "sent": tally.sent,
        "unexpected": tally.unexpected[:20],
        "unexpected_count": len(tally.unexpected),
        "policy_rewrites": rewrites,
        "policy_reloads_ok": reloads,
        "rss_mib_first": steady[0].rss_mib,
        "rss_mib_last": steady[-1].rss_mib,
        "rss_slope_mib_per_10_min": rss_slope_mib_per_10_min(steady),
        "fds_first": steady[0].fds,
        "fds_last": steady[-1].fds,
        "fds_range": max(s.fds for s in steady) - min(s.fds for s in steady),
        "samples": [asdict(s) for s in samples],
    }


async def policy_reloads(root: str) -> float:
    async with aiohttp.ClientSession() as http, http.get(root + "/metrics") as response:
        text = await response.text()
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "celgate_policy_reloads_total" and s.labels.get("result") == "ok"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=600, help="seconds of traffic (default 600)")
    parser.add_argument("--warmup", type=float, default=120, help="seconds left out of the slopes (default 120)")
    parser.add_argument("--every", type=float, default=10, help="seconds between reports (default 10)")
    parser.add_argument("--loops", type=int, default=8, help="concurrent client loops (default 8)")
    parser.add_argument("--rate", type=float, default=200, help="target requests per second, all loops (default 200)")
    parser.add_argument("--reload-every", type=float, default=30, help="seconds between policy rewrites (default 30)")
    parser.add_argument("--json", type=Path, help="also write the summary here")
    args = parser.parse_args()
    summary = asyncio.run(soak(args.duration, args.warmup, args.every, args.loops, args.rate, args.reload_every))
    brief = {k: v for k, v in summary.items() if k != "samples"}
    print(json.dumps(brief, indent=2))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
