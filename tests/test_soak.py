"""The soak in CI: a minute of ``bench/soak.py``'s mixed traffic through a real celgate process.

Ten minutes are recorded in docs/performance.md; here a minute must show no
answer other than the intended ones (the faults and the disconnects are
intended), every policy rewrite reloaded, open file descriptors within what
the traffic in flight explains, and RSS flat after the warm-up.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

LOOPS = 8
RSS_GROWTH_MIB = 5.0  # after the warm-up, over 40 s; the 10-minute run's slope is in docs/performance.md


@pytest.mark.timeout(180)
def test_a_minute_of_mixed_traffic_leaves_fds_and_memory_flat(tmp_path: Path) -> None:
    summary_file = tmp_path / "soak.json"
    subprocess.run(
        [sys.executable, "bench/soak.py", "--duration", "60", "--warmup", "20", "--reload-every", "20",
         "--loops", str(LOOPS), "--json", str(summary_file)],
        cwd=REPO, check=True, timeout=150, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    summary = json.loads(summary_file.read_text())

    assert summary["unexpected_count"] == 0, summary["unexpected"]
    assert all(count > 0 for count in summary["sent"].values()), summary["sent"]
    assert summary["policy_rewrites"] >= 2 and summary["policy_reloads_ok"] >= summary["policy_rewrites"]
    # Each request in flight holds at most a client socket and an upstream one: beyond that, something leaks.
    assert summary["fds_range"] <= 2 * LOOPS and abs(summary["fds_last"] - summary["fds_first"]) <= 2 * LOOPS
    assert summary["rss_mib_last"] - summary["rss_mib_first"] <= RSS_GROWTH_MIB, summary["samples"]
