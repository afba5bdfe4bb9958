"""Every Prometheus collector celgate exports, defined once, per app.

Each app gets its own ``CollectorRegistry`` (two apps in one process, as in
tests, never collide). ``/metrics`` renders it in the text format and
``/admin/metrics`` renders the very same collected samples as JSON, so the
two can never disagree.
"""

from __future__ import annotations

import math
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_EVAL_BUCKETS = (1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 1e-3, 1e-2)


class Metrics:
    """The ``celgate_*`` collectors of one app."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "celgate_requests", "Requests by route, model and status.", ["route", "model", "status"], registry=r
        )
        self.request_duration = Histogram(
            "celgate_request_duration_seconds", "Whole request time in celgate.", ["route"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.upstream_duration = Histogram(
            "celgate_upstream_duration_seconds", "Upstream time to response headers.", ["route"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.stream_ttfb = Histogram(
            "celgate_stream_ttfb_seconds", "Time to the first streamed byte sent to the client.",
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.active_streams = Gauge("celgate_active_streams", "Streams being forwarded now.", registry=r)
        self.upstream_errors = Counter(
            "celgate_upstream_errors", "Upstream faults by kind.", ["kind"], registry=r
        )
        self.tool_calls = Counter(
            "celgate_tool_calls", "Tool calls seen, by tool and decision.", ["tool", "decision"], registry=r
        )
        self.policy_decisions = Counter(
            "celgate_policy_decisions", "Policy decisions.", ["point", "effect", "rule"], registry=r
        )
        self.policy_eval = Histogram(
            "celgate_policy_eval_seconds", "Time to reach one policy decision.", buckets=_EVAL_BUCKETS, registry=r
        )
        self.policy_eval_errors = Counter(
            "celgate_policy_eval_errors", "CEL runtime errors while evaluating rules.", ["rule"], registry=r
        )
        self.policy_reloads = Counter(
            "celgate_policy_reloads", "Policy reloads by result.", ["result"], registry=r
        )
        self.policy_info = Gauge(
            "celgate_policy_info", "The active policy set (value 1).", ["version"], registry=r
        )
        self.tool_duration = Histogram(
            "celgate_tool_duration_seconds", "Drop-in agent tool execution time.", ["tool"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.tool_failures = Counter(
            "celgate_tool_failures", "Drop-in agent tool executions that raised.", ["tool"], registry=r
        )
        self.agent_load_failures = Counter(
            "celgate_agent_load_failures", "Drop-in agents that failed to load.", ["agent", "kind"], registry=r
        )

    def set_policy_version(self, version: str) -> None:
        self.policy_info.clear()
        self.policy_info.labels(version).set(1)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def as_json(self) -> dict[str, Any]:
        """``{metric: {"type", "help", "samples": [{"name", "labels", "value"}]}}`` from the same collect()."""
        families: dict[str, Any] = {}
        for family in self.registry.collect():
            families[family.name] = {
                "type": family.type,
                "help": family.documentation,
                "samples": [
                    {"name": s.name, "labels": dict(s.labels), "value": _json_number(s.value)}
                    for s in family.samples
                ],
            }
        return families


def _json_number(value: float) -> float | str:
    """JSON has no infinities or NaN: spell them as Prometheus does."""
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    return value
