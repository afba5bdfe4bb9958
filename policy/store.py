"""``PolicyStore``: the active policy set, reloaded atomically when its files change.

A reload re-reads and recompiles the whole directory; the new set replaces
``current`` only if it loads completely. A broken edit keeps the last good set
and is kept in ``last_error`` until a later reload succeeds. Requests read
``current`` once and keep that snapshot to the end, so a swap never changes a
decision mid-request.

``watch`` follows what the policy files resolve to, not just their names: a
Kubernetes ConfigMap volume updates by swapping the ``..data`` symlink the
visible ``policy.yaml -> ..data/policy.yaml`` links go through, and a
directory can be deleted and recreated under a running watch.
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import watchfiles

from .backends import DEFAULT_BACKEND
from .errors import PolicyLoadError, Problem
from .loader import is_policy_name, load_policies
from .policyset import PolicySet, iso_seconds

__all__ = ["PolicyStore", "ReloadResult"]


_MAX_LINKS = 40  # Linux's limit too: beyond it, resolution fails with ELOOP


@dataclass(frozen=True)
class _Entry:
    """One policy-named entry as a reload would read it: a change in any field means it must be read again."""

    name: str
    links: tuple[tuple[str, str], ...]  # every symlink met resolving it (path, target): ``policy.yaml``, ``..data``
    file: tuple[int, int, int, int] | None  # device, inode, size, mtime of the file reached; None when dangling


# The directory's policy entries by name, or None when it cannot be listed (e.g. it is missing).
_Snapshot = tuple[_Entry, ...] | None


def _links(path: Path) -> tuple[tuple[str, str], ...]:
    """The symlinks met resolving the absolute ``path``, component by component like the kernel does."""
    links: list[tuple[str, str]] = []
    resolved = Path(path.anchor)
    pending = list(reversed(path.parts[1:]))
    while pending and len(links) < _MAX_LINKS:
        part = pending.pop()
        if part == "..":
            resolved = resolved.parent
            continue
        candidate = resolved / part
        try:
            target = os.readlink(candidate)
        except OSError:  # not a symlink (or missing): resolution goes on through it as a plain name
            resolved = candidate
            continue
        links.append((str(candidate), target))
        target_path = Path(target)
        if target_path.is_absolute():
            resolved = Path(target_path.anchor)
        pending.extend(reversed(target_path.parts[1:] if target_path.is_absolute() else target_path.parts))
    return tuple(links)


def _entry(path: Path) -> _Entry:
    try:
        info = os.stat(path)
        file: tuple[int, int, int, int] | None = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
    except OSError:
        file = None
    return _Entry(path.name, _links(path), file)


def _snapshot(directory: Path) -> _Snapshot:
    """A few ``stat`` calls' worth of what a reload would read; cheap enough to compare on every poll."""
    try:
        names = sorted(entry.name for entry in os.scandir(directory) if is_policy_name(entry.name))
    except OSError:  # missing, not a directory, or unreadable: the reload reports which
        return None
    base = Path(os.path.abspath(directory))
    return tuple(_entry(base / name) for name in names)


def _identity(directory: Path) -> tuple[int, int] | None:
    """The directory's (device, inode): a recreated directory differs, and its predecessor's watch is dead."""
    try:
        info = os.stat(directory)
    except OSError:
        return None
    return (info.st_dev, info.st_ino) if stat.S_ISDIR(info.st_mode) else None


@dataclass(frozen=True)
class ReloadResult:
    """``policy`` is the set active after the reload: the new one if ``ok``, else the one kept."""

    ok: bool
    policy: PolicySet
    error: PolicyLoadError | None


