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

    @property
    def func(self) -> JobSpec:
        return lookup(self.func_name)

    def _execute(self) -> Any:
        if self.runner is None:
            raise UnknownJob(str(self.func_name))
        return self.runner(tuple(self.args), dict(self.kwargs))


def rq_queue(name: str, connection: redis.Redis) -> Queue:
    return Queue(name, connection=connection, serializer=MsgpackSerializer, job_class=ResilientJob)


def rebuild_rq_job(job_id: str, name: str, queue: str, call: dict[str, Any], connection: redis.Redis,
                   ttl: int) -> None:
    """Save a new RQ record for a job whose own one expired (RQ's failure TTL), from what our hash keeps."""
    ResilientJob.create(name, args=call["args"], kwargs=call["kwargs"], connection=connection, id=job_id,
                        origin=queue, timeout=call["timeout"], result_ttl=ttl, failure_ttl=ttl,
                        serializer=MsgpackSerializer).save()


def fetch_rq_job(job_id: str, connection: redis.Redis) -> ResilientJob | None:
    try:
        return ResilientJob.fetch(job_id, connection=connection, serializer=MsgpackSerializer)
    except Exception:  # missing, expired or corrupt: callers report what our own keys say
        return None
