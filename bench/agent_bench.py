"""What a drop-in agent adds on top of its model, and what loading agents costs.

(a) Added time per model call. A one-turn agent (no tools; the model's reply is
    the answer) is served by a real ``celgate serve`` process in front of a
    fast local mock upstream. The same ``openai.AsyncOpenAI`` client then
    times, one request at a time and interleaved:

      direct   client -> mock                                  (the baseline)
      proxied  client -> celgate -> mock                        (plain proxying)
      agent    client -> celgate -> agent -> celgate -> mock    (the drop-in)

    A one-turn agent makes exactly one model call. ``sdk`` runs the same agent
    with the Agents SDK in the client process, straight to the mock: the SDK's
    own run machinery and its client call, which any way of running the agent
    pays. ``agent - sdk - direct`` is then celgate's own cost per model call of
    an agent run (two proxy hops, the adapter, the loopback; target: <= 2 ms).
    Non-stream: time to the parsed completion. Stream: time to the last
    chunk, and to the first content delta (TTFT).

(b) Import/load time of 10 drop-in agents: a fresh interpreter imports
    ``adapters`` and starts an ``AgentRegistry`` over 10 generated agent
    folders (each an Agent with two function tools), which includes the
    Agents SDK import (target: <= 3 s). Median of 3 fresh processes. The
    same again for 10 declarative agents (``agent.yaml``) over a gateway tool
    catalogue holding the same 20 tools in one module (``--tools``).

Everything listens on 127.0.0.1 only; every loop is bounded.

    python bench/agent_bench.py [--runs 300] [--warmup 30] [--loads 3] [--no-policy]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from processes import (  # bench/ is on sys.path when a benchmark runs
    REPO,
    celgate_env,
    free_port,
    process,
    serve_command,
)

MOCK_MODEL = "bench-mock"
REPLY = "Benchmark reply: the quick brown fox jumps over the lazy dog."
AGENT_SOURCE = """\
from agents import Agent

