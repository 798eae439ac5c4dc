"""Prometheus metrics from a worker: deaths counted with the right labels; files that do not pile up."""

from __future__ import annotations

import os
import signal
import socket
import urllib.request

import pytest
import testjobs
from cgroup_support import cgroups_or_skip
from conftest import wait_until


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _scrape(port: int) -> str:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:
        return ""


@pytest.mark.oom
def test_kill_and_preemption_are_counted(client, start_worker, redis_url):
    """After one horse kill and one memory preemption the counters read 1 each, labelled by cause; the
    preemption of a worker alone under its limit counts as a memory death the job caused itself."""
    cgroups_or_skip()
    port = _free_port()
    start_worker("--memory-limit", "300M", "--metrics-port", str(port))
    assert testjobs.preempt_once.enqueue_call((), client=client).result(timeout=60) == 2

    handle = testjobs.count_items.enqueue_call((redis_url, 200), client=client)
    pid = wait_until(lambda: int(client.store.job_fields(handle.id).get("horse_pid", 0) or 0), what="horse")
    wait_until(lambda: int(client.store.job_fields(handle.id).get("seq", 0)) >= 2, what="checkpoints")
    os.kill(pid, signal.SIGKILL)
    assert handle.result(timeout=60) == sum(range(200))

    text = wait_until(lambda: _scrape(port), what="the metrics endpoint")
    assert 'resilient_job_deaths_total{cause="killed"} 1.0' in text
    assert 'resilient_job_deaths_total{cause="preempted:memory"} 1.0' in text
    assert 'resilient_preemptions_total{reason="memory"} 1.0' in text
    assert 'resilient_memory_deaths_total{blame="self"} 1.0' in text, "alone, a memory death is its own doing"
    assert 'blame="neighbours"' not in text
    assert "resilient_checkpoint_save_seconds_count" in text
    assert 'rq_jobs{queue="tests",status="finished"} 2.0' in text
    assert "resilient_memory_limit_bytes" in text
    used = next(line for line in text.splitlines() if line.startswith("resilient_redis_used_memory_bytes "))
    assert float(used.split()[1]) > 1 << 20 and "resilient_redis_maxmemory_bytes 0.0" in text


def test_metrics_files_stay_few_and_totals_count_every_job(client, start_worker, tmp_path, monkeypatch):
    """After 10 jobs the metrics directory holds a handful of files, not 3 per job, and the totals
    still count every job's checkpoint save."""
    directory = tmp_path / "prometheus"
    directory.mkdir()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))
    port = _free_port()
    start_worker("--metrics-port", str(port))
    handles = [testjobs.spike_once.enqueue_call((1,), client=client) for _ in range(10)]
    assert [handle.result(timeout=60)["attempt"] for handle in handles] == [1] * 10  # one save each
    text = wait_until(lambda: (t := _scrape(port)) and "resilient_checkpoint_save_seconds_count 10.0" in t and t,
                      what="10 saves counted")
    wait_until(lambda: len(list(directory.iterdir())) <= 4, what="the horses' files to be folded away")
    assert "resilient_worker_rss_bytes" in text and 'pid="' not in text
