"""PolicyStore: the first load must succeed; later reloads swap only complete sets (real files).

The ConfigMap tests lay files out exactly as the kubelet's atomic writer does,
and watch with a 100 ms debounce (and a short poll where the test needs it).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import watchfiles

from celgate.policy import PolicyLoadError, PolicyStore, Principal, ReloadResult
from celgate.policy.cli import build_request
from tests.helpers import replace
from tests.helpers.observe import eventually

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


@pytest.mark.parametrize(
    "edit",
    [
        "version: 1\nrules:\n  - {name: a, on: request, effect: allow, wen: 'false'}\n",  # a typo of `when`
        "version: 1\nrules:\n  - {name: a, on: request, effect: allow, when: 'tool.name == \"x\"'}\n",
        'version: 1\nrules:\n  - {name: a, on: request, effect: allow, when: \'lowerAscii("A") == "a"\'}\n',
        "version: 1\nrules:\n  - {name: a, on: request, effect: allow, mode: dry-run}\n",
        None,  # every policy file removed
    ],
)
def test_an_edit_that_parses_but_does_not_lint_keeps_the_last_good_set(tmp_path: Path, edit: str | None) -> None:
    store = make_store(tmp_path)
    good = store.current
    if edit is None:
        (tmp_path / "policy.yaml").unlink()
    else:
        (tmp_path / "policy.yaml").write_text(edit)
    assert not store.reload().ok and store.current is good and allowed(store, "gpt-4o")


def test_a_vanished_directory_keeps_the_last_good_set(tmp_path: Path) -> None:
    store = make_store(tmp_path / "policies")
    good = store.current
    (tmp_path / "policies" / "policy.yaml").unlink()
    (tmp_path / "policies").rmdir()
    result = store.reload()
    assert not result.ok and store.current is good


async def test_watch_edit_break_fix(tmp_path: Path) -> None:
    results: list[ReloadResult] = []
    store = make_store(tmp_path, results)
    policy_file = tmp_path / "policy.yaml"
    watcher = asyncio.create_task(store.watch(debounce_ms=100))
    try:
        await asyncio.sleep(0.3)  # let the watcher start
        (tmp_path / "notes.txt").write_text("ignored: not a policy file")
        replace(policy_file, EDITED)
        await eventually(lambda: allowed(store, "claude-3"))
        assert not allowed(store, "gpt-4o") and results[-1].ok

        replace(policy_file, BROKEN)
        await eventually(lambda: store.reloads_failed >= 1)
        assert not results[-1].ok and allowed(store, "claude-3")  # still the last good set

        replace(policy_file, GOOD)
        await eventually(lambda: allowed(store, "gpt-4o"))
        assert results[-1].ok and store.last_error is None
    finally:
        watcher.cancel()
        with pytest.raises(asyncio.CancelledError):
            await watcher


# --------------------------------------------------------------------------- Kubernetes ConfigMap volumes

_STAMPS = itertools.count(123456789)


class ConfigMapVolume:
    """A ConfigMap volume written the way the kubelet's ``AtomicWriter`` writes one.

    Each update writes the files into a new ``..<timestamp>`` directory, points
    a ``..data_tmp`` symlink at it and renames that over ``..data``; the visible
    names are symlinks ``<name> -> ..data/<name>``, created once; the previous
    timestamp directory is removed last.
    """

    def __init__(self, directory: Path, files: dict[str, str]) -> None:
        self.directory = directory
        directory.mkdir(exist_ok=True)
        self.update(files)

    def update(self, files: dict[str, str]) -> None:
        data = self.directory / "..data"
        old = os.readlink(data) if data.is_symlink() else None
        stamp = self.directory / f"..2026_12_02_10_00_00.{next(_STAMPS)}"
        stamp.mkdir()
        for name, text in files.items():
            (stamp / name).write_text(text)
        os.symlink(stamp.name, self.directory / "..data_tmp")
        os.rename(self.directory / "..data_tmp", data)
        for name in files:
            if not (self.directory / name).is_symlink():
                os.symlink(f"..data/{name}", self.directory / name)
        if old is not None:
            shutil.rmtree(self.directory / old)


@pytest.fixture
async def watching(request: pytest.FixtureRequest) -> AsyncIterator[Callable[..., None]]:
    """Start ``store.watch(debounce_ms=100, ...)`` as a task; cancelled (and awaited) after the test."""
    tasks: list[asyncio.Task[None]] = []

    def start(store: PolicyStore, **kwargs: int) -> None:
        tasks.append(asyncio.create_task(store.watch(debounce_ms=100, **kwargs)))

    yield start
    for task in tasks:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def test_configmap_files_are_read_through_their_symlinks(tmp_path: Path) -> None:
    volume = ConfigMapVolume(tmp_path / "cm", {"policy.yaml": GOOD, "extra.yml": EDITED.replace("claude", "o1")})
    store = PolicyStore(volume.directory)
    assert store.current.files == ("extra.yml", "policy.yaml")  # never ..data nor ..<timestamp>
    assert allowed(store, "gpt-4o") and allowed(store, "o1-mini")


def test_a_dangling_policy_symlink_fails_the_reload(tmp_path: Path) -> None:
    volume = ConfigMapVolume(tmp_path / "cm", {"policy.yaml": GOOD})
    store = PolicyStore(volume.directory)
    good = store.current
    os.symlink("..data/deny.yaml", volume.directory / "deny.yaml")  # its file never arrived
    result = store.reload()
    assert not result.ok and store.current is good
    [problem] = store.status()["last_error"]["problems"]
    assert problem["file"] == str(volume.directory / "deny.yaml")
    assert problem["message"].startswith("cannot read: No such file or directory (symlink to ")


async def test_watch_follows_configmap_updates(tmp_path: Path, watching: Callable[..., None]) -> None:
    """Only ``..data`` changes on an update; the poll is too slow to matter, so its event alone must reload."""
    results: list[ReloadResult] = []
    volume = ConfigMapVolume(tmp_path / "cm", {"policy.yaml": GOOD})
    store = PolicyStore(volume.directory, on_reload=results.append)
    watching(store, poll_ms=60_000)
    await asyncio.sleep(0.3)  # let the watcher start

    volume.update({"policy.yaml": EDITED})
    await eventually(lambda: allowed(store, "claude-3"), timeout=5)
    assert results[-1].ok and not allowed(store, "gpt-4o") and store.current.files == ("policy.yaml",)

    volume.update({"policy.yaml": BROKEN})
    await eventually(lambda: store.reloads_failed >= 1, timeout=5)
    assert not results[-1].ok and allowed(store, "claude-3")  # the last good set keeps serving
    [problem] = store.status()["last_error"]["problems"]
    assert problem["file"] == str(volume.directory / "policy.yaml") and problem["rule"] == "allow-claude"

    volume.update({"policy.yaml": GOOD})
    await eventually(lambda: allowed(store, "gpt-4o"), timeout=5)
    assert results[-1].ok and store.status()["last_error"] is None


async def test_watch_follows_a_symlink_target_outside_the_directory(
    tmp_path: Path, watching: Callable[..., None]
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "policy.yaml").write_text(GOOD)
    (tmp_path / "cm").mkdir()
    os.symlink("../shared/policy.yaml", tmp_path / "cm" / "policy.yaml")
    store = PolicyStore(tmp_path / "cm")
    watching(store, poll_ms=100)
    await asyncio.sleep(0.3)

    replace(shared / "policy.yaml", EDITED)  # no event in cm/: the poll's snapshot sees the new file
    await eventually(lambda: allowed(store, "claude-3"), timeout=5)


class AwatchCalls:
    """``watchfiles.awatch``, counting how often a watch is started."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        self._awatch = watchfiles.awatch
        monkeypatch.setattr(watchfiles, "awatch", self)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.count += 1
        return self._awatch(*args, **kwargs)


