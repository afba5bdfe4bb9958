"""Test helpers: scripted upstreams (HTTP and raw-socket) and a running celgate."""

from .harness import (
    ALLOW_REQUESTS,
    REPO,
    Celgate,
    assert_openai_error,
    free_port,
    replace,
    write_policy,
    write_yaml,
)

__all__ = [
    "ALLOW_REQUESTS",
    "REPO",
    "Celgate",
    "assert_openai_error",
    "free_port",
    "replace",
    "write_policy",
    "write_yaml",
]
