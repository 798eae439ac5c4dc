"""Chaos: 4 supervised workers, a killer taking down a random horse or worker every 0.3-1 s for 60 s."""

from __future__ import annotations

import collections
import os
import random
import signal
import subprocess
import sys
import time

import psutil
import pytest
import testjobs
from conftest import ROOT

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(240)]
JOBS, ITEMS, KILL_FOR = 50, 200, 60.0
SECONDS_PER_ITEM = 0.025  # 50 jobs x 5 s of work on 4 workers: about a minute, the length of the killing


def test_fifty_jobs_survive_a_minute_of_random_kills(client, redis_url, redis_client, tmp_path, capsys):
    """Every job completes once with the uninterrupted result; nothing is lost, duplicated or parked."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'tests'}{os.pathsep}{ROOT}", "REDIS_URL": redis_url,
           "RESILIENT_RETRY_BACKOFF": "0.2"}
    log = open(tmp_path / "supervisor.log", "wb")
    supervisor = subprocess.Popen(
        [sys.executable, "-m", "resilient", "supervisor", "--lease-ttl", "2", "--workers", "4", "testjobs",
         "-q", "chaos", "--log-level", "WARNING"],
        env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    try:
        handles = [testjobs.chaos_sum.enqueue_call((redis_url, ITEMS, SECONDS_PER_ITEM), client=client)
                   for _ in range(JOBS)]
        kills = _kill_at_random(supervisor.pid, client, handles, rng=random.Random(2026))
        results = [h.result(timeout=150) for h in handles]
    finally:
        supervisor.send_signal(signal.SIGTERM)
        supervisor.wait(60)
        log.close()

    expected = sum(i * i for i in range(ITEMS))
    causes = collections.Counter(e["cause"] for h in handles for e in h.events() if e["type"] == "died")
    completions = [sum(e["type"] == "completed" for e in h.events()) for h in handles]
    redone = int(redis_client.get("chaos:items")) - JOBS * ITEMS
    with capsys.disabled():  # the summary belongs in CI's output
        print(f"\nchaos: {sum(kills.values())} kills ({dict(kills)}); deaths by cause {dict(causes)}; "
              f"items redone {redone} ({redone / max(1, sum(kills.values())):.1f} per kill); "
              f"attempts {sum(h.attempts for h in handles)} for {JOBS} jobs")
    assert results == [expected] * JOBS
    assert completions == [1] * JOBS, "a job completed twice"
    assert client.store.parked() == []
    assert sum(kills.values()) >= 40


def _kill_at_random(supervisor_pid: int, client, handles, rng: random.Random) -> collections.Counter:
    kills: collections.Counter = collections.Counter()
    deadline = time.monotonic() + KILL_FOR
    while time.monotonic() < deadline and not all(h.status == "completed" for h in handles):
        time.sleep(rng.uniform(0.3, 1.0))
        workers = [p.pid for p in psutil.Process(supervisor_pid).children()]
        horses = _running_horses(client, handles)
        choice = rng.choice(["horse", "worker"]) if horses and workers else ("worker" if workers else None)
        if choice is None:
            continue
        target = rng.choice(horses if choice == "horse" else workers)
        try:
            os.kill(target, signal.SIGKILL)
            kills[choice] += 1
        except ProcessLookupError:
            pass
    return kills


def _running_horses(client, handles) -> list[int]:
    pids = []
    for handle in handles:
        fields = client.store.job_fields(handle.id)
        if fields.get("status") == "running" and fields.get("horse_pid"):
            pid = int(fields["horse_pid"])
            if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                pids.append(pid)
    return pids
