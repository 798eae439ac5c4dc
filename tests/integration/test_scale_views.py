"""What status, top and the reaper cost as work grows: a fixed number of round trips whatever the number of
jobs (bench scenario 9 measures the times at 100k jobs)."""

from __future__ import annotations

import pytest
from redis.connection import AbstractConnection
from rq.executions import Execution, ExecutionRegistry
from rq.registry import StartedJobRegistry

from resilient.config import Settings
from resilient.runtime.supervisor import _forget_started
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
