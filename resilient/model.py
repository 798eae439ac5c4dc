"""The vocabulary as types: job statuses, memory levels, death causes, and the records that pass between
the parts. Plain data, no Redis, no RQ: every other module may import it."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .errors import ConfigError


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    PARKED = "parked"


FINAL_STATUSES = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.PARKED})


class Level(StrEnum):
    """How close memory is to the limit L, in rising order."""

    OK = "ok"
    SOFT = "soft"
    HARD = "hard"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return LEVELS.index(self)


LEVELS: tuple[Level, ...] = tuple(Level)


@dataclass(frozen=True)
class Thresholds:
    """Fractions of L where each level starts, and the PSI some-avg10 (%) that counts as pressure."""

    soft: float = 0.70
    hard: float = 0.85
    critical: float = 0.95
    psi_some_avg10: float = 10.0


DEFAULT_THRESHOLDS = Thresholds()


class Cause(StrEnum):
    """Why an attempt ended without a result. Crashes carry their detail: `crashed(...)`."""

    PREEMPTED_MEMORY = "preempted:memory"
    PREEMPTED_SHUTDOWN = "preempted:shutdown"
    PREEMPTED_REDIS = "preempted:redis"
    OOM_KERNEL = "oom:kernel"
    OOM_SELF = "oom:self"
    KILLED = "killed"
    STALLED = "stalled"
    STALE = "stale"
    LOST = "lost"


def crashed(detail: str) -> str:
    """The cause of any other end: `crashed:SIGSEGV`, `crashed:exit3`."""
    return f"crashed:{detail}"


PREEMPTIONS = frozenset({Cause.PREEMPTED_MEMORY, Cause.PREEMPTED_SHUTDOWN, Cause.PREEMPTED_REDIS})
MEMORY_CAUSES = frozenset({Cause.PREEMPTED_MEMORY, Cause.OOM_KERNEL, Cause.OOM_SELF})
NOT_COUNTED = PREEMPTIONS | {Cause.STALE}


@dataclass(frozen=True)
class Death:
    cause: str  # a Cause, or crashed(...)
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def for_neighbours(self) -> bool:
        """A memory death of a job that shared its limit and did not cross the hard line alone: its
        neighbours' doing as much as its own (see deaths.blame)."""
        return bool(self.evidence.get("for_neighbours"))

    @property
    def counts_toward_cap(self) -> bool:
        """Preemptions are the worker stepping aside on purpose: not failures; nor is a kernel kill that the
        job's neighbours brought about."""
        return self.cause not in NOT_COUNTED and not self.for_neighbours

    @property
    def is_memory(self) -> bool:
        """A memory death the job caused alone (the ones that may park it as too big for its limit)."""
        return self.cause in MEMORY_CAUSES and not self.for_neighbours

    @property
    def counts_as_attempt(self) -> bool:
        """Toward max_attempts: only what the job caused itself (not a shutdown, an outage, a superseded
        attempt, nor a step-aside or kill for its neighbours)."""
        return self.counts_toward_cap or self.is_memory

    @property
    def is_preemption(self) -> bool:
        return self.cause in PREEMPTIONS


@dataclass(frozen=True)
class Decision:
    """What follows a death: requeue (to `queue`, after `delay` seconds) or park (with `reason`)."""

    action: str  # "requeue" or "park"
    queue: str = ""
    reason: str = ""
    rerouted: bool = False
    delay: float = 0.0


@dataclass(frozen=True)
class JobOptions:
    """How a job is run and retried; set once with @resilient.job(...)."""

    queue: str = "default"
    checkpoint_every: float = 5.0
    max_attempts: int = 10
    max_deaths_without_progress: int = 3
    max_memory_deaths_at_same_checkpoint: int = 2
    timeout: int = -1  # seconds; -1: no time limit (batch jobs are long)
    on_oom_queue: str | None = None
    memory: int | None = None  # bytes of RSS the job needs at its peak, as declared (memory="300M")
    keep: int | None = None  # seconds its keys are kept once it has ended (keep="7d"); None: the settings'
    soft: float | None = None  # per-job memory thresholds; None: the worker's
    hard: float | None = None
    critical: float | None = None

    def __post_init__(self) -> None:
        if self.checkpoint_every < 0:
            raise ConfigError("checkpoint_every must be >= 0 seconds")
        if self.max_attempts < 1 or self.max_deaths_without_progress < 1:
            raise ConfigError("max_attempts and max_deaths_without_progress must be at least 1")


@dataclass(frozen=True)
class Attempt:
    """One run of a job: the epoch fences every write it makes."""

    job_id: str
    epoch: int
    attempt: int
    last_death: dict[str, Any] | None
    resumes_from: Checkpoint | None = None  # the checkpoint as it was when the attempt began


@dataclass(frozen=True)
class Checkpoint:
    seq: int
    data: bytes
    saved_at_ms: int


@dataclass(frozen=True)
class DeathCount:
    stuck: int  # deaths since the checkpoint seq last advanced
    memory_stuck: int  # memory deaths at the same seq
    seq: int
    attempt: int  # attempts that count toward max_attempts (see Death.counts_as_attempt)


@dataclass(frozen=True)
class Claim:
    """A lost attempt a reaper took over: its `lost` death is recorded and counted, and the job is held
    under `attempt` (a new epoch) until the reaper settles it by the job's `rules`."""

    attempt: Attempt
    death: Death
    count: DeathCount
    queue: str
    rules: JobOptions
