"""Tool calls held for a decision are bounded: past --max-held-call-bytes (all calls a stream holds at once
together) the call is denied (fail closed) and audited."""

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
    assert [(r["rule"], f"limit of {LIMIT} bytes" in r["reason"]) for r in records] == [
        ("celgate:held-call-limit", True)
    ]


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


def many_choices_holding_calls(choices: int) -> list[Step]:
    """Every choice opens a small call before any finishes: each is far under the limit, together they are not."""

    def chunk(index: int, part: dict[str, object], finish: str | None = None) -> Step:
        return Step(sse({**chat_chunk({}), "choices": [{"index": index, "delta": part, "finish_reason": finish}]}))

    head = {"index": 0, "type": "function", "function": {"name": "write_file", "arguments": '{"d": "'}}
    steps = [chunk(k, {"role": "assistant", "tool_calls": [{**head, "id": f"c{k}"}]}) for k in range(choices)]
    steps += [chunk(k, {"tool_calls": [{"index": 0, "function": {"arguments": 'x"}'}}]}) for k in range(choices)]
    steps += [chunk(k, {}, "tool_calls") for k in range(choices)]
    return [*steps, Step(b"data: [DONE]\n\n")]


async def test_many_choices_share_the_streams_limit(
    gate: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    """A hostile upstream cannot hold one call per choice across thousands of choices: memory stays bounded."""
    upstream.push(Script(steps=many_choices_holding_calls(600)))  # ~130 KiB held at once, each call ~220 bytes
    async with http.post(
        gate.url + "/chat/completions",
        json={"model": "m", "stream": True, "n": 600, "messages": [{"role": "user", "content": "x"}]},
    ) as r:
        out = await r.read()
    assert out.endswith(b"data: [DONE]\n\n")
    denied = out.count(b"write_file denied")
    assert 0 < denied < 600 and f"limit of {LIMIT} bytes".encode() in out


async def test_many_responses_items_share_the_streams_limit(
    gate: Celgate, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    items = [rw.function_call_item(f"c{k}", "write_file", '{"d": "x"}', id=f"fc_{k}") for k in range(400)]
    pending = [{**item, "arguments": "", "status": "in_progress"} for item in items]
    events = [{"type": "response.output_item.added", "output_index": k, "item": pending[k]} for k in range(400)]
    done = {"type": "response.function_call_arguments.done", "arguments": '{"d": "x"}'}
    events += [{**done, "output_index": k, "item_id": f"fc_{k}"} for k in range(400)]
    events += [{"type": "response.output_item.done", "output_index": k, "item": items[k]} for k in range(400)]
    frames = [rw.frame({**event, "sequence_number": n}) for n, event in enumerate(events)]
    upstream.push(Script(steps=[Step(frame) for frame in frames]))
    async with http.post(gate.url + "/responses", json={"model": "m", "input": "x", "stream": True}) as r:
        out = await r.read()
    delivered = out.count(b'"type":"response.output_item.done"')
    assert 0 < delivered < 400, delivered  # the items past the stream's limit were denied, not held
