"""The ``celgate`` command: ``serve``, ``policy check|test|explain``, ``--version``."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from . import __version__

__all__ = ["main"]

log = logging.getLogger("celgate")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "policy":
        from celgate.policy.cli import main as policy_main

        return policy_main(argv[1:])
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    parser.print_help()
    return 2


def _parser() -> argparse.ArgumentParser:
    from .settings import add_serve_arguments

    parser = argparse.ArgumentParser(
        prog="celgate",
        description="Sidecar proxy for OpenAI-compatible APIs with CEL/glob policy and drop-in agents.",
    )
    parser.add_argument("--version", action="version", version=f"celgate {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="{serve,policy}")
    serve = commands.add_parser("serve", help="run the proxy", description="Run the celgate proxy.")
    add_serve_arguments(serve)
    commands.add_parser("policy", help="check | test | explain policies (celgate policy -h)", add_help=False)
    return parser


def _serve(args: argparse.Namespace) -> int:
    from celgate.policy import PolicyLoadError

    from .accesslog import configure_logging
    from .app import create_app
    from .redaction import redact
    from .server import serve
    from .settings import SettingsError, load_settings
    from .workers import supervise

    flags = {k: v for k, v in vars(args).items() if k not in ("command", "config")}
    try:
        settings = load_settings(flags, config_file=args.config)
        configure_logging(settings.log_level, settings.log_format)
        app = create_app(settings)
    except SettingsError as exc:
        print(redact(f"celgate: {exc}"), file=sys.stderr)  # messages quote the values given
        return 2
    except PolicyLoadError as exc:
        print(redact(f"celgate: the policy does not load; not starting:\n{exc}"), file=sys.stderr)
        return 1
    banner = f"celgate {__version__} (upstream {settings.upstream})"
    try:
        if settings.workers > 1:
            return supervise(settings, banner)  # the app above only proved the settings and policy load
        serve(app, settings.host, settings.port, banner=banner, head_timeout=settings.client_timeout)
    except OSError as exc:
        print(f"celgate: cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    return 0
