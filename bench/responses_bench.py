"""What governing the Responses API costs next to chat completions, measured side by side in one run.

The issue's target: a ``/v1/responses`` stream's TTFB and celgate's CPU per
SSE event within 10 % of a ``/v1/chat/completions`` stream with the same
content, both with the 20-rule bench policy and with ``--no-policy``.

A mock upstream (raw asyncio, this file, its own process) answers both APIs
with the same reply: ``TEXT_DELTAS`` text deltas, then one ``get_weather``
call whose arguments arrive in two deltas (what the shared harness's mock
streams for chat, ``../shared/bench/mock``). Responses events are the API's
(``response.created`` ... ``response.completed`` with full snapshots, consecutive
``sequence_number``), so a Responses stream has more and larger events than
the chat one: CPU is compared per event received, and per stream.

celgate runs as ``celgate serve`` pinned to CPU 1, the mock and the load
process (aiohttp, its own process) to CPU 0, as ``../shared/bench/run.sh``
pins them (its wrk and stream client only speak chat completions). celgate's
CPU is read from ``/proc/<pid>/stat`` (utime + stime) around blocks of
requests that alternate between the two APIs, so drift hits both alike.

  burst    c=1, the mock writes the first event, pauses ``--gap-ms``, then the rest at once: TTFB (request
           sent -> first body byte; without the pause it would wait for the whole stream, which celgate
           intercepts in the read it arrived in) and CPU
  paced    c=8, the mock writes one event per ``--pace-ms``: one upstream read and one client write per event
  json     non-stream, c=8: CPU µs per request (the reply holds the same text and call)

    python bench/responses_bench.py [--streams 1500] [--paced 300] [--requests 3000] [--only policy|no-policy]
                                    [--gap-ms 1] [--pace-ms 1] [--rounds 6]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from processes import (  # bench/ is on sys.path when a benchmark runs
    REPO,
    celgate_env,
    free_port,
    process,
    serve_command,
)

__all__ = ["main"]

BENCH_POLICY = REPO / "tests" / "policy" / "corpus" / "bench"  # holds bench.yaml (key sk-bench -> bench-app)
PROXY_CPU, LOAD_CPU = 1, 0  # as ../shared/bench/run.sh pins them
MODEL, KEY = "bench-mock", "sk-bench"
TEXT = (
    "Benchmark reply: the quick brown fox jumps over the lazy dog while the "
    "proxy under test forwards every byte unchanged."
)
TEXT_DELTAS = 20
TOOL_NAME, TOOL_CALL_ID = "get_weather", "call_bench_0001"
TOOL_ARGS_PARTS = ('{"location": "Par', 'is, FR", "unit": "celsius"}')  # bench.yaml's weather-tool reads both
TOOL_ARGS = "".join(TOOL_ARGS_PARTS)
PARAMETERS = {
    "type": "object",
    "properties": {"location": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
    "required": ["location"],
}
CPU_TICK = os.sysconf("SC_CLK_TCK")


def _compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _pieces() -> list[str]:
    words = re.findall(r"\S+\s*", TEXT)
    return [words[i] if i < len(words) else "more " for i in range(TEXT_DELTAS)]


# --- the two wire formats, as bytes -------------------------------------------------------------------


def chat_events() -> list[bytes]:
    """The shared mock's chat stream: a role chunk, the text deltas, the call in 3 chunks, finish, [DONE]."""

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return (
            b"data: "
            + _compact(
                {
                    "id": "chatcmpl-bench-1",
                    "object": "chat.completion.chunk",
                    "created": 1732460000,
                    "model": MODEL,
                    "system_fingerprint": "fp_bench",
                    "choices": [choice],
                }
            )
            + b"\n\n"
        )

    call = {"index": 0, "id": TOOL_CALL_ID, "type": "function", "function": {"name": TOOL_NAME, "arguments": ""}}
    events = [chunk({"role": "assistant", "content": ""}), *(chunk({"content": p}) for p in _pieces())]
    events.append(chunk({"tool_calls": [call]}))
    events += [chunk({"tool_calls": [{"index": 0, "function": {"arguments": part}}]}) for part in TOOL_ARGS_PARTS]
    return [*events, chunk({}, "tool_calls"), b"data: [DONE]\n\n"]


