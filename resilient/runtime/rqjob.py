"""RQ's Job and Queue, bound to the msgpack codec and the allowlist, and hardened against hostile records."""

from __future__ import annotations

import logging
from typing import Any, Callable, cast

import redis
from rq.job import Job
from rq.queue import Queue
from rq.utils import decode_redis_hash

from ..api.registry import JobSpec, lookup
from ..errors import BadQueueEntry, CorruptCheckpoint, UnknownJob
from ..storage.codec import MsgpackSerializer, inflate, read_head

log = logging.getLogger("resilient.rqjob")
_HOOKS = ("success_callback_name", "failure_callback_name", "stopped_callback_name", "webhooks")
_UNREAD = ("meta", "result")  # RQ decodes them in whichever process fetches the job; resilient keeps nothing there


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
        return self.spec()

    def spec(self) -> JobSpec:
        """The @resilient.job this entry calls, read without decoding its arguments: UnknownJob, or
        BadQueueEntry when the payload is not a msgpack call (name, instance, args, kwargs)."""
        try:
            name = read_head(self.data, 4, key=self.key)
        except CorruptCheckpoint as exc:
            raise BadQueueEntry(self.id, f"its payload is not a msgpack call (pickle or garbage): {exc}") from None
        return lookup(name)

    def _execute(self) -> Any:
        if self.runner is None:
            raise UnknownJob(str(self.func_name))
        return self.runner(tuple(self.args), dict(self.kwargs))

    def restore(self, raw_data: Any) -> None:
        """RQ's restore, except that the payload is inflated within the codec's cap and not decoded, meta and
        result are not read, and a field RQ cannot parse raises BadQueueEntry naming it."""
        fields = decode_redis_hash(raw_data)
        payload, exc_info = fields.pop("data", None), fields.pop("exc_info", None)
        for name in _UNREAD:
            fields.pop(name, None)
        if payload is None:
            raise BadQueueEntry(self.id, "its RQ record has no payload")
        if ignored := [name for name in _HOOKS if fields.get(name)]:
            log.warning("job %s: ignoring %s on its RQ record (only @resilient.job functions run)",
                        self.id, ", ".join(ignored))
        self._restore_fields(fields)
        try:
            self.data = inflate(payload, key=self.key)
            self._exc_info = inflate(exc_info, key=self.key).decode(errors="replace") if exc_info else None
        except CorruptCheckpoint as exc:
            raise BadQueueEntry(self.id, f"its RQ record is malformed: {exc}") from None

    def _restore_fields(self, fields: dict[str, Any]) -> None:
        try:
            super().restore({**fields, "data": b""})  # RQ would inflate the payload with no limit
        except Exception as exc:
            culprit = next((name for name in fields if self._restores_without(fields, name)), None)
            where = f"field {culprit}: " if culprit else ""
            raise BadQueueEntry(self.id, f"its RQ record is malformed: {where}{exc}") from None

    def _restores_without(self, fields: dict[str, Any], name: str) -> bool:
        try:
            super().restore({**{k: v for k, v in fields.items() if k != name}, "data": b""})
        except Exception:
            return False
        return True


def rq_queue(name: str, connection: redis.Redis) -> Queue:
    return Queue(name, connection=connection, serializer=MsgpackSerializer, job_class=ResilientJob)


def rq_keys(job_id: str, queue: Queue) -> list[str]:
    """RQ's keys for a refused entry of `job_id` on `queue`: its intermediate list, job hash, failed registry."""
    return [queue.intermediate_queue_key, ResilientJob.key_for(job_id), queue.failed_job_registry.key]


def rebuild_rq_job(job_id: str, name: str, queue: str, call: dict[str, Any], connection: redis.Redis,
                   ttl: int) -> None:
    """Save a new RQ record for a job whose own one expired (RQ's failure TTL), from what our hash keeps."""
    ResilientJob.create(name, args=call["args"], kwargs=call["kwargs"], connection=connection, id=job_id,
                        origin=queue, timeout=call["timeout"], result_ttl=ttl, failure_ttl=ttl,
                        serializer=MsgpackSerializer).save()


def fetch_rq_job(job_id: str, connection: redis.Redis) -> ResilientJob | None:
    try:
        job = ResilientJob.fetch(job_id, connection=connection, serializer=MsgpackSerializer)
        return cast(ResilientJob, job)  # RQ's fetch is typed as returning Job; it builds an instance of cls
    except Exception:  # missing, expired or corrupt: callers report what our own keys say
        return None
