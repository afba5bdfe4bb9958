"""Every Prometheus collector celgate exports, defined once, per app.

Each app gets its own ``CollectorRegistry`` (two apps in one process, as in
tests, never collide). ``/metrics`` renders it in the text format and
``/admin/metrics`` renders the very same collected samples as JSON, so the
two can never disagree.

Label values fed by clients and models (model, tool) are bounded in size and
in number: past ``_MAX_DISTINCT`` values of one label, new ones count as
``other``, so a client sending random model names cannot grow the registry
(and every scrape) without end. Every label value is redacted once, when its
series is made: a key sent as a model name never becomes a label.

The request path's counters and histograms (requests, durations, decisions,
tool calls) are ``_LoopMetric`` collectors in one process: recorded without
a lock, since only the event loop's thread records them (prometheus-client
takes a lock per sample: ~0.4 µs a count, ~0.8 µs an observation).

Under ``--workers N`` each worker records into prometheus-client's
multiprocess files (the supervisor sets ``PROMETHEUS_MULTIPROC_DIR`` before a
worker starts), and every scrape reads all workers' files: counters and
histograms are summed, ``celgate_active_streams`` is summed over live
workers, ``celgate_policy_info`` shows each version some live worker holds
(a version no worker holds any more reads 0). The supervisor's count of
replaced workers is read from ``RESTARTS_FILE`` in the same directory.
"""

from __future__ import annotations

import math
import time
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from .redaction import redact

__all__ = ["CONTENT_TYPE_LATEST", "OTHER", "RESTARTS_FILE", "Metrics"]

_MAX_MEMOIZED = 10_000  # children remembered per family; label values come from clients
_MAX_LABEL = 64  # label values (model, tool, agent names) come from clients and models: bound their size
# Distinct values kept per client-fed label; later new values fold into OTHER. The first ones seen keep
# their series: legitimate names arrive early and often, and an unbounded label is a memory and scrape DoS.
_MAX_DISTINCT = 100
OTHER = "other"

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_EVAL_BUCKETS = (1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 1e-3, 1e-2)
_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
RESTARTS_FILE = "worker_restarts"  # in the multiprocess directory: the supervisor writes it, scrapes read it


class _Family:
    """A labelled collector whose children are memoized: ``labels()`` costs one dict lookup.

    prometheus-client's own ``labels()`` validates, stringifies and locks on
    every call (~1.5 µs); the request path calls it several times per request.
    Label values are redacted and cut to ``_MAX_LABEL`` characters here, once
    for all callers; the client-fed label at position ``bounded`` keeps at
    most ``_MAX_DISTINCT`` values, then folds new ones into ``OTHER``.
    """

    __slots__ = ("_bounded", "_children", "_seen", "collector")

    def __init__(self, collector: Any, bounded: int | None = None) -> None:
        self.collector = collector
        self._children: dict[tuple[str, ...], Any] = {}
        self._bounded = bounded
        self._seen: set[str] = set()

    def labels(self, *values: str) -> Any:
        child = self._children.get(values)
        if child is None:
            child = self.collector.labels(*self._label_values(values))
            if len(self._children) < _MAX_MEMOIZED:
                self._children[values] = child
        return child

    def _label_values(self, values: tuple[str, ...]) -> list[str]:
        labels = [redact(value)[:_MAX_LABEL] for value in values]
        if self._bounded is not None and (value := labels[self._bounded]) not in self._seen:
            if len(self._seen) >= _MAX_DISTINCT:
                labels[self._bounded] = OTHER
            else:
                self._seen.add(value)
        return labels


class _LoopCount:
    """One series of a counter or gauge, recorded from the event loop's thread only."""

    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        self.value -= amount