def chat_completion() -> bytes:
    message = {
        "role": "assistant",
        "content": TEXT,
        "refusal": None,
        "tool_calls": [
            {"id": TOOL_CALL_ID, "type": "function", "function": {"name": TOOL_NAME, "arguments": TOOL_ARGS}}
        ],
    }
    return _compact(
        {
            "id": "chatcmpl-bench-1",
            "object": "chat.completion",
            "created": 1732460000,
            "model": MODEL,
            "system_fingerprint": "fp_bench",
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": 19, "completion_tokens": 36, "total_tokens": 55},
        }
    )


_PART: dict[str, Any] = {"type": "output_text", "annotations": [], "logprobs": [], "text": "".join(_pieces())}
_MESSAGE: dict[str, Any] = {
    "id": "msg_bench0001",
    "type": "message",
    "status": "completed",
    "role": "assistant",
    "content": [_PART],
}
_CALL: dict[str, Any] = {
    "id": "fc_bench0001",
    "type": "function_call",
    "status": "completed",
    "arguments": TOOL_ARGS,
    "call_id": TOOL_CALL_ID,
    "name": TOOL_NAME,
}


def response_object(status: str = "completed") -> dict[str, Any]:
    """A response with every top-level field the API sends; in progress it has no output and no usage."""
    done = status == "completed"
    return {
        "id": "resp_bench0001",
        "object": "response",
        "created_at": 1732460000,
        "status": status,
        "background": False,
        "completed_at": 1732460001 if done else None,
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "max_output_tokens": None,
        "max_tool_calls": None,
        "model": MODEL,
        "output": [_MESSAGE, _CALL] if done else [],
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "prompt_cache_key": None,
        "reasoning": {"effort": None, "summary": None},
        "safety_identifier": None,
        "service_tier": "default" if done else "auto",
        "store": True,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": "auto",
        "tools": [
            {"type": "function", "name": TOOL_NAME, "description": None, "parameters": PARAMETERS, "strict": False}
        ],
        "top_logprobs": 0,
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": {
            "input_tokens": 19,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": 36,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 55,
        }
        if done
        else None,
        "user": None,
        "metadata": {},
    }


def responses_events() -> list[bytes]:
    """The API's event sequence for the same reply: snapshots, the message item, the call item."""
    events: list[tuple[str, dict[str, Any]]] = [
        ("response.created", {"response": response_object("in_progress")}),
        ("response.in_progress", {"response": response_object("in_progress")}),
    ]
    text = {"item_id": _MESSAGE["id"], "output_index": 0, "content_index": 0}
    part = _PART
    events.append(
        (
            "response.output_item.added",
            {"output_index": 0, "item": {**_MESSAGE, "status": "in_progress", "content": []}},
        )
    )
    events.append(("response.content_part.added", {**text, "part": {**part, "text": ""}}))
    events += [("response.output_text.delta", {**text, "delta": p, "logprobs": []}) for p in _pieces()]
    events.append(("response.output_text.done", {**text, "text": part["text"], "logprobs": []}))
    events.append(("response.content_part.done", {**text, "part": part}))
    events.append(("response.output_item.done", {"output_index": 0, "item": _MESSAGE}))
    at = {"item_id": _CALL["id"], "output_index": 1}
    events.append(
        ("response.output_item.added", {"output_index": 1, "item": {**_CALL, "status": "in_progress", "arguments": ""}})
    )
    events += [("response.function_call_arguments.delta", {**at, "delta": p}) for p in TOOL_ARGS_PARTS]
    events.append(("response.function_call_arguments.done", {**at, "arguments": TOOL_ARGS}))
    events.append(("response.output_item.done", {"output_index": 1, "item": _CALL}))
    events.append(("response.completed", {"response": response_object()}))
    return [
        b"event: " + kind.encode() + b"\ndata: " + _compact({"type": kind, "sequence_number": n, **fields}) + b"\n\n"
        for n, (kind, fields) in enumerate(events)
    ]


