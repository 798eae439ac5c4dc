"""RQ's Job and Queue, bound to the msgpack codec and the allowlist."""

from __future__ import annotations

from typing import Any, Callable

import redis
from rq.job import Job
from rq.queue import Queue

from .codec import MsgpackSerializer
from .errors import UnknownJob
from .registry import JobSpec, lookup


class ResilientJob(Job):
    """An RQ job whose function is looked up in the @resilient.job registry, never imported by name."""

    runner: Callable[[tuple[Any, ...], dict[str, Any]], Any] | None = None  # set by the worker in the horse

    # RQ imports and calls these dotted paths, and sends these HTTP requests, as the job record says: anyone
    # who can write to Redis could set them. Only @resilient.job functions run.
    success_callback = failure_callback = stopped_callback = property(lambda self: None)

    def send_webhooks(self, *args: Any, **kwargs: Any) -> None:
        return None

    @property
    def func(self) -> JobSpec:
        return lookup(self.func_name)

    def _execute(self) -> Any:
        if self.runner is None:
            raise UnknownJob(str(self.func_name))
        return self.runner(tuple(self.args), dict(self.kwargs))


def rq_queue(name: str, connection: redis.Redis) -> Queue:
    return Queue(name, connection=connection, serializer=MsgpackSerializer, job_class=ResilientJob)


def rq_keys(job_id: str, queue: Queue) -> list[str]:
    """RQ's keys for a refused entry of `job_id` on `queue`: its intermediate list, job hash, failed registry."""
    return [queue.intermediate_queue_key, ResilientJob.key_for(job_id), queue.failed_job_registry.key]


def fetch_rq_job(job_id: str, connection: redis.Redis) -> ResilientJob | None:
    try:
        return ResilientJob.fetch(job_id, connection=connection, serializer=MsgpackSerializer)
    except Exception:  # missing, expired or corrupt: callers report what our own keys say
        return None
