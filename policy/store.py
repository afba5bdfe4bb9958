"""``PolicyStore``: the active policy set, reloaded atomically when its files change.

A reload re-reads and recompiles the whole directory; the new set replaces
``current`` only if it loads completely. A broken edit keeps the last good set
and is kept in ``last_error`` until a later reload succeeds. Requests read
``current`` once and keep that snapshot to the end, so a swap never changes a
decision mid-request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import watchfiles

from .backends import DEFAULT_BACKEND
from .errors import PolicyLoadError, Problem
from .loader import load_policies
from .policyset import PolicySet, iso_seconds

__all__ = ["PolicyStore", "ReloadResult"]


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

    def _apply(self, loaded: PolicySet | PolicyLoadError) -> ReloadResult:
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
        return self._apply(self._try_load())

    @staticmethod
    def _is_policy_file(_change: watchfiles.Change, path: str) -> bool:
        name = Path(path).name
        return name.endswith((".yaml", ".yml")) and not name.startswith(".")

    async def watch(self, *, debounce_ms: int = 1600) -> None:
        """Reload on every batch of policy-file changes until cancelled; compiles in a worker thread."""
        async for _changes in watchfiles.awatch(
            self.directory, watch_filter=self._is_policy_file, debounce=debounce_ms, recursive=False
        ):
            self._apply(await asyncio.to_thread(self._try_load))

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
