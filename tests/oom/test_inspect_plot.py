"""`resilient inspect --plot`: RSS over time against L and the thresholds, with deaths marked."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import testjobs
from cgroup_support import cgroups_or_skip
from conftest import ROOT

pytestmark = pytest.mark.oom


def test_plot_shows_limit_thresholds_and_both_deaths(client, start_worker, redis_url):
    """A job preempted once and OOM-killed once: the chart has L, hard, soft, and a P and a K mark."""
    cgroups_or_skip()
    start_worker("--memory-limit", "300M")
    handle = testjobs.preempt_then_spike.enqueue_call((), client=client)
    assert handle.result(timeout=90) == 3
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'tests'}{os.pathsep}{ROOT}", "COLUMNS": "140"}
    shown = subprocess.run([sys.executable, "-m", "resilient", "--redis-url", redis_url, "inspect", handle.id,
                            "--plot"], capture_output=True, text=True, env=env, timeout=30)
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    assert "RSS over time (limit 300.0 MiB from cgroup v1" in text
    chart = [line for line in text.splitlines() if "|" in line]
    assert any(line.endswith("L 300.0 MiB") for line in chart)
    assert any(line.endswith("hard 85%") for line in chart) and any(line.endswith("soft 70%") for line in chart)
    assert sum(line.count("•") for line in chart) >= 3
    assert sum(line.count("▲") for line in chart) == 2  # the peak at each death
    marks = next(line for line in text.splitlines() if line.strip().startswith("deaths"))
    assert marks.index("P") < marks.index("K")
    assert "P preempted:memory, K oom:kernel" in text
