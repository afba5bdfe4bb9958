"""What one request costs the proxy in instructions (load-independent) or CPU µs: celgate, --no-policy, aiohttp-ref,
the raw-asyncio floor experiment (``bench/floor.py``), or aiohttp's floor as a relay and as the least policy-enforcing
relay (``bench/aiohttp_floor.py``: ``aiohttp-floor``, ``governed-floor``, which takes ``--policies``).

The shared harness (``../shared/bench/run.sh``) gives same-run wall-clock
ratios, which swing with whatever else the machine runs. This counts the
proxy's user-space instructions per request under ``valgrind --tool=callgrind``
(instrumentation switched on after a warm-up, so start-up is not counted),
which a busy neighbour does not change: repeated runs agree within 0.3 %. It
does not see kernel time (the socket writes), so use it to attribute and
compare changes, and the harness for the final ratios.

The proxy runs pinned to CPU 1 in front of the harness's mock upstream
(``../shared/bench/mock``, on CPU 0, with the harness's Python); the load is
an aiohttp client in this process, ``-c`` requests in flight, sending the
harness's wrk body (or, with ``--stream``, a stream that offers
``get_weather``, which the mock then calls).

    python bench/request_cost.py [--target celgate|bare|ref|floor|aiohttp-floor|governed-floor] [--stream]
                                 [-n 1500] [--cpu] [--policies DIR] [--profile FILE]

``--profile FILE`` samples the proxy with the bench venv's py-spy during the
measured load (``--cpu`` timing) and writes collapsed stacks to ``FILE``:
where the time goes, to read beside the instruction counts.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from processes import REPO, free_port, process  # bench/ is on sys.path when a benchmark runs

SHARED = REPO.parent / "shared" / "bench"
BENCH_PY = Path(os.environ.get("BENCH_PY", Path.home() / ".cache/celgate-bench/venv/bin/python"))
BODY = (
    b'{"model":"bench-mock","messages":[{"role":"system","content":"You are a terse assistant."},'
    b'{"role":"user","content":"Say something short about foxes."}],"max_tokens":32,"temperature":0}'
)
STREAM_BODY = (
    b'{"model":"bench-mock","stream":true,"messages":[{"role":"user","content":"Say something short."}],'
    b'"tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object"}}}]}'
)
HEADERS = {"Authorization": "Bearer sk-bench", "Content-Type": "application/json"}
TARGETS = ("celgate", "bare", "ref", "floor", "aiohttp-floor", "governed-floor")


def proxy_command(
    target: str, port: int, upstream: str, empty: Path, policies: Path = SHARED / "policies"
) -> list[str]:
    """The target as the harness runs it, except ``--no-watch``: valgrind slows requests, not the watcher's polls."""
    python = str(Path(sys.executable))
    if target == "ref":
        return [python, str(SHARED / "ref/aiohttp_forwarder.py"), "--port", str(port), "--upstream", upstream]
    if target == "floor":
        return [python, str(REPO / "bench/floor.py"), "--port", str(port), "--upstream", upstream]
    if target in ("aiohttp-floor", "governed-floor"):
        floor = [python, str(REPO / "bench/aiohttp_floor.py"), "--port", str(port), "--upstream", upstream]
        return floor + (["--mode", "governed", "--policies", str(policies)] if target == "governed-floor" else [])
    policy = ["--no-policy"] if target == "bare" else ["--policies", str(policies), "--no-watch"]
    serve = ["-m", "celgate.proxy", "serve", "--host", "127.0.0.1", "--port", str(port), "--upstream", upstream]
    return [python, *serve, "--agents", str(empty), *policy]  # no drop-ins: the harness runs in an empty folder


async def load(url: str, n: int, concurrency: int, stream: bool) -> None:
    left = n

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal left
        while left > 0:
            left -= 1
            async with session.post(url, data=STREAM_BODY if stream else BODY, headers=HEADERS) as response:
                body = await response.read()
                if response.status != 200 or (stream and not body.rstrip().endswith(b"[DONE]")):
                    raise RuntimeError(f"{response.status}: {body[-300:]!r}")

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))


def cpu_seconds(pid: int) -> tuple[float, float]:
    """The process's user and system CPU seconds so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def profiler(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """py-spy (from the bench venv) sampling ``pid`` at 997 Hz into collapsed stacks at ``out``."""
    spy = BENCH_PY.parent / "py-spy"
    command = [str(spy), "record", "-p", str(pid), "-r", "997", "-f", "raw", "-o", str(out), "--nonblocking"]
    started = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1)  # attached before the load starts
    return started


def callgrind(pid: int, *command: str) -> None:
    subprocess.run(["callgrind_control", *command, str(pid)], check=True, stdout=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", choices=TARGETS, default="celgate")
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("-n", type=int, default=1500, help="measured requests")
    parser.add_argument("--warm", type=int, default=300)
    parser.add_argument("-c", type=int, default=8, help="requests in flight")
    parser.add_argument("--cpu", action="store_true", help="CPU µs per request from /proc instead of callgrind")
    parser.add_argument(
        "--policies", type=Path, default=SHARED / "policies", help="policy folder (default: bench.yaml)"
    )
    parser.add_argument("--profile", type=Path, help="py-spy collapsed stacks of the measured load (implies --cpu)")
    args = parser.parse_args()
    args.cpu = args.cpu or args.profile is not None
    mock_port, port = free_port(), free_port()
    mock = ["taskset", "-c", "0", str(BENCH_PY), str(SHARED / "mock/mock_upstream.py"), "--port", str(mock_port)]
    scratch = Path(tempfile.mkdtemp(prefix="request-cost-"))
    out = scratch / "callgrind.out"
    command = proxy_command(args.target, port, f"http://127.0.0.1:{mock_port}/v1", scratch / "no-agents", args.policies)
    if not args.cpu:
        command = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}", *command]
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    with process(mock, mock_port), process(["taskset", "-c", "1", *command], port) as proxy:
        asyncio.run(load(url, args.warm, args.c, args.stream))
        if args.cpu:
            spy = profiler(proxy.pid, args.profile) if args.profile else None
            user_before, system_before = cpu_seconds(proxy.pid)
            asyncio.run(load(url, args.n, args.c, args.stream))
            user, system = cpu_seconds(proxy.pid)
            user, system = user - user_before, system - system_before
            if spy is not None:
                spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
                spy.wait(timeout=60)
            per_request = {"cpu_us_per_request": user + system, "user_us": user, "system_us": system}
            result = {name: round(seconds / args.n * 1e6, 1) for name, seconds in per_request.items()}
        else:
            callgrind(proxy.pid, "-i", "on")
            asyncio.run(load(url, args.n, args.c, args.stream))
            callgrind(proxy.pid, "-d")
            time.sleep(1)
            dump = max(glob.glob(f"{out}*"), key=os.path.getmtime)
            totals = [line for line in Path(dump).read_text().splitlines() if line.startswith(("summary:", "totals:"))]
            result = {"instructions_per_request": round(int(totals[-1].split()[1]) / args.n)}
    print(json.dumps({"target": args.target, "stream": args.stream, **result}))


if __name__ == "__main__":
    main()