agent = Agent(name="BenchAgent", instructions="Reply briefly.")
"""


# --- the mock upstream (raw asyncio; run in its own process) -----------------------------------------


def _completion() -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-mock",
            "object": "chat.completion",
            "created": 1700000000,
            "model": MOCK_MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": REPLY},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 12, "completion_tokens": 12, "total_tokens": 24},
        }
    ).encode()


def _stream(include_usage: bool) -> bytes:
    def chunk(delta: dict, finish: str | None = None, usage: dict | None = None) -> bytes:
        body = {
            "id": "chatcmpl-mock",
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": MOCK_MODEL,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        if usage is not None:
            body["choices"], body["usage"] = [], usage
        return b"data: " + json.dumps(body).encode() + b"\n\n"

    words = REPLY.split(" ")
    events = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"content": w if i == 0 else " " + w}) for i, w in enumerate(words)]
    events.append(chunk({}, "stop"))
    if include_usage:
        events.append(chunk({}, usage={"prompt_tokens": 12, "completion_tokens": 12, "total_tokens": 24}))
    events.append(b"data: [DONE]\n\n")
    return b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in events) + b"0\r\n\r\n"  # chunked framing


_MODELS = json.dumps(
    {"object": "list", "data": [{"id": MOCK_MODEL, "object": "model", "created": 0, "owned_by": "mock"}]}
).encode()


class _MockProtocol(asyncio.Protocol):
    """HTTP/1.1 keep-alive, Content-Length bodies only: enough for the openai client and celgate."""

    def __init__(self) -> None:
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buffer[:head_end].decode("latin-1")
            lines = head.split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
            length = int(headers.get("content-length", "0"))
            if len(self.buffer) < head_end + 4 + length:
                return
            body = self.buffer[head_end + 4 : head_end + 4 + length]
            self.buffer = self.buffer[head_end + 4 + length :]
            self._answer(lines[0], body)

    def _answer(self, request_line: str, body: bytes) -> None:
        assert self.transport is not None
        method, path, _ = request_line.split(" ", 2)
        if method == "GET" and path.endswith("/models"):
            self._send(b"application/json", _MODELS)
            return
        request = json.loads(body or b"{}")
        if request.get("stream"):
            payload = _stream(bool((request.get("stream_options") or {}).get("include_usage")))
            self.transport.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n" + payload
            )
        else:
            self._send(b"application/json", _completion())

    def _send(self, content_type: bytes, payload: bytes) -> None:
        assert self.transport is not None
        self.transport.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s"
            % (content_type, len(payload), payload)
        )


def serve_mock(port: int) -> None:
    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(_MockProtocol, "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


# --- processes -----------------------------------------------------------------------------------------


# --- (a) added time per model call ------------------------------------------------------------------


async def time_paths(direct_url: str, celgate_url: str, runs: int, warmup: int) -> dict[str, list[float]]:
    """Per-request seconds for each (path, mode); paths interleaved so drift hits them alike."""
    import openai

    direct = openai.AsyncOpenAI(base_url=direct_url, api_key="sk-bench", max_retries=0, timeout=30)
    proxy = openai.AsyncOpenAI(base_url=celgate_url, api_key="sk-bench", max_retries=0, timeout=30)
    messages = [{"role": "user", "content": "Say something."}]
    paths = {
        "direct": (direct, MOCK_MODEL),
        "proxied": (proxy, MOCK_MODEL),
        "sdk": (None, MOCK_MODEL),
        "agent": (proxy, "BenchAgent"),
    }
    sdk_agent, sdk_config = _sdk_agent(direct)

    async def once(client: openai.AsyncOpenAI | None, model: str) -> float:
        started = time.perf_counter()
        if client is None:
            from agents import Runner

            result = await Runner.run(sdk_agent, messages, run_config=sdk_config)  # type: ignore[arg-type]
            assert result.final_output == REPLY, result.final_output
            return time.perf_counter() - started
        reply = await client.chat.completions.create(model=model, messages=messages)
        elapsed = time.perf_counter() - started
        assert reply.choices[0].message.content == REPLY, reply
        return elapsed

    async def streamed(client: openai.AsyncOpenAI | None, model: str) -> tuple[float, float]:
        started = time.perf_counter()
        first = None
        text = []
        if client is None:
            async for delta in _sdk_deltas(sdk_agent, sdk_config, messages):
                first = first or time.perf_counter()
                text.append(delta)
        else:
            stream = await client.chat.completions.create(model=model, messages=messages, stream=True)
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    first = first or time.perf_counter()
                    text.append(chunk.choices[0].delta.content)
        elapsed = time.perf_counter() - started
        assert "".join(text) == REPLY and first is not None, text
        return elapsed, first - started

    samples: dict[str, list[float]] = {}
    try:
        for mode in ("non-stream", "stream"):
            for index in range(warmup + runs):
                for path, (client, model) in paths.items():
                    if mode == "non-stream":
                        values = {"total": await once(client, model)}
                    else:
                        total, ttft = await streamed(client, model)
                        values = {"total": total, "ttft": ttft}
                    if index >= warmup:
                        for metric, value in values.items():
                            samples.setdefault(f"{mode}|{metric}|{path}", []).append(value)
    finally:
        await direct.close()
        await proxy.close()
    return samples


def _sdk_agent(client: object) -> tuple[object, object]:
    """The bench agent run by the Agents SDK in this process, straight against the mock (no celgate)."""
    from agents import Agent, ModelSettings, OpenAIChatCompletionsModel, RunConfig

    model = OpenAIChatCompletionsModel(model=MOCK_MODEL, openai_client=client)  # type: ignore[arg-type]
    agent = Agent(name="BenchAgent", instructions="Reply briefly.", model=model)
    return agent, RunConfig(tracing_disabled=True, model_settings=ModelSettings(include_usage=True))


async def _sdk_deltas(agent: object, config: object, messages: list[dict[str, str]]):  # type: ignore[no-untyped-def]
    from openai.types.responses import ResponseTextDeltaEvent

    from agents import Runner

    result = Runner.run_streamed(agent, messages, run_config=config)  # type: ignore[arg-type]
    async for event in result.stream_events():
        if event.type == "raw_response_event" and isinstance(event.data, ResponseTextDeltaEvent):
            yield event.data.delta


def p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10, method="inclusive")[-1]


def overhead_table(samples: dict[str, list[float]], runs: int) -> list[str]:
    rows = [
        f"(a) added time per model call, {runs} sequential runs per path and mode (ms)",
        f"    {'mode':<11} {'metric':<6} {'path':<8} {'median':>8} {'p90':>8} {'added med':>10} {'added p90':>10}",
    ]
    for key in samples:
        mode, metric, path = key.split("|")
        values = samples[key]
        base = samples[f"{mode}|{metric}|direct"]
        added = (
            ""
            if path == "direct"
            else (
                f"{(statistics.median(values) - statistics.median(base)) * 1e3:>10.2f} "
                f"{(p90(values) - p90(base)) * 1e3:>10.2f}"
            )
        )
        rows.append(
            f"    {mode:<11} {metric:<6} {path:<8} {statistics.median(values) * 1e3:>8.2f} "
            f"{p90(values) * 1e3:>8.2f} {added}"
        )
    rows.append("    added = path minus direct (median minus median, p90 minus p90); agent = 1 model call per run")
    rows.append("    sdk = the same agent run by the Agents SDK in the client process, straight to the mock")
    rows.append("  celgate's own cost per agent model call, medians in ms: agent - sdk - direct")
    rows.append("    (the agent path is one client round trip to celgate, which `direct` also pays, plus the SDK's")
    rows.append("    run with its own client call, which `sdk` pays; what is left is celgate: two proxy hops,")
    rows.append("    the adapter, the loopback)")
    for mode, metric in (("non-stream", "total"), ("stream", "total"), ("stream", "ttft")):
        agent, sdk, direct = (statistics.median(samples[f"{mode}|{metric}|{p}"]) for p in ("agent", "sdk", "direct"))
        rows.append(f"    {mode:<11} {metric:<6} {(agent - sdk - direct) * 1e3:>8.2f}")
    return rows


def measure_overhead(runs: int, warmup: int, policies: Path | None) -> list[str]:
    mock_port, celgate_port = free_port(), free_port()
    with tempfile.TemporaryDirectory(prefix="celgate-bench-agents-") as tmp:
        folder = Path(tmp) / "BenchAgent"
        folder.mkdir()
        (folder / "agent.py").write_text(AGENT_SOURCE)
        policy_args = ["--policies", str(policies)] if policies else ["--no-policy"]
        serve = serve_command(
            celgate_port,
            mock_port,
            *policy_args,
            "--agents",
            tmp,
            "--agents-model",
            MOCK_MODEL,
            "--no-watch",
            "--access-log",
            "off",
            "--log-level",
            "warning",
            "--no-upstream-check",
        )
        with (
            process([sys.executable, __file__, "--serve-mock", str(mock_port)], mock_port),
            process(serve, celgate_port, env=celgate_env()),
        ):
            samples = asyncio.run(
                time_paths(f"http://127.0.0.1:{mock_port}/v1", f"http://127.0.0.1:{celgate_port}/v1", runs, warmup)
            )
    return overhead_table(samples, runs)


# --- (b) import/load time of 10 drop-in agents ------------------------------------------------------------

LOAD_PROBE = """\
import asyncio, resource, sys, time
started = time.perf_counter()
from pathlib import Path
import agents  # the SDK import, timed on its own (the registry would do it on its first drop-in)
sdk = time.perf_counter()
from celgate.adapters import AgentRegistry, AgentSettings

