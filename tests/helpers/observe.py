"""Reading what a running celgate reports (``/metrics``, ``/admin/*``), and waiting for a condition.

``served`` is anything with a ``root`` URL: an in-process ``Celgate``, a
``Running`` process, a deployed pod.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

__all__ = [
    "Samples",
    "eventually",
    "get_json",
    "labelled",
    "metric",
    "parse_samples",
    "policies_status",
    "sample",
    "scrape",
    "wait_for_status",
]

# (sample name, labels) -> value
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class Served(Protocol):
    @property
    def root(self) -> str: ...


def parse_samples(text: str) -> Samples:
    """Every sample of a Prometheus text exposition."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def scrape(http: aiohttp.ClientSession, served: Served, headers: Mapping[str, str] | None = None) -> Samples:
    """Every sample ``/metrics`` shows now."""
    async with http.get(served.root + "/metrics", headers=headers) as response:
        assert response.status == 200, await response.text()
        return parse_samples(await response.text())


def sample(samples: Samples, name: str, **labels: str) -> float | None:
    """The sample with exactly these labels, or None."""
    return samples.get((name, frozenset(labels.items())))


def metric(samples: Samples, name: str, **labels: str) -> float:
    """The sample with exactly these labels; 0 when it was never touched (labelled counters start absent)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def labelled(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    """Every sample named ``name``, by its labels."""
    return {labels: value for (n, labels), value in samples.items() if n == name}


async def get_json(http: aiohttp.ClientSession, url: str, headers: Mapping[str, str] | None = None) -> Any:
    """GET ``url``, which must answer 200 with JSON."""
    async with http.get(url, headers=headers) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def policies_status(
    http: aiohttp.ClientSession, served: Served, headers: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """``GET /admin/policies``: the active set, the last error, the reload counts."""
    status: dict[str, Any] = await get_json(http, served.root + "/admin/policies", headers)
    return status


async def wait_for_status(
    http: aiohttp.ClientSession,
    served: Served,
    condition: Callable[[dict[str, Any]], bool],
    *,
    headers: Mapping[str, str] | None = None,
    seconds: float = 10.0,
    interval: float = 0.05,
) -> dict[str, Any]:
    """Poll ``/admin/policies`` until ``condition`` holds; return that status."""
    async with asyncio.timeout(seconds):
        while True:
            status = await policies_status(http, served, headers)
            if condition(status):
                return status
            await asyncio.sleep(interval)


async def eventually(
    check: Callable[[], bool | Awaitable[bool]], what: str = "the condition", timeout: float = 15.0
) -> None:
    """Poll ``check`` (plain or async) until it is true; fail, naming ``what``, after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for: {what}")
        await asyncio.sleep(0.02)