# --- the mock upstream (raw asyncio; run in its own process) -------------------------------------------


def _chunked(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class _Mock(asyncio.Protocol):
    """HTTP/1.1 keep-alive, Content-Length request bodies; a stream is paced when its body says ``[pace=MS]``."""

    STREAMS: ClassVar[dict[str, list[bytes]]] = {
        "chat": [_chunked(e) for e in chat_events()],
        "responses": [_chunked(e) for e in responses_events()],
    }
    BODIES: ClassVar[dict[str, bytes]] = {"chat": chat_completion(), "responses": _compact(response_object())}
    STREAM_HEAD = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )

    def __init__(self) -> None:
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            lines = self.buffer[:end].decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
            length = int(headers.get("content-length", "0"))
            if len(self.buffer) < end + 4 + length:
                return
            body, self.buffer = self.buffer[end + 4 : end + 4 + length], self.buffer[end + 4 + length :]
            self._answer(lines[0].split(" ")[1], body)

    def _answer(self, path: str, body: bytes) -> None:
        assert self.transport is not None
        kind = "responses" if path.endswith("/responses") else "chat"
        if path.endswith("/models"):
            self._send(
                _compact(
                    {"object": "list", "data": [{"id": MODEL, "object": "model", "created": 0, "owned_by": "bench"}]}
                )
            )
        elif b'"stream":true' in body.replace(b" ", b""):
            knob = re.search(rb"\[(pace|gap)=(\d+(?:\.\d+)?)\]", body)
            if knob is None:
                self.transport.write(self.STREAM_HEAD + b"".join(self.STREAMS[kind]) + b"0\r\n\r\n")
            else:
                paced, delay = knob.group(1) == b"pace", float(knob.group(2)) / 1000
                asyncio.get_running_loop().create_task(self._paced(kind, delay, every_event=paced))
        else:
            self._send(self.BODIES[kind])

    async def _paced(self, kind: str, delay: float, *, every_event: bool) -> None:
        """``delay`` after every event, or only after the first (the rest in one write)."""
        assert self.transport is not None
        first, *rest = self.STREAMS[kind]
        self.transport.write(self.STREAM_HEAD + first)
        await asyncio.sleep(delay)
        if not every_event:
            self.transport.write(b"".join(rest) + b"0\r\n\r\n")
            return
        for event in rest:
            self.transport.write(event)
            await asyncio.sleep(delay)
        self.transport.write(b"0\r\n\r\n")

    def _send(self, payload: bytes) -> None:
        assert self.transport is not None
        self.transport.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (len(payload), payload)
        )


