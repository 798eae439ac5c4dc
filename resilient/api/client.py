"""Client: enqueue jobs and look them up, on one Redis connection."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import redis
from rq.job import validate_job_id

from ..config import Settings
from ..errors import ConfigError
from ..runtime.rqjob import rq_queue
from ..storage import keys
from ..storage.codec import encode_state
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
        """Queue one run of `spec`; arguments must be msgpack-able (CheckpointError names the bad one).
        ConfigError for an id RQ would refuse or one already used, RedisFull above the high-water mark (then
        nothing is written)."""
        self.high_water.check()
        encode_state(list(args), self.settings.max_checkpoint_bytes, what="args")
        encode_state(kwargs, self.settings.max_checkpoint_bytes, what="kwargs")
        job_id = uuid.uuid4().hex if job_id is None else _checked_id(job_id)
        options = spec.options
        queue = rq_queue(options.queue, self.connection)
        rq_job = queue.create_job(spec.name, args=args, kwargs=kwargs, job_id=job_id, timeout=options.timeout,
                                  result_ttl=self.settings.result_ttl, failure_ttl=self.settings.result_ttl)
        taken = ConfigError(f"job id {job_id!r} is already used; pick another (or `resilient requeue` it)")
        try:
            with self.connection.pipeline() as pipe:
                # another enqueue of this id, even now, writes nothing (redis-py leaves watch untyped)
                pipe.watch(keys.job(job_id), rq_job.key)  # type: ignore[no-untyped-call]
                if pipe.exists(keys.job(job_id), rq_job.key):
                    raise taken
                pipe.multi()
                self.store.create_job(job_id, spec.name, options.queue, options.max_attempts,
                                      options.max_deaths_without_progress, pipeline=pipe,
                                      call={"args": list(args), "kwargs": kwargs, "timeout": options.timeout},
                                      max_mem_stuck=options.max_memory_deaths_at_same_checkpoint,
                                      on_oom_queue=options.on_oom_queue, keep=options.keep)
                queue.enqueue_job(rq_job, pipeline=pipe)
                pipe.execute()
        except redis.WatchError:
            raise taken from None
        return JobHandle(job_id, self.store)

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


def _checked_id(job_id: str) -> str:
    try:
        validate_job_id(job_id)
    except (TypeError, ValueError):
        raise ConfigError(f"job id {job_id!r} is invalid: use only letters, digits, '_' and '-'") from None
    return job_id
