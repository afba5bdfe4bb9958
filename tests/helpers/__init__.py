"""Test helpers: scripted upstreams (HTTP and raw-socket) and a running celgate."""

from .harness import ALLOW_REQUESTS, REPO, Celgate, assert_openai_error, free_port, write_policy

__all__ = ["ALLOW_REQUESTS", "REPO", "Celgate", "assert_openai_error", "free_port", "write_policy"]
