"""Micro-benchmark of the policy evaluator alone (no proxy, no I/O).

Measures decisions per second and µs per decision for the shared benchmark
policy (``../shared/bench/policies/bench.yaml``) on the request the bench
client sends (key ``sk-bench``, model ``bench-mock``, streaming) and on the
``get_weather`` tool call its stream ends with, for each CEL backend.
Steady state: candidate lists and cached rule outcomes are warm, as they are
after the first request in the proxy. Target: ≤ 20 µs per decision on the
default backend.

    python bench/policy_bench.py [--policies DIR] [--backend cel-expr|celpy|all] [--seconds S]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from celgate.policy import Decision, PolicySet, RequestInfo, ToolCall, load_policies
from celgate.policy.backends import BACKENDS

REPO = Path(__file__).resolve().parents[1]

__all__ = ["main"]

REQUEST = RequestInfo(
    model="bench-mock",
    agent=None,
    stream=True,
    path="/v1/chat/completions",
    headers={"content-type": "application/json", "accept": "text/event-stream", "user-agent": "bench/1.0"},
    tools=("get_weather",),
    scalars={"max_tokens": 64, "temperature": 0.2},
)
TOOL = ToolCall("get_weather", '{"location": "Paris, FR", "unit": "celsius"}', "call_bench", "upstream")


def _per_call_seconds(call: Callable[[], Decision], seconds: float) -> list[float]:
    """Seconds per call for each of several timed batches (after a warm-up batch)."""
    batch = 1
    while True:  # size a batch to ~1/20 of the budget
        started = time.perf_counter()
        for _ in range(batch):
            call()
        elapsed = time.perf_counter() - started
        if elapsed > seconds / 20:
            break
        batch *= 2
    samples: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(samples) < 5:
        started = time.perf_counter()
        for _ in range(batch):
            call()
        samples.append((time.perf_counter() - started) / batch)
    return samples


def _scenarios(policy: PolicySet) -> dict[str, Callable[[], Decision]]:
    principal = policy.resolve_principal("sk-bench")
    if principal.id != "bench-app":
        raise SystemExit("the bench policy must map the key sk-bench to principal bench-app")
    return {
        "request": lambda: policy.check_request(principal, REQUEST),
        "tool_call": lambda: policy.check_tool_call(principal, REQUEST, TOOL),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policies", type=Path, default=REPO.parent / "shared" / "bench" / "policies")
    parser.add_argument("--backend", choices=[*BACKENDS, "all"], default="all")
    parser.add_argument("--seconds", type=float, default=2.0, help="measuring time per cell (default 2)")
    args = parser.parse_args(argv)
    backends = list(BACKENDS) if args.backend == "all" else [args.backend]

    print(f"policy: {args.policies}  python {sys.version.split()[0]}")
    print(f"{'backend':<10} {'point':<10} {'decisions/s':>12} {'µs/decision':>12} {'best µs':>9}")
    for backend in backends:
        policy = load_policies(args.policies, backend)
        for point, call in _scenarios(policy).items():
            decision = call()
            samples = _per_call_seconds(call, args.seconds if backend == "cel-expr" else args.seconds / 2)
            median = statistics.median(samples)
            print(
                f"{backend:<10} {point:<10} {1 / median:>12,.0f} {median * 1e6:>12.1f} {min(samples) * 1e6:>9.1f}"
                f"   ({decision.effect.value} by {decision.rule})"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
