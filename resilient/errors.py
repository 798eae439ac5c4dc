"""Every error resilient raises: one base class, typed subclasses carrying their data."""

from __future__ import annotations

from typing import Any


class ResilientError(Exception):
    """Base class of every error raised by resilient."""


class ConfigError(ResilientError):
    """A setting is missing or malformed (bad URL, bad size, bad fraction)."""


class RedisUnavailable(ResilientError):
    """The configured Redis server cannot be reached or rejected us. `final`: asking again cannot fix it
    (a refused password, a primary the sentinels do not know)."""

    def __init__(self, url: str, reason: str, final: bool = False) -> None:
        super().__init__(f"cannot use Redis at {url}: {reason}")
        self.url = url
        self.reason = reason
        self.final = final


class RedisFull(ResilientError):
    """Redis is above its high-water mark: a new job is refused before Redis would fail a running one."""


class ServerError(ResilientError):
    """The embedded server could not be started or stopped."""


class CheckpointError(ResilientError):
    """A state given to ctx.save() cannot be stored (wrong type or too big)."""

    def __init__(self, message: str, path: str = "state") -> None:
        super().__init__(message)
        self.path = path


class CorruptCheckpoint(ResilientError):
    """A stored checkpoint (or other record) could not be decoded."""

    def __init__(self, message: str, key: str = "") -> None:
        super().__init__(message)
        self.key = key


class UnknownJob(ResilientError):
    """A queue entry names a function that no @resilient.job registered."""

    def __init__(self, name: str) -> None:
        super().__init__(f"{name!r} is not a registered @resilient.job; refusing to run it")
        self.name = name


class BadQueueEntry(ResilientError):
    """A queue entry the worker refuses as it stands: a malformed RQ record, or a payload that is not
    msgpack, too big, or not shaped like a call."""

    queue: Any = None  # RQ's dequeue attaches the Queue to an error raised while fetching the job

    def __init__(self, job_id: str, reason: str) -> None:
        super().__init__(reason)
        self.job_id = job_id
        self.reason = reason


class JobFailed(ResilientError):
    """The job raised; carries RQ's exception text."""

    def __init__(self, job_id: str, detail: str) -> None:
        super().__init__(f"job {job_id} failed: {detail}")
        self.job_id = job_id
        self.detail = detail


class JobParked(ResilientError):
    """The job stopped being retried; carries the diagnosis."""

    def __init__(self, job_id: str, reason: str) -> None:
        super().__init__(f"job {job_id} parked: {reason}")
        self.job_id = job_id
        self.reason = reason


class JobTimeout(ResilientError):
    """JobHandle.result() waited longer than its timeout."""


class NoSuchJob(ResilientError):
    """No job with that id is known."""


class StaleAttempt(BaseException):
    """This attempt was superseded (its epoch is old): stop without writing anything.

    A BaseException so that user code's `except Exception` cannot swallow it.
    """


class Preempted(BaseException):
    """Raised at a safe point after the checkpoint was persisted: the worker will resume the job.

    A BaseException so that user code's `except Exception` cannot swallow it.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(f"preempted: {reason}")
        self.reason = reason


class CgroupUnavailable(ResilientError):
    """A memory cgroup cannot be created, joined or written; carries the group and why."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"cannot use memory cgroup {path}: {reason}")
        self.path = path
        self.reason = reason