class PolicyStore:
    """Holds ``current`` (swapped, never mutated) and reload bookkeeping for ``/admin/policies``.

    ``on_reload`` is called after every reload attempt, on the caller's thread
    (the event loop's, under ``watch``); it must not raise.
    """

    def __init__(
        self,
        directory: Path,
        backend: str = DEFAULT_BACKEND,
        on_reload: Callable[[ReloadResult], None] | None = None,
        *,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.backend = backend
        self._on_reload = on_reload
        self._environ = environ
        self._seen = _snapshot(self.directory)  # what the active set (or the last failed reload) was read from
        self.current: PolicySet = self._load()
        self.last_error: PolicyLoadError | None = None
        self.last_error_at: float | None = None
        self.reloads_ok = 0
        self.reloads_failed = 0

    def _load(self) -> PolicySet:
        return load_policies(self.directory, self.backend, environ=self._environ)

    def _try_load(self) -> PolicySet | PolicyLoadError:
        try:
            return self._load()
        except PolicyLoadError as exc:
            return exc
        except OSError as exc:  # the directory itself vanished or became unreadable
            return PolicyLoadError([Problem(str(self.directory), None, None, f"cannot read: {exc}")])

    def _read(self) -> tuple[_Snapshot, PolicySet | PolicyLoadError]:
        """Snapshot first, then load: a change made during the load differs from the snapshot and is read again."""
        seen = _snapshot(self.directory)
        return seen, self._try_load()

    def _apply(self, seen: _Snapshot, loaded: PolicySet | PolicyLoadError) -> ReloadResult:
        self._seen = seen
        if isinstance(loaded, PolicySet):
            self.current = loaded
            self.last_error = self.last_error_at = None
            self.reloads_ok += 1
            result = ReloadResult(True, loaded, None)
        else:
            self.last_error = loaded
            self.last_error_at = datetime.now(UTC).timestamp()
            self.reloads_failed += 1
            result = ReloadResult(False, self.current, loaded)
        if self._on_reload is not None:
            self._on_reload(result)
        return result

    def reload(self) -> ReloadResult:
        """Re-read and compile the whole set now; swap only if it loads completely."""
        return self._apply(*self._read())

    def _is_relevant(self, _change: watchfiles.Change, path: str) -> bool:
        """A policy-named entry, or a symlink the policy files resolve through (``..data``); never ``..data_tmp``."""
        name = Path(path).name
        return is_policy_name(name) or any(Path(link).name == name for e in self._seen or () for link, _ in e.links)

    async def _reload_if_changed(self) -> None:
        seen = await asyncio.to_thread(_snapshot, self.directory)
        if seen != self._seen:
            self._apply(*await asyncio.to_thread(self._read))

    async def watch(self, *, debounce_ms: int = 1600, poll_ms: int = 1000) -> None:
        """Reload on every batch of relevant changes until cancelled; compiles in a worker thread.

        Events come from the directory; every ``poll_ms`` without one, a cheap
        snapshot (names, symlink chains, file identities) is compared with the
        last one read. That catches what the directory's events cannot show:
        symlink targets outside it, and the directory vanishing or being
        recreated (the old watch is dead, so watching restarts on the new
        one). While the directory is missing, the last good set keeps serving,
        the failed reload is reported once, and its return is polled for.
        """
        while True:
            await self._reload_if_changed()
            identity = _identity(self.directory)
            if identity is None:
                await asyncio.sleep(poll_ms / 1000)
                continue
            try:
                async for changes in watchfiles.awatch(
                    self.directory,
                    watch_filter=self._is_relevant,
                    debounce=debounce_ms,
                    recursive=False,
                    rust_timeout=poll_ms,
                    yield_on_timeout=True,
                ):
                    if changes:
                        self._apply(*await asyncio.to_thread(self._read))
                    else:
                        await self._reload_if_changed()
                    if _identity(self.directory) != identity:
                        break
            except FileNotFoundError:  # gone between the check and the watch: wait for it like any absence
                await asyncio.sleep(poll_ms / 1000)

    def status(self) -> dict[str, Any]:
        """JSON for ``GET /admin/policies``: the active set (with its routes), the last failed reload, reload counts."""
        error = None
        if self.last_error is not None and self.last_error_at is not None:
            error = {
                "message": str(self.last_error),
                "problems": [p.as_dict() for p in self.last_error.problems],
                "at": iso_seconds(self.last_error_at),
            }
        return {
            "active": self.current.summary(),
            "last_error": error,
            "reloads": {"ok": self.reloads_ok, "error": self.reloads_failed},
        }
