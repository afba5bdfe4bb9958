"""Test helpers: scripted upstreams (HTTP and raw-socket) and a running celgate."""

from .harness import REPO, Celgate, assert_openai_error, free_port, write_policy

__all__ = ["REPO", "Celgate", "assert_openai_error", "free_port", "write_policy"]
