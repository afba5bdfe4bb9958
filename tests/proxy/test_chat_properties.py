"""Properties of the chat interceptor over re-chunked and mutated streams (hypothesis)."""

from __future__ import annotations

import itertools
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from celgate.proxy.chat_calls import ChatStreamInterceptor
from celgate.proxy.sse import SSESplitter
from celgate.proxy.strict import UnreadableUpstream, first_mark, may_hold_calls, parse_event_strict
from celgate.proxy.toolcalls import ALLOWED, ProposedCall, ToolCallRejected, ToolVerdict, Verdict, intercept
from tests.helpers.fakeupstream import chat_chunk, sse, text_stream, tool_call_stream

CALLS = [("c1", "get_weather", '{"city": "Paris"}'), ("c2", "shell.exec", '{"cmd": "rm"}'), ("c3", "lookup", "{}")]


class Hook:
    def __init__(self, *, needs_arguments: bool) -> None:
        self.arguments = needs_arguments

    def needs_arguments(self, name: str) -> bool:
        return self.arguments

    def decide(self, call: ProposedCall) -> ToolVerdict:
        return ToolVerdict(Verdict.STRIP, "no") if call.name == "shell.exec" else ALLOWED


def stream() -> bytes:
    steps = text_stream(["Let", " me", " check"], done=False)[:-2] + tool_call_stream(CALLS, pieces=4)
    return b"".join(step.data for step in steps)


def run(data: bytes, cuts: list[int], needs_arguments: bool) -> bytes:
    points = sorted({0, *(c for c in cuts if c < len(data)), len(data)})
    splitter, interceptor = SSESplitter(), ChatStreamInterceptor(Hook(needs_arguments=needs_arguments))
    out = [p for a, b in itertools.pairwise(points) for p in intercept(interceptor, splitter.feed(data[a:b]))]
    out += intercept(interceptor, splitter.flush())
    return b"".join(out + interceptor.finish())


@settings(max_examples=80, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=6000), max_size=15), st.booleans())
def test_any_rechunking_gives_byte_identical_output(cuts: list[int], needs_arguments: bool) -> None:
    data = stream()
    whole = run(data, [], needs_arguments)
    assert run(data, cuts, needs_arguments) == whole
    assert b"shell.exec" not in whole and b"lookup" in whole


def delivered(out: bytes) -> set[str]:
    """Tool names a client assembles (concatenating name fragments per choice and index, as the SDKs do)."""
    names: dict[tuple[Any, Any], str] = {}
    for frame in out.split(b"\n\n"):
        data = b"\n".join(line[5:].lstrip() for line in frame.splitlines() if line.startswith(b"data:"))
        try:
            chunk = json.loads(data)
        except ValueError:
            continue
        for choice in chunk.get("choices") or [] if isinstance(chunk, dict) else []:
            delta = choice.get("delta") if isinstance(choice, dict) else None
            for part in (delta or {}).get("tool_calls") or [] if isinstance(delta, dict) else []:
                if isinstance(part, dict):
                    key = (choice.get("index"), part.get("index"))
                    function = part.get("function") if isinstance(part.get("function"), dict) else {}
                    names[key] = names.get(key, "") + str(function.get("name") or "")
    return set(names.values())


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.data())
def test_random_mutations_never_deliver_a_denied_call(data: st.DataObject) -> None:
    raw = bytearray(stream())
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        position = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
        action = data.draw(st.sampled_from(["flip", "delete", "duplicate", "rename", "reindex"]))
        if action == "flip":
            raw[position] = data.draw(st.integers(min_value=0, max_value=255))
        elif action == "delete":
            del raw[position : position + data.draw(st.integers(min_value=1, max_value=40))]
        elif action == "duplicate":
            raw[position:position] = raw[position : position + data.draw(st.integers(min_value=1, max_value=300))]
        elif action == "rename":
            raw[:] = raw.replace(b'"lookup"', b'"shell.exec"', 1)
        else:
            raw[:] = raw.replace(b'"index": 2', b'"index": 1', 1)
    try:
        out = run(bytes(raw), [], data.draw(st.booleans()))
    except (UnreadableUpstream, ToolCallRejected):
        return
    assert "shell.exec" not in delivered(out)


def test_an_unchanged_stream_passes_byte_identical() -> None:
    data = b"".join(s.data for s in tool_call_stream([CALLS[0], CALLS[2]]))
    assert run(data, [], False) == data
    finish = sse(chat_chunk({}, "stop"))
    assert run(finish, [], True) == finish


_SSE_TEXT = st.text(alphabet=st.sampled_from(' :ab\r\n\u00e9{}"data'), max_size=12)


@given(_SSE_TEXT, st.one_of(st.none(), _SSE_TEXT))
def test_a_common_event_shape_reads_as_the_general_parser_reads_it(value: str, name: str | None) -> None:
    """``parse_event_strict``'s shortcut for ``data: D`` and ``event: E`` + ``data: D`` gives what the
    line-by-line reading gives (a comment line in front forces that reading)."""
    raw = (f"data: {value}\n\n" if name is None else f"event: {name}\ndata: {value}\n\n").encode()
    try:
        general = parse_event_strict(b": comment\n" + raw)
    except UnreadableUpstream:
        general = None
    try:
        shortcut = parse_event_strict(raw)
    except UnreadableUpstream:
        shortcut = None
    assert shortcut == general


_MARKS = (b'"tool_calls"', b'"function_call"', b"[DONE]")
_MARK_PIECES = [*_MARKS, b"\\u", b"\\", b"u", b'"', b"tool_calls", b"[DONE", b"ab"]
_MARKED_TEXT = st.lists(st.sampled_from(_MARK_PIECES), max_size=12)


@given(_MARKED_TEXT)
def test_first_mark_is_the_first_of_every_mark(pieces: list[bytes]) -> None:
    """``first_mark``'s bounded searches find the earliest of the marks and of ``\\u``, as full searches would."""
    data = b"".join(pieces)
    found = [at for at in (data.find(mark) for mark in (*_MARKS, b"\\u")) if at >= 0]
    assert first_mark(data, _MARKS) == (min(found) if found else -1)


@given(_MARKED_TEXT)
def test_may_hold_calls_is_false_only_without_any_key_or_escape(pieces: list[bytes]) -> None:
    data = b"".join(pieces)
    assert may_hold_calls(data, _MARKS) == any(mark in data for mark in (*_MARKS, b"\\u"))