def serve_mock(port: int) -> None:
    async def run() -> None:
        server = await asyncio.get_running_loop().create_server(_Mock, "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    asyncio.run(run())


# --- the load process (aiohttp; its own process, reads celgate's CPU around each block) ------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` from /proc (no psutil)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CPU_TICK


def request_body(api: str, stream: bool, knob: str = "") -> bytes:
    """The same question to either API, offering get_weather in that API's tool form; ``knob`` paces the mock."""
    text = "What is the weather in Paris?" + (f" [{knob}]" if knob else "")
    if api == "chat":
        body: dict[str, Any] = {
            "model": MODEL,
            "messages": [
                {"role": "system", "content": "You are a terse assistant."},
                {"role": "user", "content": text},
            ],
            "max_tokens": 64,
            "temperature": 0,
            "tools": [
                {
                    "type": "function",
                    "function": {"name": TOOL_NAME, "description": "Current weather", "parameters": PARAMETERS},
                }
            ],
        }
    else:
        body = {
            "model": MODEL,
            "instructions": "You are a terse assistant.",
            "input": text,
            "max_output_tokens": 64,
            "temperature": 0,
            "tools": [
                {
                    "type": "function",
                    "name": TOOL_NAME,
                    "description": "Current weather",
                    "parameters": PARAMETERS,
                    "strict": False,
                }
            ],
        }
    if stream:
        body["stream"] = True
    return json.dumps(body).encode()


def check_stream(api: str, raw: bytes) -> int:
    """Events in a stream, after checking the text and the call arrived whole; raises if not."""
    frames = [frame for frame in raw.split(b"\n\n") if frame.strip()]
    datas = [
        json.loads(line[6:])
        for frame in frames
        for line in frame.split(b"\n")
        if line.startswith(b"data: ") and line != b"data: [DONE]"
    ]
    if api == "chat":
        deltas = [c["choices"][0]["delta"] for c in datas if c.get("choices")]
        text = "".join(d.get("content") or "" for d in deltas)
        arguments = "".join(t["function"].get("arguments", "") for d in deltas for t in d.get("tool_calls") or [])
        ok = raw.endswith(b"data: [DONE]\n\n")
    else:
        text = "".join(e["delta"] for e in datas if e["type"] == "response.output_text.delta")
        arguments = "".join(e["delta"] for e in datas if e["type"] == "response.function_call_arguments.delta")
        ok = datas[-1]["type"] == "response.completed" and len(datas[-1]["response"]["output"]) == 2
    if not (ok and text == "".join(_pieces()) and arguments == TOOL_ARGS):
        raise RuntimeError(f"{api} stream not intact: {raw[-600:]!r}")
    return len(frames)


async def _load(url: str, pid: int, plan: dict[str, Any]) -> dict[str, Any]:
    import aiohttp

    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    results: dict[str, Any] = {}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:

        async def stream(api: str, body: bytes, ttfb: list[float] | None) -> tuple[int, int]:
            started = time.perf_counter()
            async with session.post(
                f"{url}/{'chat/completions' if api == 'chat' else 'responses'}", data=body, headers=headers
            ) as response:
                chunks: list[bytes] = []
                async for chunk in response.content.iter_any():
                    if not chunks and ttfb is not None:
                        ttfb.append(time.perf_counter() - started)
                    chunks.append(chunk)
                if response.status != 200:
                    raise RuntimeError(f"{api}: HTTP {response.status}: {b''.join(chunks)[:300]!r}")
            raw = b"".join(chunks)
            return check_stream(api, raw), len(raw)

        async def json_request(api: str, body: bytes) -> tuple[int, int]:
            path = "chat/completions" if api == "chat" else "responses"
            async with session.post(f"{url}/{path}", data=body, headers=headers) as response:
                payload = await response.read()
                if response.status != 200 or TOOL_NAME.encode() not in payload:  # the allowed call came through
                    raise RuntimeError(f"{api}: HTTP {response.status}: {payload[:300]!r}")
            return 0, len(payload)

        async def concurrently(
            count: int, conc: int, make: Callable[[], Awaitable[tuple[int, int]]]
        ) -> list[tuple[int, int]]:
            out: list[tuple[int, int]] = []
            queue = iter(range(count))

            async def worker() -> None:
                for _ in queue:
                    out.append(await make())

            await asyncio.gather(*(worker() for _ in range(conc)))
            return out

        async def block(phase: str, api: str, count: int, ttfb: list[float]) -> list[tuple[int, int]]:
            """``count`` requests of one phase to one API; (events, bytes) of each (0 events for JSON)."""
            if phase == "burst":
                body = request_body(api, True, f"gap={plan['gap_ms']:g}")
                return [await stream(api, body, ttfb) for _ in range(count)]
            if phase == "paced":
                body = request_body(api, True, f"pace={plan['pace_ms']:g}")
                return await concurrently(count, 8, lambda: stream(api, body, None))
            body = request_body(api, False)
            return await concurrently(count, 8, lambda: json_request(api, body))

        apis = ("chat", "responses")
        for api in apis:  # warm-up: connections, caches, the policy's candidate plans
            for _ in range(50):
                await stream(api, request_body(api, True), None)
                await json_request(api, request_body(api, False))
        rounds = plan["rounds"]
        for phase in ("burst", "paced", "json"):
            if plan[phase] == 0:
                continue
            for api in apis:
                results[f"{phase}|{api}"] = {"cpu": 0.0, "wall": 0.0, "n": 0, "events": 0, "bytes": 0, "ttfb": []}
            for _ in range(rounds):
                for api in apis:
                    cell = results[f"{phase}|{api}"]
                    count = plan[phase] // rounds
                    before, started = cpu_seconds(pid), time.perf_counter()
                    done = await block(phase, api, count, cell["ttfb"])
                    cell["wall"] += time.perf_counter() - started
                    cell["cpu"] += cpu_seconds(pid) - before
                    cell["n"] += count
                    cell["events"] += sum(events for events, _ in done)
                    cell["bytes"] += sum(size for _, size in done)
    return results


def load_main(spec: str) -> None:
    """The load process: runs the plan against celgate and prints its JSON results."""
    plan = json.loads(spec)
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    print(json.dumps(asyncio.run(_load(plan["url"], plan["pid"], plan))))


# --- processes -----------------------------------------------------------------------------------------


def pinned(cpu: int, args: list[str]) -> list[str]:
    """``args`` under ``taskset -c cpu`` when the machine has that core and taskset (else unpinned)."""
    if shutil.which("taskset") and cpu < (os.cpu_count() or 1):
        return ["taskset", "-c", str(cpu), *args]
    return args


def measure(mock_port: int, policy_args: list[str], plan: dict[str, Any]) -> dict[str, Any]:
    """One celgate (pinned to PROXY_CPU) in front of the mock, loaded from a process on LOAD_CPU."""
    port = free_port()
    serve = serve_command(port, mock_port, *policy_args)
    env = celgate_env()
    with (
        tempfile.TemporaryDirectory(prefix="celgate-bench-responses-") as cwd,
        process(pinned(PROXY_CPU, serve), port, env={**env, "PWD": cwd}) as celgate,
    ):
        spec = json.dumps({**plan, "url": f"http://127.0.0.1:{port}/v1", "pid": celgate.pid})
        done = subprocess.run(
            pinned(LOAD_CPU, [sys.executable, __file__, "--load", spec]),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if done.returncode != 0:
            raise RuntimeError(done.stderr[-3000:])
        results: dict[str, Any] = json.loads(done.stdout)
        return results


# --- the report ----------------------------------------------------------------------------------------


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def rows(results: dict[str, Any]) -> list[tuple[str, float, float]]:
    """(metric, chat, responses) for one celgate configuration."""
    out: list[tuple[str, float, float]] = []

    def both(phase: str) -> tuple[dict[str, Any], dict[str, Any]]:
        return results[f"{phase}|chat"], results[f"{phase}|responses"]

    if "burst|chat" in results:
        chat, resp = both("burst")
        out.append(("SSE events per stream", chat["events"] / chat["n"], resp["events"] / resp["n"]))
        out.append(("bytes per stream", chat["bytes"] / chat["n"], resp["bytes"] / resp["n"]))
        out.append(("stream TTFB p50, ms", pct(chat["ttfb"], 50) * 1e3, pct(resp["ttfb"], 50) * 1e3))
        out.append(("stream TTFB p90, ms", pct(chat["ttfb"], 90) * 1e3, pct(resp["ttfb"], 90) * 1e3))
        out.append(("burst: CPU µs per stream", chat["cpu"] / chat["n"] * 1e6, resp["cpu"] / resp["n"] * 1e6))
        out.append(
            ("burst: CPU µs per SSE event", chat["cpu"] / chat["events"] * 1e6, resp["cpu"] / resp["events"] * 1e6)
        )
    if "paced|chat" in results:
        chat, resp = both("paced")
        out.append(("paced: CPU µs per stream", chat["cpu"] / chat["n"] * 1e6, resp["cpu"] / resp["n"] * 1e6))
        out.append(
            ("paced: CPU µs per SSE event", chat["cpu"] / chat["events"] * 1e6, resp["cpu"] / resp["events"] * 1e6)
        )
    if "json|chat" in results:
        chat, resp = both("json")
        out.append(("non-stream: CPU µs per request", chat["cpu"] / chat["n"] * 1e6, resp["cpu"] / resp["n"] * 1e6))
        out.append(("non-stream: requests/s (c=8)", chat["n"] / chat["wall"], resp["n"] / resp["wall"]))
    return out


def table(name: str, results: dict[str, Any]) -> list[str]:
    lines = [f"| {name} | chat | responses | responses / chat |", "|---|---:|---:|---:|"]
    for metric, chat, resp in rows(results):
        lines.append(
            f"| {metric} | {chat:,.{3 if chat < 10 else 1}f} | {resp:,.{3 if resp < 10 else 1}f} | {resp / chat:.2f} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=1500, help="burst streams per API (c=1; default 1500)")
    parser.add_argument("--paced", type=int, default=300, help="paced streams per API (c=8; default 300)")
    parser.add_argument(
        "--gap-ms",
        type=float,
        default=1.0,
        help="burst: mock pause after the first event, so TTFB is the first event's (default 1)",
    )
    parser.add_argument("--pace-ms", type=float, default=1.0, help="mock delay between paced events (default 1)")
    parser.add_argument("--requests", type=int, default=3000, help="non-stream requests per API (c=8; default 3000)")
    parser.add_argument("--rounds", type=int, default=6, help="alternating blocks per phase and API (default 6)")
    parser.add_argument("--only", choices=["policy", "no-policy"], help="one celgate configuration (default both)")
    parser.add_argument("--serve-mock", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--load", metavar="JSON", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_mock:
        serve_mock(args.serve_mock)
        return 0
    if args.load:
        load_main(args.load)
        return 0
    plan = {
        "burst": args.streams,
        "paced": args.paced,
        "json": args.requests,
        "rounds": args.rounds,
        "pace_ms": args.pace_ms,
        "gap_ms": args.gap_ms,
    }
    configs = {"bench.yaml (20 rules)": ["--policies", str(BENCH_POLICY)], "--no-policy": ["--no-policy"]}
    if args.only:
        configs = {k: v for k, v in configs.items() if (k == "--no-policy") == (args.only == "no-policy")}
    from importlib.metadata import version

    print(
        f"date: {datetime.now(UTC).isoformat(timespec='seconds')}; command: python bench/responses_bench.py "
        + " ".join(argv if argv is not None else sys.argv[1:])
    )
    print(
        f"machine: {os.cpu_count()} CPUs, Python {platform.python_version()}, aiohttp {version('aiohttp')}; "
        f"celgate on CPU {PROXY_CPU}, mock + load on CPU {LOAD_CPU}"
    )
    print(
        f"plan: {args.streams} burst streams (c=1, {args.gap_ms:g} ms after the first event), "
        f"{args.paced} paced streams (c=8, {args.pace_ms:g} ms/event), "
        f"{args.requests} non-stream requests (c=8) per API, in {args.rounds} alternating blocks; "
        f"{TEXT_DELTAS} text deltas + 1 get_weather call (2 argument deltas)"
    )
    mock_port = free_port()
    with process(pinned(LOAD_CPU, [sys.executable, __file__, "--serve-mock", str(mock_port)]), mock_port):
        for name, policy_args in configs.items():
            started = time.monotonic()
            results = measure(mock_port, policy_args, plan)
            print()
            print("\n".join(table(f"celgate, {name}", results)))
            print(f"({time.monotonic() - started:.0f} s)")
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