async def test_watch_survives_deleting_and_recreating_the_directory(
    tmp_path: Path, watching: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> None:
    results: list[ReloadResult] = []
    awatch = AwatchCalls(monkeypatch)
    directory = tmp_path / "policies"
    store = make_store(directory, results)
    good = store.current
    watching(store, poll_ms=100)
    await asyncio.sleep(0.3)

    shutil.rmtree(directory)
    await eventually(lambda: store.reloads_failed >= 1, timeout=5)
    assert not results[-1].ok and results[-1].policy is good and store.current is good
    assert store.status()["last_error"]["problems"][0]["message"] == "policy directory not found"
    await asyncio.sleep(0.5)  # several polls: no reload, no watch started while it is gone
    assert store.reloads_failed == 1 and awatch.count == 1 and allowed(store, "gpt-4o")

    directory.mkdir()
    replace(directory / "policy.yaml", EDITED)
    await eventually(lambda: allowed(store, "claude-3"), timeout=5)
    assert results[-1].ok and store.last_error is None and awatch.count == 2  # watching the new directory

    replace(directory / "policy.yaml", GOOD)
    await eventually(lambda: allowed(store, "gpt-4o"), timeout=5)


async def test_watch_follows_a_directory_replaced_in_one_step(
    tmp_path: Path, watching: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No moment without a directory: the new inode alone shows the old watch is dead."""
    awatch = AwatchCalls(monkeypatch)
    store = make_store(tmp_path / "policies")
    watching(store, poll_ms=100)
    await asyncio.sleep(0.3)

    (tmp_path / "next").mkdir()
    (tmp_path / "next" / "policy.yaml").write_text(EDITED)
    (tmp_path / "policies").rename(tmp_path / "old")
    (tmp_path / "next").rename(tmp_path / "policies")
    await eventually(lambda: allowed(store, "claude-3") and awatch.count == 2, timeout=5)

    replace(tmp_path / "policies" / "policy.yaml", GOOD)
    await eventually(lambda: allowed(store, "gpt-4o"), timeout=5)
    assert store.reloads_failed == 0
