"""What status, top and the reaper cost as work grows: a fixed number of round trips whatever the number of
jobs (bench scenario 9 measures the times at 100k jobs)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from redis.connection import AbstractConnection
from rich.console import Console
from rq.executions import Execution, ExecutionRegistry
from rq.registry import StartedJobRegistry

from resilient.config import Settings
from resilient.ops import report, top, views
from resilient.runtime.supervisor import _forget_started
from resilient.storage import keys
from resilient.storage.store import Store

QUEUE = "tests"


def _running(connection, store: Store, count: int, prefix: str = "r", queue: str = QUEUE) -> list[str]:
    """`count` jobs begun (our record, a lease) with an execution in RQ's started registry, as a worker has."""
    ids = [f"{prefix}{i}" for i in range(count)]
    registry = StartedJobRegistry(queue, connection=connection)
    with connection.pipeline() as pipe:
        for job_id in ids:
            store.create_job(job_id, "tests.fn", queue, 3, pipeline=pipe)
            execution = Execution(f"x{job_id}", job_id, connection)
            registry.add_execution(execution, pipeline=pipe, ttl=600)
            ExecutionRegistry(job_id, connection=pipe).add(execution, ttl=600, pipeline=pipe)
        pipe.execute()
    for job_id in ids:
        store.begin_attempt(job_id, "w", "h")
    return ids


def _delayed(store: Store, job_id: str, queue: str) -> None:
    store.create_job(job_id, "tests.fn", queue, 3)
    _, attempt = store.begin_attempt(job_id, "w", "h")
    store.mark_requeued(attempt, "killed", queue, delay=600)


@pytest.fixture
def round_trips(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts what is sent to Redis: one per command, one per pipeline."""
    sent = [0]
    real = AbstractConnection.send_packed_command

    def counting(self, command, check_health=True):  # type: ignore[no-untyped-def]
        sent[0] += 1
        return real(self, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counting)
    return sent


def test_status_costs_the_same_round_trips_for_4_or_60_running_jobs(client, redis_client, round_trips):
    store = Store(redis_client, Settings(lease_ttl=600))
    redis_client.sadd(keys.RQ_QUEUES, keys.rq_queue(QUEUE), keys.rq_queue("other"))
    _running(redis_client, store, 4)
    _delayed(store, "d1", QUEUE)
    report.status(redis_client, store)  # scripts and connections warmed
    round_trips[0] = 0
    few = report.status(redis_client, store)
    few_trips = round_trips[0]

    _running(redis_client, store, 56, prefix="more")
    _delayed(store, "d2", QUEUE)
    _delayed(store, "d3", "other")
    round_trips[0] = 0
    many = report.status(redis_client, store)
    assert round_trips[0] == few_trips, "status made a round trip per job"
    assert len(few["running"]) == few["running_count"] == 4
    assert len(many["running"]) == many["running_count"] == 60
    assert {job["id"] for job in many["running"]} >= {"r0", "more55"}
    assert all(job["status"] == "running" and job["attempt"] == 1 for job in many["running"])
    assert {q["name"]: q["delayed"] for q in many["queues"]} == {QUEUE: 2, "other": 1}


def test_status_lists_at_most_running_limit_and_counts_them_all(client, redis_client):
    store = Store(redis_client, Settings(lease_ttl=600))
    redis_client.sadd(keys.RQ_QUEUES, keys.rq_queue(QUEUE))
    _running(redis_client, store, 12)
    data = report.status(redis_client, store, running_limit=5)
    assert len(data["running"]) == 5 and data["running_count"] == 12

    screen = Console(record=True, width=200)
    shown = report.status(redis_client, store, running_limit=top.RUNNING_ROWS)
    screen.print(top.render(shown, top.Rates(), 0.0))
    assert "more running" not in screen.export_text()
    data["running_count"] = top.RUNNING_ROWS + 7
    data["running"] = data["running"] * (top.RUNNING_ROWS // 5)
    screen.print(top.render(data, top.Rates(), 0.0))
    assert "… and 7 more running" in screen.export_text()


def test_status_only_reads_rqs_started_registry(client, redis_client):
    """An entry whose RQ heartbeat has lapsed stays for RQ's workers (and our reaper) to judge: a view does
    not run RQ's cleanup, which fetches and fails each such job."""
    store = Store(redis_client, Settings(lease_ttl=600))
    redis_client.sadd(keys.RQ_QUEUES, keys.rq_queue(QUEUE))
    (job_id,) = _running(redis_client, store, 1)
    registry = StartedJobRegistry(QUEUE, connection=redis_client)
    redis_client.zadd(registry.key, {f"{job_id}:x{job_id}": time.time() - 60})
    assert [job["id"] for job in report.status(redis_client, store)["running"]] == [job_id]
    assert redis_client.zcard(registry.key) == 1


def test_the_reaper_forgets_a_started_entry_by_the_jobs_own_executions(redis_client, round_trips):
    """Removing a claimed job from RQ's started registry reads the job's own execution index, not the
    registry; with that index expired, it finds the job's entries by a scan of the registry."""
    store = Store(redis_client, Settings(lease_ttl=600))
    ids = _running(redis_client, store, 200)
    registry = StartedJobRegistry(QUEUE, connection=redis_client)
    round_trips[0] = 0
    _forget_started(redis_client, "r7", QUEUE)
    assert round_trips[0] == 2
    assert redis_client.zcard(registry.key) == 199
    assert redis_client.zscore(registry.key, "r7:xr7") is None

    redis_client.delete(ExecutionRegistry("r8", connection=redis_client).key)
    _forget_started(redis_client, "r8", QUEUE)
    assert redis_client.zcard(registry.key) == 198
    assert redis_client.zscore(registry.key, "r8:xr8") is None
    assert len(ids) == 200 and redis_client.zscore(registry.key, "r80:xr80") is not None


def test_plain_status_prints_at_most_a_hundred_running_jobs(client, redis_url, redis_client):
    """`status` (not --json) reads and prints the first STATUS_RUNNING_ROWS running jobs and says how many
    more there are: a table of 10k rows took seconds to draw."""
    store = Store(redis_client, Settings(lease_ttl=600))
    redis_client.sadd(keys.RQ_QUEUES, keys.rq_queue(QUEUE))
    _running(redis_client, store, views.STATUS_RUNNING_ROWS + 20)
    env = {**os.environ, "COLUMNS": "200"}
    plain = subprocess.run([sys.executable, "-m", "resilient", "--redis-url", redis_url, "status"], env=env,
                           capture_output=True, text=True, timeout=30, check=True).stdout
    assert "… and 20 more running (status --json lists them all)" in plain
    assert sum(1 for line in plain.splitlines() if "tests.fn" in line) == views.STATUS_RUNNING_ROWS