class _LoopHistogram:
    """One series of a histogram, recorded from the event loop's thread only: a count per bucket, not cumulative."""

    __slots__ = ("_bounds", "counts", "created", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.created = time.time()

    def observe(self, amount: float) -> None:
        self.counts[bisect_left(self._bounds, amount)] += 1  # the first bucket whose bound is >= amount (le)
        self.sum += amount


class _LoopMetric(Collector):
    """A counter, gauge or histogram family without locks, exposed exactly as prometheus-client's own.

    Only for metrics recorded on the event loop's thread in a single process;
    under ``--workers`` prometheus-client's multiprocess values are used instead.
    """

    def __init__(
        self,
        kind: str,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        *,
        registry: CollectorRegistry,
        buckets: Sequence[float] = (),
    ) -> None:
        self._kind = kind
        self._name = name
        self._documentation = documentation
        self._labelnames = tuple(labelnames)
        self._bounds = tuple(float(bound) for bound in buckets)
        self._le = [*map(floatToGoString, self._bounds), "+Inf"]  # each bucket's ``le`` label
        self._series: dict[tuple[str, ...], Any] = {}
        self._unlabelled = None if labelnames else self.labels()
        registry.register(self)

    def labels(self, *values: str) -> Any:
        series = self._series.get(values)
        if series is None:
            series = _LoopHistogram(self._bounds) if self._kind == "histogram" else _LoopCount()
            self._series[values] = series
        return series

    def inc(self, amount: float = 1.0) -> None:
        self._unlabelled.inc(amount)  # type: ignore[union-attr]

    def dec(self, amount: float = 1.0) -> None:
        self._unlabelled.dec(amount)  # type: ignore[union-attr]

    def observe(self, amount: float) -> None:
        self._unlabelled.observe(amount)  # type: ignore[union-attr]

    def collect(self) -> Iterator[Metric]:
        family: Metric
        if self._kind == "counter":
            family = CounterMetricFamily(self._name, self._documentation, labels=self._labelnames)
            for values, count in self._series.items():
                family.add_metric(values, count.value, created=count.created)
        elif self._kind == "gauge":
            family = GaugeMetricFamily(self._name, self._documentation, labels=self._labelnames)
            for values, count in self._series.items():
                family.add_metric(values, count.value)
        else:
            family = HistogramMetricFamily(self._name, self._documentation, labels=self._labelnames)
            for values, histogram in self._series.items():
                family.add_metric(values, self._cumulative(histogram), histogram.sum)
                labels = dict(zip(self._labelnames, values, strict=True))
                family.samples.append(Sample(f"{self._name}_created", labels, histogram.created))
        yield family

    def _cumulative(self, histogram: _LoopHistogram) -> list[tuple[str, float]]:
        total = 0
        buckets: list[tuple[str, float]] = []
        for bound, count in zip(self._le, histogram.counts, strict=True):
            total += count
            buckets.append((bound, total))
        return buckets


class _WorkerRestarts(Collector):
    """``celgate_worker_restarts_total``: workers the supervisor replaced after they died."""

    def __init__(self, directory: Path) -> None:
        self._file = directory / RESTARTS_FILE

    def collect(self) -> Iterator[Metric]:
        try:
            restarts = int(self._file.read_text())
        except FileNotFoundError:
            restarts = 0
        yield CounterMetricFamily("celgate_worker_restarts", "Worker processes that died and were replaced.", restarts)


class Metrics:
    """The ``celgate_*`` collectors of one app; with ``multiprocess_dir``, scrapes show every worker's sum."""

    def __init__(self, multiprocess_dir: Path | None = None) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self._scraped = r
        if multiprocess_dir is not None:
            self._scraped = CollectorRegistry()
            MultiProcessCollector(self._scraped, str(multiprocess_dir))  # type: ignore[no-untyped-call]
            self._scraped.register(_WorkerRestarts(multiprocess_dir))
        self._on_loop = multiprocess_dir is None  # the request path's metrics go lock-free (_LoopMetric)
        latency: dict[str, Any] = {"buckets": _LATENCY_BUCKETS, "registry": r}
        self.requests = _Family(
            self._counter("celgate_requests", "Requests by route, model and status.", ["route", "model", "status"]),
            bounded=1,
        )
        self.request_duration = _Family(
            self._histogram("celgate_request_duration_seconds", "Whole request time in celgate.", ["route"])
        )
        self.upstream_duration = _Family(
            self._histogram("celgate_upstream_duration_seconds", "Upstream time to response headers.", ["route"])
        )
        self.stream_ttfb = self._histogram(
            "celgate_stream_ttfb_seconds", "Time to the first streamed byte sent to the client."
        )
        self.active_streams: Any = (
            _LoopMetric("gauge", "celgate_active_streams", "Streams being forwarded now.", registry=r)
            if self._on_loop
            else Gauge(
                "celgate_active_streams", "Streams being forwarded now.", registry=r, multiprocess_mode="livesum"
            )
        )
        self.upstream_errors = _Family(
            Counter("celgate_upstream_errors", "Upstream faults by kind.", ["kind"], registry=r)
        )
        self.tool_calls = _Family(
            self._counter(
                "celgate_tool_calls",
                "Tool calls seen, by tool, decision and source (upstream model or agent).",
                ["tool", "decision", "source"],
            ),
            bounded=0,
        )
        self.policy_decisions = _Family(
            self._counter("celgate_policy_decisions", "Policy decisions.", ["point", "effect", "rule"])
        )
        self.policy_eval = self._histogram(
            "celgate_policy_eval_seconds", "Time to reach one policy decision.", buckets=_EVAL_BUCKETS
        )
        self.policy_eval_errors = _Family(
            Counter("celgate_policy_eval_errors", "CEL runtime errors while evaluating rules.", ["rule"], registry=r)
        )
        self.policy_reloads = Counter("celgate_policy_reloads", "Policy reloads by result.", ["result"], registry=r)
        self.policy_info = Gauge(
            "celgate_policy_info",
            "The active policy set (value 1).",
            ["version"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self._policy_version: str | None = None
        self.tool_duration = _Family(
            Histogram("celgate_tool_duration_seconds", "Agent and gateway tool execution time.", ["tool"], **latency),
            bounded=0,
        )
        self.tool_failures = _Family(
            Counter(
                "celgate_tool_failures",
                "Agent and gateway tool executions that raised or returned a tool error.",
                ["tool"],
                registry=r,
            ),
            bounded=0,
        )
        self.tool_load_failures = _Family(
            Counter(
                "celgate_tool_load_failures", "Gateway tool files that failed to load.", ["tool", "kind"], registry=r
            )
        )
        self.agent_load_failures = _Family(
            Counter("celgate_agent_load_failures", "Drop-in agents that failed to load.", ["agent", "kind"], registry=r)
        )
        self.limited = Counter(
            "celgate_limited", "Requests shed with a 429 by a concurrency limit.", ["kind", "scope"], registry=r
        )
        self.loop_lag = Histogram(
            "celgate_event_loop_lag_seconds",
            "How late the event loop ran a timer: time every request waited behind blocking work.",
            buckets=_LAG_BUCKETS,
            registry=r,
        )

    def _counter(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> Any:
        """A counter of the request path: lock-free in one process, a multiprocess file value under workers."""
        if self._on_loop:
            return _LoopMetric("counter", name, documentation, labelnames, registry=self.registry)
        return Counter(name, documentation, labelnames, registry=self.registry)

    def _histogram(
        self, name: str, documentation: str, labelnames: Sequence[str] = (), buckets: Sequence[float] = _LATENCY_BUCKETS
    ) -> Any:
        """A histogram of the request path, chosen like ``_counter``."""
        if self._on_loop:
            return _LoopMetric("histogram", name, documentation, labelnames, registry=self.registry, buckets=buckets)
        return Histogram(name, documentation, labelnames, buckets=buckets, registry=self.registry)

    def upstream_fault(self, kind: str | None) -> None:
        self.upstream_errors.labels(kind or "upstream_error").inc()

    def set_policy_version(self, version: str) -> None:
        """Mark ``version`` active; the previous one reads 0 first (a worker's file keeps every series it wrote)."""
        if self._policy_version is not None and self._policy_version != version:
            self.policy_info.labels(self._policy_version).set(0)
            if self._scraped is self.registry:  # multiprocess mode cannot remove a series, so it stays at 0
                self.policy_info.remove(self._policy_version)
        self._policy_version = version
        self.policy_info.labels(version).set(1)

    def exposition(self) -> bytes:
        return generate_latest(self._scraped)

    def as_json(self) -> dict[str, Any]:
        """``{metric: {"type", "help", "samples": [{"name", "labels", "value"}]}}`` from the same collect()."""
        families: dict[str, Any] = {}
        for family in self._scraped.collect():
            families[family.name] = {
                "type": family.type,
                "help": family.documentation,
                "samples": [
                    {"name": s.name, "labels": dict(s.labels), "value": _json_number(s.value)} for s in family.samples
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