class Hooks:
    def check_tool(self, caller, tool): raise AssertionError
    def tool_finished(self, name, seconds, failed): pass
    def load_failed(self, agent, kind): print("load failure", agent, kind, file=sys.stderr)
    def tool_load_failed(self, tool, kind): print("tool load failure", tool, kind, file=sys.stderr)

async def main():
    tools = Path(sys.argv[3]) if len(sys.argv) > 3 else None
    registry = AgentRegistry(AgentSettings(Path(sys.argv[1]), "bench-mock", watch=False, tools=tools), Hooks())
    await registry.start()
    done = time.perf_counter()
    assert len(registry.names()) == int(sys.argv[2]) and not registry.failures(), registry.failures()
    print(done - started, sdk - started, done - sdk, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    await registry.close()

asyncio.run(main())
"""


def write_agents(directory: Path, count: int) -> None:
    for index in range(count):
        folder = directory / f"Agent{index:02d}"
        folder.mkdir()
        (folder / "helpers.py").write_text(f"UNIT = {index}\n")
        (folder / "agent.py").write_text(
            textwrap.dedent(f"""\
            from agents import Agent, function_tool

            from .helpers import UNIT

            __celgate__ = {{"description": "generated agent {index}", "max_turns": 4}}


            @function_tool
            def lookup_{index}(key: str) -> str:
                \"\"\"Look a key up.\"\"\"
                return f"{{key}}: {{UNIT}}"


            @function_tool
            def convert_{index}(value: float) -> str:
                \"\"\"Convert a value.\"\"\"
                return str(value * UNIT)


            agent = Agent(name="Agent{index:02d}", instructions="Help.", tools=[lookup_{index}, convert_{index}])
        """)
        )


def write_declarative(agents: Path, tools: Path, count: int) -> None:
    """``count`` agent.yaml files over one tools module with the same 2 tools per agent as ``write_agents``."""
    functions = []
    for index in range(count):
        functions.append(f"""
            @function_tool
            def lookup_{index}(key: str) -> str:
                \"\"\"Look a key up.\"\"\"
                return f"{{key}}: {index}"


            @function_tool
            def convert_{index}(value: float) -> str:
                \"\"\"Convert a value.\"\"\"
                return str(value * {index})
        """)
        folder = agents / f"Agent{index:02d}"
        folder.mkdir()
        (folder / "agent.yaml").write_text(
            f"description: generated agent {index}\ninstructions: Help.\nmax_turns: 4\n"
            f"tools: [lookup_{index}, convert_{index}]\n"
        )
    module = "from agents import function_tool\n" + "".join(textwrap.dedent(f) for f in functions)
    (tools / "generated.py").write_text(module)


def measure_loading(count: int, repeats: int) -> list[str]:
    lines = _load_times(count, repeats, declarative=False)
    return [*lines, *_load_times(count, repeats, declarative=True)]


def _load_times(count: int, repeats: int, *, declarative: bool) -> list[str]:
    results: list[tuple[float, ...]] = []
    with tempfile.TemporaryDirectory(prefix="celgate-bench-load-") as tmp:
        agents, tools = Path(tmp) / "agents", Path(tmp) / "tools"
        agents.mkdir()
        tools.mkdir()
        if declarative:
            write_declarative(agents, tools, count)
        else:
            write_agents(agents, count)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "PYTHON"))}
        env["PYTHONPATH"] = str(REPO)
        for _ in range(repeats):
            started = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-c", LOAD_PROBE, str(agents), str(count), str(tools)],
                cwd=tmp,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            wall = time.perf_counter() - started
            if done.returncode != 0:
                raise RuntimeError(done.stderr)
            total, sdk, load, rss_kib = (float(v) for v in done.stdout.split())
            results.append((total, sdk, load, rss_kib / 1024, wall))
    med = [statistics.median(column) for column in zip(*results, strict=True)]
    what = (
        "declarative agents (agent.yaml; 2 gateway tools each, one tools module)"
        if declarative
        else ("drop-in agents (each: 2 tools + a helper)")
    )
    return [
        f"(b) loading {count} {what} in a fresh process, median of {repeats}",
        f"    SDK import + registry start: {med[0] * 1e3:8.1f} ms   (runs: "
        + ", ".join(f"{r[0] * 1e3:.0f}" for r in results)
        + ")",
        f"      of which `import agents`:  {med[1] * 1e3:8.1f} ms",
        f"      of which {count} agents load:    {med[2] * 1e3:8.1f} ms   ({med[2] / count * 1e3:.1f} ms per agent)",
        *([f"      (that includes loading the {2 * count}-tool catalogue)"] if declarative else []),
        f"    whole process (interpreter start to exit): {med[4] * 1e3:.0f} ms; peak RSS {med[3]:.0f} MiB",
    ]


# --- main -----------------------------------------------------------------------------------------------


def machine() -> list[str]:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    from importlib.metadata import version

    return [
        f"machine: nproc {len(os.sched_getaffinity(0))} ({model}); Python {platform.python_version()} "
        f"({platform.python_implementation()}) on {platform.system()} {platform.release()}",
        f"versions: openai-agents {version('openai-agents')}, openai {version('openai')}, aiohttp {version('aiohttp')}",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=300, help="timed runs per path and mode (default 300)")
    parser.add_argument("--warmup", type=int, default=30, help="untimed runs first (default 30)")
    parser.add_argument("--agents", type=int, default=10, help="drop-ins to load in (b) (default 10)")
    parser.add_argument("--loads", type=int, default=3, help="fresh processes for (b) (default 3)")
    parser.add_argument("--no-policy", action="store_true", help="run celgate with --no-policy (default: ./policies)")
    parser.add_argument("--serve-mock", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_mock:
        serve_mock(args.serve_mock)
        return 0
    lines = machine()
    policy = None if args.no_policy else REPO / "policies"
    lines.append(
        f"celgate: {'--no-policy' if policy is None else f'--policies {policy}'}, access log off, "
        "no watch; mock upstream: raw asyncio, fixed reply"
    )
    lines.append("")
    lines += measure_overhead(args.runs, args.warmup, policy)
    lines.append("")
    lines += measure_loading(args.agents, args.loads)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
