"""celgate's HTTP side: the aiohttp proxy, its routes, upstream pool, streams and CLI."""

from __future__ import annotations

# celgate's one version source: pyproject.toml reads it at build time. Asking importlib.metadata for it instead
# would import that (zipfile, csv, a scan of the installed distributions) at every start: ~1 MiB of RSS.
__version__ = "0.1.0"

__all__ = ["Settings", "__version__", "create_app", "load_settings"]


def __getattr__(name: str):  # type: ignore[no-untyped-def]
    """Import the app lazily so ``celgate --version`` and ``policy`` commands start fast."""
    if name == "create_app":
        from .app import create_app

        return create_app
    if name in ("Settings", "load_settings"):
        from . import settings

        return getattr(settings, name)
    raise AttributeError(name)
