"""Unit tests of the SSE splitter/parser (proxy/sse.py) and the chat tool-call interceptor (proxy/chat_calls.py)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from celgate.proxy.chat_calls import ChatStreamInterceptor as StreamInterceptor
from celgate.proxy.chat_calls import filter_completion
from celgate.proxy.sse import SSESplitter, encode_data_event
from celgate.proxy.strict import parse_event_strict as parse_event
from celgate.proxy.toolcalls import ALLOWED, ProposedCall, ToolCallRejected, ToolVerdict, Verdict, intercept
from tests.helpers.fakeupstream import USAGE, chat_chunk, completion, sse, text_stream, tool_call_stream

# --------------------------------------------------------------------------------------------- SSE


MIXED = (
    b": keep-alive\n\n"
    b"data: one\n\n"
    b"event: message\r\ndata: two\r\n\r\n"
    b"data: three\r\rdata: four\ndata: four-b\n\n"
    b"id: 7\nretry: 100\ndata:five\n\n"
    b": comment\ndata: six\r\n\r\n"
    b"data: [DONE]\n\n"
)
MIXED_EVENTS = [
    b": keep-alive\n\n",
    b"data: one\n\n",
    b"event: message\r\ndata: two\r\n\r\n",
    b"data: three\r\r",
    b"data: four\ndata: four-b\n\n",
    b"id: 7\nretry: 100\ndata:five\n\n",
    b": comment\ndata: six\r\n\r\n",
    b"data: [DONE]\n\n",
]


def split_all(*reads: bytes) -> tuple[list[bytes], bytes]:
    splitter = SSESplitter()
    events = [event for data in reads for event in splitter.feed(data)]
    return events, splitter.pending


def test_splitter_whole_stream_in_one_read() -> None:
    events, pending = split_all(MIXED)
    assert events == MIXED_EVENTS
    assert pending == b""


@pytest.mark.parametrize("cut", range(1, len(MIXED)))
def test_splitter_events_split_across_two_reads_at_every_byte(cut: int) -> None:
    events, pending = split_all(MIXED[:cut], MIXED[cut:])
    assert events == MIXED_EVENTS
    assert pending == b""


def test_splitter_one_byte_per_read() -> None:
    events, pending = split_all(*(MIXED[i : i + 1] for i in range(len(MIXED))))
    assert events == MIXED_EVENTS
    assert pending == b""


def test_splitter_every_pair_of_cuts_keeps_every_byte() -> None:
    """Three reads, cut at every pair of positions: the events are the same, and no byte is lost or added."""
    for first in range(1, len(MIXED) - 1, 3):
        for second in range(first + 1, len(MIXED)):
            events, pending = split_all(MIXED[:first], MIXED[first:second], MIXED[second:])
            assert events == MIXED_EVENTS, (first, second)
            assert pending == b""


def test_splitter_keeps_an_unterminated_event_pending() -> None:
    splitter = SSESplitter()
    assert splitter.feed(b"data: a\n\ndata: partial") == [b"data: a\n\n"]
    assert splitter.pending == b"data: partial"
    assert splitter.feed(b"\n") == []
    assert splitter.feed(b"\n") == [b"data: partial\n\n"]
    assert splitter.pending == b""


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_splitter_each_line_ending(newline: bytes) -> None:
    stream = b"".join(b"data: " + str(i).encode() + newline + newline for i in range(5))
    events, _ = split_all(stream + b"data: next")  # more bytes follow: a trailing \r is a whole line end
    assert [parse_event(e).data for e in events] == ["0", "1", "2", "3", "4"]
    assert b"".join(events) == stream


def test_splitter_carriage_return_waits_for_a_possible_line_feed() -> None:
    splitter = SSESplitter()
    assert splitter.feed(b"data: a\r\n\r") == []  # the last \r may be the first half of \r\n
    assert splitter.feed(b"\n") == [b"data: a\r\n\r\n"]


def test_splitter_flush_at_end_of_stream_ends_a_trailing_carriage_return() -> None:
    splitter = SSESplitter()
    assert splitter.feed(b"data: a\r\rdata: [DONE]\r\r") == [b"data: a\r\r"]
    assert splitter.flush() == [b"data: [DONE]\r\r"]  # the stream ended: that \r was a line end
    assert splitter.pending == b""


def test_splitter_flush_leaves_an_unterminated_event_pending() -> None:
    splitter = SSESplitter()
    assert splitter.feed(b"data: a\n\ndata: cut") == [b"data: a\n\n"]
    assert splitter.flush() == []
    assert splitter.pending == b"data: cut"


def test_parse_event_fields() -> None:
    assert parse_event(b"data: hello\n\n").data == "hello"
    assert parse_event(b"data:hello\n\n").data == "hello"  # the space after the colon is optional
    assert parse_event(b"data:  two spaces\n\n").data == " two spaces"  # only one space is stripped
    assert parse_event(b"data: a\ndata: b\r\ndata: c\rdata\n\n").data == "a\nb\nc\n"  # multi-line data
    assert parse_event(b": keep-alive\n\n").data is None
    assert parse_event(b": keep-alive\n\n").event is None
    event = parse_event(b'event: error\ndata: {"x":1}\n\n')
    assert (event.event, event.data) == ("error", '{"x":1}')
    assert parse_event(b"id: 3\nretry: 10\n\n").data is None


def test_encode_data_event_round_trips() -> None:
    raw = encode_data_event('{"a":"é"}')
    assert raw == 'data: {"a":"é"}\n\n'.encode()
    assert parse_event(raw).data == '{"a":"é"}'


# ------------------------------------------------------------------------------------- interceptor


class FakeHook:
    """A ``ToolCallHook``: verdicts by tool name (default allow); records every question."""

    def __init__(self, verdicts: dict[str, ToolVerdict] | None = None, needs_arguments: set[str] | None = None):
        self.verdicts = verdicts or {}
        self.argument_tools = needs_arguments or set()
        self.decided: list[tuple[str, str, str]] = []

    def needs_arguments(self, name: str) -> bool:
        return name in self.argument_tools

    def decide(self, call: ProposedCall) -> ToolVerdict:
        self.decided.append((call.name, call.raw_arguments, call.call_id))
        return self.verdicts.get(call.name, ALLOWED)


STRIP = ToolVerdict(Verdict.STRIP, "celgate: tool {} denied by policy")
CALLS = [
    ("call_a", "get_weather", '{"location": "Paris", "unit": "celsius"}'),
    ("call_b", "shell.exec", '{"command": "rm -rf /"}'),
    ("call_c", "lookup", '{"q": "x"}'),
]


def events_of(steps: list[Any]) -> list[bytes]:
    return [step.data for step in steps]


def run(interceptor: StreamInterceptor, events: list[bytes]) -> list[bytes]:
    """The events as one read (``intercept``, as ``forward_sse`` does), then the end of the stream."""
    return intercept(interceptor, events) + interceptor.finish()


def chunks_of(events: list[bytes]) -> list[dict[str, Any]]:
    datas = [parse_event(e).data for e in events]
    return [json.loads(d) for d in datas if d is not None and d != "[DONE]"]


def assemble(events: list[bytes]) -> dict[str, Any]:
    """What an OpenAI client makes of a chat stream: content, tool calls by index, finish reason, usage."""
    content: list[str] = []
    calls: dict[int, dict[str, str]] = {}
    finish = None
    usage = None
    for chunk in chunks_of(events):
        usage = chunk.get("usage") or usage
        for choice in chunk["choices"]:
            delta = choice.get("delta") or {}
            if delta.get("content"):
                content.append(delta["content"])
            for tc in delta.get("tool_calls") or []:
                call = calls.setdefault(tc["index"], {"id": "", "name": "", "arguments": ""})
                call["id"] += tc.get("id") or ""
                call["name"] += (tc.get("function") or {}).get("name") or ""
                call["arguments"] += (tc.get("function") or {}).get("arguments") or ""
            finish = choice.get("finish_reason") or finish
    return {"content": "".join(content), "calls": calls, "finish": finish, "usage": usage}


def test_events_without_tool_calls_pass_untouched_and_at_once() -> None:
    hook = FakeHook()
    interceptor = StreamInterceptor(hook)
    events = [b": keep-alive\n\n", *events_of(text_stream(["Hel", "lo"]))]
    for raw in events:
        assert interceptor.feed(raw) == [raw]
    assert interceptor.finish() == []
    assert hook.decided == []


def test_name_only_hook_decides_once_the_name_is_complete_and_releases_at_once() -> None:
    hook = FakeHook()  # needs no arguments
    interceptor = StreamInterceptor(hook)
    events = events_of(tool_call_stream(CALLS[:1], pieces=3))
    head, first_arguments, *arguments = events[1:5]
    assert interceptor.feed(events[0]) == [events[0]]
    assert interceptor.feed(head) == []  # the name may still grow: held for one delta
    assert interceptor.feed(first_arguments) == [head, first_arguments]  # name complete: decided, released
    assert hook.decided == [("get_weather", first_arguments_of(first_arguments), "call_a")]
    for raw in arguments:
        assert interceptor.feed(raw) == [raw]  # an allowed call's deltas flow through
    assert len(hook.decided) == 1


def test_a_name_split_across_deltas_is_judged_whole() -> None:
    hook = FakeHook()
    interceptor = StreamInterceptor(hook)
    head = sse(
        chat_chunk(
            {"tool_calls": [{"index": 0, "id": "c1", "type": "function", "function": {"name": "sh", "arguments": ""}}]}
        )
    )
    rest = sse(chat_chunk({"tool_calls": [{"index": 0, "function": {"name": "ell.exec"}}]}))
    arguments = sse(chat_chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}))
    assert interceptor.feed(head) == [] and interceptor.feed(rest) == []
    interceptor.feed(arguments)
    assert hook.decided[0][0] == "shell.exec"


def first_arguments_of(raw: bytes) -> str:
    return json.loads(raw.decode()[len("data: ") :])["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]


def test_arguments_hook_holds_the_call_until_its_arguments_are_complete() -> None:
    hook = FakeHook(needs_arguments={"get_weather"})
    interceptor = StreamInterceptor(hook)
    events = events_of(tool_call_stream(CALLS[:1], pieces=3))
    role, call_events, finish = events[0], events[1:5], events[5]
    assert interceptor.feed(role) == [role]
    for raw in call_events:
        assert interceptor.feed(raw) == []  # held: the arguments are not complete yet
    assert hook.decided == []
    released = interceptor.feed(finish)  # finish_reason completes the arguments
    assert hook.decided == [("get_weather", CALLS[0][2], "call_a")]
    assert released == [*call_events, finish]  # in order, byte-identical
    assert interceptor.feed(events[6]) == [events[6]]  # usage
    assert interceptor.feed(events[7]) == [events[7]]  # [DONE]


def test_a_later_index_completes_the_previous_call() -> None:
    hook = FakeHook(needs_arguments={"get_weather", "shell.exec"})
    interceptor = StreamInterceptor(hook)
    events = events_of(tool_call_stream(CALLS[:2], pieces=2))
    out: list[bytes] = []
    for raw in events[:4]:  # role + call 0 (head + 2 argument pieces)
        out += interceptor.feed(raw)
    assert out == [events[0]]
    released = interceptor.feed(events[4])  # head of call 1
    assert hook.decided == [("get_weather", CALLS[0][2], "call_a")]
    assert released == events[1:4]  # call 0 released; call 1's head still held


@pytest.mark.parametrize("needs", [set(), {"get_weather", "shell.exec", "lookup"}])
def test_allowed_parallel_calls_are_byte_identical_and_in_order(needs: set[str]) -> None:
    events = events_of(tool_call_stream(CALLS, pieces=4))
    hook = FakeHook(needs_arguments=needs)
    assert run(StreamInterceptor(hook), events) == events
    assert [name for name, _, _ in hook.decided] == ["get_weather", "shell.exec", "lookup"]
    if needs:
        assert [args for _, args, _ in hook.decided] == [c[2] for c in CALLS]


def test_stripped_only_call_becomes_a_stop_with_the_message() -> None:
    hook = FakeHook({"shell.exec": STRIP}, needs_arguments={"shell.exec"})
    events = events_of(tool_call_stream(CALLS[1:2], pieces=3))
    out = run(StreamInterceptor(hook), events)
    result = assemble(out)
    assert result["calls"] == {}
    assert result["finish"] == "stop"
    assert result["content"] == STRIP.message
    assert result["usage"] == USAGE
    assert out[-1] == b"data: [DONE]\n\n"
    assert not any(b'tool_calls":[' in e for e in out)
    # the deny text comes before the final chunk, whose finish_reason is stop
    finals = [c for c in chunks_of(out) if c["choices"] and c["choices"][0].get("finish_reason")]
    assert [c["choices"][0]["finish_reason"] for c in finals] == ["stop"]
    assert all(c["id"] == "chatcmpl-fake" and c["model"] == "fake-model" for c in chunks_of(out))


def test_stripped_call_needing_only_its_name_is_never_sent() -> None:
    hook = FakeHook({"shell.exec": STRIP})
    out = run(StreamInterceptor(hook), events_of(tool_call_stream(CALLS[1:2])))
    assert b"shell.exec" not in b"".join(out)
    assert assemble(out)["finish"] == "stop"


def test_two_parallel_calls_one_stripped() -> None:
    hook = FakeHook({"shell.exec": STRIP}, needs_arguments={"shell.exec"})
    events = events_of(tool_call_stream(CALLS[:2], pieces=3))
    out = run(StreamInterceptor(hook), events)
    result = assemble(out)
    assert list(result["calls"].values()) == [{"id": "call_a", "name": "get_weather", "arguments": CALLS[0][2]}]
    assert result["finish"] == "tool_calls"
    assert result["content"] == ""
    assert b"shell.exec" not in b"".join(out) and b"rm -rf" not in b"".join(out)
    kept = [e for e in events if b"call_a" in e or (b'"index": 0, "function"' in e)]
    assert all(e in out for e in kept)  # the allowed call's events are forwarded as they were


def test_reject_raises() -> None:
    hook = FakeHook({"shell.exec": ToolVerdict(Verdict.ERROR, "no shells")})
    interceptor = StreamInterceptor(hook)
    with pytest.raises(ToolCallRejected) as info:
        run(interceptor, events_of(tool_call_stream(CALLS[1:2])))
    assert info.value.message == "no shells"


def test_content_is_not_delayed_while_a_call_is_held() -> None:
    hook = FakeHook(needs_arguments={"get_weather"})
    interceptor = StreamInterceptor(hook)
    head = sse(
        chat_chunk(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_a",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": ""},
                    }
                ]
            }
        )
    )
    other_choice = chat_chunk({"content": "meanwhile"})
    other_choice["choices"][0]["index"] = 1
    other = sse(other_choice)
    same_choice_content = sse(chat_chunk({"content": "thinking..."}))
    keep_alive = b": ping\n\n"
    assert interceptor.feed(head) == []
    assert interceptor.feed(other) == [other]
    assert interceptor.feed(same_choice_content) == [same_choice_content]
    assert interceptor.feed(keep_alive) == [keep_alive]
    arguments = sse(chat_chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}))
    assert interceptor.feed(arguments) == []
    finish = sse(chat_chunk({}, "tool_calls"))
    assert interceptor.feed(finish) == [head, arguments, finish]


def test_done_without_finish_chunk_releases_held_calls_first() -> None:
    hook = FakeHook(needs_arguments={"get_weather"})
    interceptor = StreamInterceptor(hook)
    events = events_of(tool_call_stream(CALLS[:1], pieces=2))
    calls = events[1:4]
    for raw in calls:
        assert interceptor.feed(raw) == []
    done = b"data: [DONE]\n\n"
    assert interceptor.feed(done) == [*calls, done]


def test_stream_end_without_done_releases_held_calls() -> None:
    hook = FakeHook(needs_arguments={"get_weather"})
    interceptor = StreamInterceptor(hook)
    events = events_of(tool_call_stream(CALLS[:1], pieces=2))[1:4]
    for raw in events:
        assert interceptor.feed(raw) == []
    assert interceptor.finish() == events


def test_several_calls_in_one_event_are_split_and_decided_each() -> None:
    heads = [
        {"index": i, "id": cid, "type": "function", "function": {"name": name, "arguments": args}}
        for i, (cid, name, args) in enumerate(CALLS[:2])
    ]
    one_event = sse(chat_chunk({"role": "assistant", "content": None, "tool_calls": heads}))
    finish = sse(chat_chunk({}, "tool_calls"))
    hook = FakeHook({"shell.exec": STRIP}, needs_arguments={"get_weather", "shell.exec"})
    out = run(StreamInterceptor(hook), [one_event, finish, b"data: [DONE]\n\n"])
    result = assemble(out)
    assert list(result["calls"].values()) == [{"id": "call_a", "name": "get_weather", "arguments": CALLS[0][2]}]
    assert result["finish"] == "tool_calls"
    assert [name for name, _, _ in hook.decided] == ["get_weather", "shell.exec"]
    assert out[-1] == b"data: [DONE]\n\n"


def test_unknown_fields_and_usage_pass_untouched_with_tool_calls() -> None:
    events = events_of(tool_call_stream(CALLS[:1]))
    odd = chat_chunk({"content": None, "x_vendor": {"a": [1, 2]}})
    odd["x_top_level"] = "keep me"
    odd_raw = sse(odd)
    events.insert(1, odd_raw)
    out = run(StreamInterceptor(FakeHook(needs_arguments={"get_weather"})), events)
    assert out == events


def test_usage_on_the_finish_chunk_survives_an_allowed_held_call() -> None:
    events = events_of(tool_call_stream(CALLS[:1]))
    finish = chat_chunk({}, "tool_calls")
    finish["usage"] = USAGE  # some servers put usage on the finish chunk
    events[5] = sse(finish)
    out = run(StreamInterceptor(FakeHook(needs_arguments={"get_weather"})), events)
    assert out == events


def test_usage_on_the_finish_chunk_survives_a_stripped_call() -> None:
    events = events_of(tool_call_stream(CALLS[1:2]))
    finish = chat_chunk({}, "tool_calls")
    finish["usage"] = USAGE
    events[5] = sse(finish)
    del events[6]  # no separate usage chunk
    out = run(StreamInterceptor(FakeHook({"shell.exec": STRIP})), events)
    result = assemble(out)
    assert result["usage"] == USAGE
    assert result["finish"] == "stop"
    assert result["calls"] == {}


# ------------------------------------------------------------------------------- filter_completion


def test_filter_completion_allowed_changes_nothing() -> None:
    body = completion(None, tool_calls=CALLS[:2])
    before = copy.deepcopy(body)
    hook = FakeHook()
    assert filter_completion(body, hook) is False
    assert body == before
    assert hook.decided == [(n, a, i) for i, n, a in CALLS[:2]]


def test_filter_completion_without_tool_calls() -> None:
    body = completion("hi")
    hook = FakeHook()
    assert filter_completion(body, hook) is False
    assert hook.decided == []


def test_filter_completion_strips_one_of_two() -> None:
    body = completion(None, tool_calls=CALLS[:2])
    assert filter_completion(body, FakeHook({"shell.exec": STRIP})) is True
    choice = body["choices"][0]
    assert [c["function"]["name"] for c in choice["message"]["tool_calls"]] == ["get_weather"]
    assert choice["finish_reason"] == "tool_calls"


def test_filter_completion_strips_the_only_call() -> None:
    body = completion(None, tool_calls=CALLS[1:2])
    assert filter_completion(body, FakeHook({"shell.exec": STRIP})) is True
    choice = body["choices"][0]
    assert "tool_calls" not in choice["message"]
    assert choice["message"]["content"] == STRIP.message
    assert choice["finish_reason"] == "stop"


def test_filter_completion_keeps_existing_content_before_the_message() -> None:
    body = completion("Let me check.", tool_calls=CALLS[1:2])
    filter_completion(body, FakeHook({"shell.exec": STRIP}))
    assert body["choices"][0]["message"]["content"] == "Let me check.\n" + STRIP.message


def test_filter_completion_reject_raises() -> None:
    body = completion(None, tool_calls=CALLS[:2])
    with pytest.raises(ToolCallRejected, match="no shells"):
        filter_completion(body, FakeHook({"shell.exec": ToolVerdict(Verdict.ERROR, "no shells")}))
