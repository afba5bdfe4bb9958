"""celgate's HTTP side: the aiohttp proxy, its routes, upstream pool, streams and CLI."""

from __future__ import annotations

from importlib.metadata import version

__version__ = version("celgate")  # the one version source: pyproject.toml

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
