"""resilient: batch jobs on Redis that survive running out of memory.

    @resilient.job(queue="etl", checkpoint_every=5.0)
    def reindex(ctx, dataset): ...
    handle = reindex.enqueue("orders"); handle.result(timeout=600)
"""

from .api.client import Client, default_client, set_default_client
from .api.context import Context
from .api.handle import JobHandle
from .api.registry import JobSpec, job
from .errors import (
    CheckpointError,
    ConfigError,
    CorruptCheckpoint,
    JobFailed,
    JobParked,
    JobTimeout,
    NoSuchJob,
    Preempted,
    RedisUnavailable,
    ResilientError,
    UnknownJob,
)
from .model import Death, JobOptions

__all__ = [
    "CheckpointError", "Client", "ConfigError", "Context", "CorruptCheckpoint", "Death", "JobFailed",
    "JobHandle", "JobOptions", "JobParked", "JobSpec", "JobTimeout", "NoSuchJob", "Preempted",
    "RedisUnavailable", "ResilientError", "UnknownJob", "default_client", "job", "set_default_client",
]
