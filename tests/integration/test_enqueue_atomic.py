"""Enqueue is one step: our record, RQ's record and the queue entry are written together or not at all, so a
client killed at any moment leaves either nothing or a job that runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import testjobs
from conftest import ROOT, wait_until

from resilient.errors import CheckpointError, ConfigError
from resilient.storage import keys

ENQUEUER = """
import sys, testjobs
from resilient import Client
client = Client.from_url(sys.argv[1])
print("ready", flush=True)
for n in range(100000):
    testjobs.quiet_sum.enqueue_call((n % 5, 0.0), client=client, job_id=f"{sys.argv[2]}-{n}")
"""


def _state(redis_client, job_id: str) -> tuple[bool, bool, bool]:
    return (bool(redis_client.exists(keys.job(job_id))), bool(redis_client.exists(keys.rq_job(job_id))),
            redis_client.lpos(keys.rq_queue("tests"), job_id) is not None)


def test_a_client_killed_mid_enqueue_leaves_nothing_or_a_runnable_job(redis_url, redis_client, start_worker, client):
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'tests'}{os.pathsep}{ROOT}"}
    created: list[str] = []
    for round_ in range(8):
        proc = subprocess.Popen([sys.executable, "-c", ENQUEUER, redis_url, f"r{round_}"], env=env,
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        wait_until(lambda r=round_: redis_client.exists(keys.job(f"r{r}-3")), what="a few enqueues")
        os.kill(proc.pid, signal.SIGKILL)  # at whatever point of an enqueue it is
        proc.wait()
        proc.stdout.close()
        n = 0
        while (state := _state(redis_client, f"r{round_}-{n}")) == (True, True, True):
            created.append(f"r{round_}-{n}")
            n += 1
        assert state == (False, False, False), f"r{round_}-{n} half written: {state}"
        assert not redis_client.exists(keys.job(f"r{round_}-{n + 1}"))
    start_worker("--burst")
    for job_id in created[:: max(1, len(created) // 20)]:
        assert client.handle(job_id).result(timeout=60) == sum(range(int(job_id.split("-")[1]) % 5))


def test_enqueue_many_queues_every_call_or_none(client, start_worker, redis_url, redis_client):
    """fn.enqueue_many takes tuples of arguments or dicts of keyword arguments; one bad call is named before
    anything is written."""
    handles = testjobs.quiet_sum.enqueue_many([(3, 0.0), {"n": 4, "delay": 0.0}, (5,)], client=client)
    with pytest.raises(CheckpointError, match="args"):
        testjobs.quiet_sum.enqueue_many([(1,), (object(),)], client=client)
    with pytest.raises(ConfigError, match="a tuple of arguments or a dict"):
        testjobs.quiet_sum.enqueue_many([3], client=client)
    with pytest.raises(ConfigError, match="missing a required argument: 'n'"):
        testjobs.quiet_sum.enqueue_many([(1,), ()], client=client)
    assert redis_client.llen(keys.rq_queue("tests")) == 3
    start_worker("--burst")
    assert [h.result(timeout=30) for h in handles] == [3, 6, 10]
