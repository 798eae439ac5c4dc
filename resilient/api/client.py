"""Client: enqueue jobs and look them up, on one Redis connection."""

from __future__ import annotations

import threading
import uuid
from typing import Any, Iterable

import redis
from rq.job import validate_job_id
from rq.queue import Queue

from ..config import Settings
from ..errors import ConfigError
from ..runtime.rqjob import rq_queue
from ..storage.codec import encode, encode_state
from ..storage.connection import open_redis
from ..storage.redis_settings import HighWater
from ..storage.store import Store
from .handle import JobHandle
from .registry import JobSpec

_default: "Client | None" = None
_default_lock = threading.Lock()


class Client:
    def __init__(self, connection: redis.Redis, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.connection = connection
        self.store = Store(connection, self.settings)
        self.high_water = HighWater(connection, self.settings.redis_high_water)
        self._queues: dict[str, Queue] = {}

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> "Client":
        """Connect to REDIS_URL (or the embedded server when none is set); RedisUnavailable if we can't."""
        settings = settings or Settings.from_env()
        connection, _ = open_redis(settings)
        return cls(connection, settings)

    @classmethod
    def from_url(cls, url: str, **settings: Any) -> "Client":
        return cls.from_settings(Settings.from_env(redis_url=url, **settings))

    def enqueue(self, spec: JobSpec, args: tuple[Any, ...], kwargs: dict[str, Any],
                job_id: str | None = None) -> JobHandle:
        """Queue one run of `spec`, in one step (see Store.create_job); arguments must be msgpack-able
        (CheckpointError names the bad one). ConfigError for an id RQ would refuse or one already used,
        RedisFull above the high-water mark (then nothing is written)."""
        self.high_water.check()
        job_id = uuid.uuid4().hex if job_id is None else _checked_id(job_id)
        if not self.store.create_job(**self._new_job(spec, args, kwargs, job_id)):
            raise ConfigError(f"job id {job_id!r} is already used; pick another (or `resilient requeue` it)")
        return JobHandle(job_id, self.store)

    def enqueue_many(self, spec: JobSpec, calls: Iterable[tuple[Any, ...] | dict[str, Any]]) -> list[JobHandle]:
        """Queue one run of `spec` per call (a tuple of positional arguments, or a dict of keyword
        arguments), each in one step, all in one round trip. Every call is checked before anything is
        written."""
        self.high_water.check()
        jobs = [self._new_job(spec, *_split(call), uuid.uuid4().hex) for call in calls]
        with self.connection.pipeline(transaction=False) as pipe:
            for job in jobs:
                self.store.create_job(**job, pipeline=pipe)
            pipe.execute()
        return [JobHandle(job["job_id"], self.store) for job in jobs]

    def _new_job(self, spec: JobSpec, args: tuple[Any, ...], kwargs: dict[str, Any],
                 job_id: str) -> dict[str, Any]:
        """Store.create_job's arguments for a new job: our record's fields and RQ's, as RQ would save it."""
        spec.check_call(args, kwargs)
        max_bytes = self.settings.max_checkpoint_bytes
        encode_state(list(args), max_bytes, what="args")
        encode_state(kwargs, max_bytes, what="kwargs")
        options = spec.options
        queue = self._queue(options.queue)
        rq_job = queue.create_job(spec.name, args=args, kwargs=kwargs, job_id=job_id, timeout=options.timeout,
                                  result_ttl=self.settings.result_ttl, failure_ttl=self.settings.result_ttl)
        queue._prepare_for_queue(rq_job)  # RQ private (pinned in test_rq_pins): what its enqueue sets first
        call = encode({"args": list(args), "kwargs": kwargs, "timeout": options.timeout})
        return {"job_id": job_id, "name": spec.name, "queue": options.queue, "max_attempts": options.max_attempts,
                "max_stuck": options.max_deaths_without_progress, "call": call,
                "max_mem_stuck": options.max_memory_deaths_at_same_checkpoint, "on_oom_queue": options.on_oom_queue,
                "keep": options.keep, "rq_fields": rq_job.to_dict()}

    def _queue(self, name: str) -> Queue:
        if name not in self._queues:
            self._queues[name] = rq_queue(name, self.connection)
        return self._queues[name]

    def handle(self, job_id: str) -> JobHandle:
        return JobHandle(job_id, self.store)


def default_client() -> Client:
    """The client fn.enqueue() uses: made on first use from the environment, never at import."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Client.from_settings()
        return _default


def set_default_client(client: Client | None) -> None:
    global _default
    with _default_lock:
        _default = client


def _split(call: tuple[Any, ...] | dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    if isinstance(call, dict):
        return (), call
    if isinstance(call, tuple):
        return call, {}
    raise ConfigError(f"each call of enqueue_many is a tuple of arguments or a dict of keyword arguments, "
                      f"not {type(call).__name__}")


def _checked_id(job_id: str) -> str:
    try:
        validate_job_id(job_id)
    except (TypeError, ValueError):
        raise ConfigError(f"job id {job_id!r} is invalid: use only letters, digits, '_' and '-'") from None
    return job_id
