"""A tool call held for a decision is bounded: past --max-held-call-bytes it is denied (fail closed) and audited."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest

from tests.helpers import ALLOW_REQUESTS, Celgate, StartCelgate, write_policy
from tests.helpers import responses_wire as rw
from tests.helpers.fakeupstream import FakeUpstream, Script, Step, chat_chunk, sse

POLICY = (
    ALLOW_REQUESTS
    + """\
  - name: small-writes
    on: tool_call
    tools: ["write_file"]
    when: size(tool.raw_arguments) < 100
    effect: allow
"""
)
LIMIT = 64 * 1024
PIECE = "x" * 4096


def huge_chat_call(pieces: int) -> list[Step]:
    steps = [
        Step(
            sse(
                chat_chunk(
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": "c1",
                                "type": "function",
                                "function": {"name": "write_file", "arguments": '{"data": "'},
                            }
                        ],
                    }
                )
            )
        )
    ]
    steps += [Step(sse(chat_chunk({"tool_calls": [{"index": 0, "function": {"arguments": PIECE}}]})))] * pieces
    steps += [
        Step(sse(chat_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"}'}}]}))),
        Step(sse(chat_chunk({}, "tool_calls"))),
        Step(b"data: [DONE]\n\n"),
    ]
    return steps


@pytest.fixture
async def gate(upstream: FakeUpstream, start_celgate: StartCelgate, tmp_path: Path) -> Celgate:
    return await start_celgate(
        upstream=upstream.base_url,
        no_policy=False,
        policies=write_policy(tmp_path, POLICY),
        max_held_call_bytes=LIMIT,
        audit_log=str(tmp_path / "audit.log"),
    )


async def test_a_chat_call_past_the_limit_is_denied_and_audited(
    gate: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    upstream.push(Script(steps=huge_chat_call(200)))  # ~800 KiB of arguments
    async with http.post(
        gate.url + "/chat/completions",
        json={"model": "m", "stream": True, "messages": [{"role": "user", "content": "x"}]},
    ) as r:
        out = await r.read()
    assert PIECE.encode() not in out and b"write_file denied" in out and out.endswith(b"data: [DONE]\n\n")
    await gate.stop()
    records = [json.loads(line) for line in (tmp_path / "audit.log").read_text().splitlines()]
    assert [(r["rule"], "byte limit" in r["reason"]) for r in records] == [("celgate:held-call-limit", True)]


async def test_a_responses_call_past_the_limit_is_denied(
    gate: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    item = rw.function_call_item("c1", "write_file", json.dumps({"data": PIECE * 50}))
    upstream.push(Script(steps=rw.responses_steps([item], split_arguments=60)))
    async with http.post(gate.url + "/responses", json={"model": "m", "input": "x", "stream": True}) as r:
        out = await r.read()
    assert PIECE.encode() not in out and b"write_file denied" in out and b"response.completed" in out


async def test_a_small_call_is_still_decided_on_its_arguments(
    gate: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    upstream.push(Script(steps=huge_chat_call(0)))
    async with http.post(
        gate.url + "/chat/completions",
        json={"model": "m", "stream": True, "messages": [{"role": "user", "content": "x"}]},
    ) as r:
        out = await r.read()
    assert b"write_file" in out and b"denied" not in out
