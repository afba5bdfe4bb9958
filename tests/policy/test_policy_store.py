"""PolicyStore: the first load must succeed; later reloads swap only complete sets (real files)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from celgate.policy import PolicyLoadError, PolicyStore, Principal, ReloadResult
from celgate.policy.cli import build_request

GOOD = "version: 1\nrules:\n  - {name: allow-gpt, on: request, models: ['gpt-*'], effect: allow}\n"
EDITED = "version: 1\nrules:\n  - {name: allow-claude, on: request, models: ['claude*'], effect: allow}\n"
BROKEN = "version: 1\nrules:\n  - {name: allow-claude, on: request, effect: allow, when: 'principal.team ==== 1'}\n"
ALICE = Principal("alice", {})


def allowed(store: PolicyStore, model: str) -> bool:
    return not store.current.check_request(ALICE, build_request({"model": model})).blocked


def make_store(tmp_path: Path, results: list[ReloadResult] | None = None) -> PolicyStore:
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "policy.yaml").write_text(GOOD)
    return PolicyStore(tmp_path, on_reload=None if results is None else results.append)


def test_first_load_failure_raises(tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_text(BROKEN)
    with pytest.raises(PolicyLoadError):
        PolicyStore(tmp_path)


def test_reload_good_broken_fixed(tmp_path: Path) -> None:
    results: list[ReloadResult] = []
    store = make_store(tmp_path, results)
    first = store.current
    assert allowed(store, "gpt-4o") and not allowed(store, "claude-3")

    (tmp_path / "policy.yaml").write_text(EDITED)
    result = store.reload()
    assert result.ok and result.policy is store.current and store.current.version != first.version
    assert allowed(store, "claude-3") and not allowed(store, "gpt-4o")
    edited = store.current

    (tmp_path / "policy.yaml").write_text(BROKEN)
    result = store.reload()
    assert not result.ok and result.policy is edited and store.current is edited
    assert result.error is store.last_error and store.last_error_at is not None
    assert allowed(store, "claude-3")  # the last good set keeps serving
    status = store.status()
    assert status["last_error"]["problems"] == [
        {
            "file": str(tmp_path / "policy.yaml"),
            "line": 3,
            "rule": "allow-claude",
            "message": status["last_error"]["problems"][0]["message"],
        }
    ]
    assert "Syntax error" in status["last_error"]["message"] and status["last_error"]["at"].endswith("Z")

    (tmp_path / "policy.yaml").write_text(GOOD)
    assert store.reload().ok and allowed(store, "gpt-4o")
    assert store.last_error is None and store.status()["last_error"] is None
    assert [r.ok for r in results] == [True, False, True]
    assert store.status()["reloads"] == {"ok": 2, "error": 1}


def test_status_shape(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    status = store.status()
    assert status["active"] == {
        "version": store.current.version,
        "files": ["policy.yaml"],
        "rule_count": 1,
        "loaded_at": status["active"]["loaded_at"],
        "backend": "cel-expr",
        "routes": [],
    }
    assert status["active"]["loaded_at"].endswith("Z")
    assert status["last_error"] is None and status["reloads"] == {"ok": 0, "error": 0}


def test_a_vanished_directory_keeps_the_last_good_set(tmp_path: Path) -> None:
    store = make_store(tmp_path / "policies")
    good = store.current
    (tmp_path / "policies" / "policy.yaml").unlink()
    (tmp_path / "policies").rmdir()
    result = store.reload()
    assert not result.ok and store.current is good


async def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


def replace(path: Path, text: str) -> None:
    """Write like an editor that saves atomically: one complete file, one change."""
    temp = path.with_suffix(".tmp")
    temp.write_text(text)
    temp.replace(path)


async def test_watch_edit_break_fix(tmp_path: Path) -> None:
    results: list[ReloadResult] = []
    store = make_store(tmp_path, results)
    policy_file = tmp_path / "policy.yaml"
    watcher = asyncio.create_task(store.watch(debounce_ms=100))
    try:
        await asyncio.sleep(0.3)  # let the watcher start
        (tmp_path / "notes.txt").write_text("ignored: not a policy file")
        replace(policy_file, EDITED)
        await wait_for(lambda: allowed(store, "claude-3"))
        assert not allowed(store, "gpt-4o") and results[-1].ok

        replace(policy_file, BROKEN)
        await wait_for(lambda: store.reloads_failed >= 1)
        assert not results[-1].ok and allowed(store, "claude-3")  # still the last good set

        replace(policy_file, GOOD)
        await wait_for(lambda: allowed(store, "gpt-4o"))
        assert results[-1].ok and store.last_error is None
    finally:
        watcher.cancel()
        with pytest.raises(asyncio.CancelledError):
            await watcher
