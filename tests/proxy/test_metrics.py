"""The lock-free request-path metrics expose exactly what prometheus-client's own collectors would."""

from __future__ import annotations

import re

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from celgate.proxy.metrics import Metrics

_OBSERVED = (0.0001, 0.0005, 0.0007, 0.003, 0.3, 2.5, 500.0)  # on a bound, between bounds, past the last


def _without_created(exposition: bytes) -> str:
    """The exposition minus ``_created`` values (wall-clock times of series creation)."""
    return re.sub(r"(_created\{?[^ ]*) [0-9.e+]+", r"\1 T", exposition.decode())


def _reference(buckets: tuple[float, ...]) -> bytes:
    """The same samples recorded through prometheus-client's own collectors."""
    registry = CollectorRegistry()
    requests = Counter("celgate_requests", "Requests by route, model and status.", ["route", "model", "status"],
                       registry=registry)  # fmt: skip
    duration = Histogram("celgate_request_duration_seconds", "Whole request time in celgate.", ["route"],
                         buckets=buckets, registry=registry)  # fmt: skip
    ttfb = Histogram("celgate_stream_ttfb_seconds", "Time to the first streamed byte sent to the client.",
                     buckets=buckets, registry=registry)  # fmt: skip
    streams = Gauge("celgate_active_streams", "Streams being forwarded now.", registry=registry)
    _record(requests, duration, ttfb, streams)
    return generate_latest(registry)


def _record(requests: object, duration: object, ttfb: object, streams: object) -> None:
    requests.labels("chat", "gpt-4o", "200").inc()  # type: ignore[attr-defined]
    requests.labels("chat", "gpt-4o", "200").inc()  # type: ignore[attr-defined]
    requests.labels("responses", "o3", "403").inc()  # type: ignore[attr-defined]
    for seconds in _OBSERVED:
        duration.labels("chat").observe(seconds)  # type: ignore[attr-defined]
        ttfb.observe(seconds)  # type: ignore[attr-defined]
    streams.inc()  # type: ignore[attr-defined]
    streams.inc()  # type: ignore[attr-defined]
    streams.dec()  # type: ignore[attr-defined]


def _families(exposition: str, names: tuple[str, ...]) -> list[str]:
    """The lines (samples, HELP and TYPE) of the families ``names``."""
    return [
        line
        for line in exposition.splitlines()
        if line.removeprefix("# HELP ").removeprefix("# TYPE ").startswith(names)
    ]


def test_loop_metrics_expose_what_prometheus_client_would() -> None:
    metrics = Metrics()
    _record(metrics.requests, metrics.request_duration, metrics.stream_ttfb, metrics.active_streams)
    names = ("celgate_requests", "celgate_request_duration_seconds", "celgate_stream_ttfb_seconds",
             "celgate_active_streams")  # fmt: skip
    ours = _families(_without_created(metrics.exposition()), names)
    buckets = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
    theirs = _families(_without_created(_reference(buckets)), names)
    assert ours == theirs
    assert 'celgate_request_duration_seconds_bucket{le="0.0005",route="chat"} 2.0' in ours  # 0.0005 is le its bound
    assert 'celgate_stream_ttfb_seconds_bucket{le="+Inf"} 7.0' in ours


@pytest.mark.parametrize("workers", [False, True])
def test_metrics_record_the_same_whether_or_not_under_workers(workers: bool, tmp_path: object) -> None:
    metrics = Metrics(tmp_path if workers else None)  # type: ignore[arg-type]
    metrics.policy_eval.observe(3e-6)
    metrics.policy_decisions.labels("request", "allow", "r").inc()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value for f in metrics.registry.collect() for s in f.samples
    }
    assert samples[("celgate_policy_eval_seconds_count", ())] == 1
    assert samples[("celgate_policy_eval_seconds_bucket", (("le", "5e-06"),))] == 1
    assert samples[("celgate_policy_eval_seconds_bucket", (("le", "2.5e-06"),))] == 0
    assert samples[("celgate_policy_decisions_total", (("effect", "allow"), ("point", "request"), ("rule", "r")))] == 1
