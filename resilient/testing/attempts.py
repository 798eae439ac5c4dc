"""One attempt of a job in the current process: the real Context over a MemoryStore, with a monitor at every
safe point that counts them, keeps what the uninterrupted run leaves at each, and kills or preempts the
attempt at the one a plan names."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from ..api.context import Context
from ..api.registry import JobSpec
from ..errors import Preempted, ResilientError
from ..model import Attempt, Cause, Checkpoint, Death, JobOptions
from ..storage.codec import decode, encode_state
from .effects import EffectLog, name_of
from .store import MemoryStore, Persisted

KILLED, PREEMPTED = str(Cause.KILLED), str(Cause.PREEMPTED_MEMORY)


class Killed(BaseException):
    """A simulated SIGKILL at a safe point. A BaseException, like Preempted: a job must not catch it."""


class KitError(ResilientError):
    """The kit cannot check this job (it caught a simulated death, say): not a verdict on resuming."""


@dataclass(frozen=True)
class LocalJob:
    """A job and its arguments as a worker would get them: msgpack-encoded once, decoded fresh per attempt."""

    fn: Callable[..., Any]
    name: str
    options: JobOptions
    call: bytes
    max_bytes: int
    job_id: str = "local"

    @classmethod
    def of(cls, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any], max_bytes: int) -> "LocalJob":
        if isinstance(fn, JobSpec):
            return cls(fn.fn, fn.name, fn.options, encode_state([list(args), kwargs], max_bytes, "arguments"),
                       max_bytes, f"local:{fn.name}")
        if not callable(fn):
            raise TypeError(f"expected a @resilient.job or a function taking ctx first, got {fn!r}")
        name = f"{getattr(fn, '__module__', '')}.{name_of(fn)}"
        return cls(fn, name, JobOptions(), encode_state([list(args), kwargs], max_bytes, "arguments"), max_bytes,
                   f"local:{name}")

    def __call__(self, ctx: Context) -> Any:
        args, kwargs = decode(self.call, self.max_bytes, key="arguments")
        return self.fn(ctx, *args, **kwargs)


@dataclass
class Monitor:
    """Sees every safe point of one attempt before the Context does. Its clock advances one tick per safe
    point, so that with checkpoint_every = `persist_every` ticks a save persists every that many safe points."""

    store: MemoryStore
    effects: EffectLog
    kill_at: int = 0  # safe point (1-based, in this attempt) where the attempt is killed; 0: never
    preempt_at: int = 0  # ... where it is preempted for memory (persists, then steps aside)
    recording: bool = False  # keep what a death at each safe point would leave (the uninterrupted run)
    capture_states: bool = False  # ... and what a preemption there would persist
    tick: float = 1.0  # 0: the clock stands still, so only forced and durable saves persist
    reached: int = 0
    now: float = 0.0
    before: list[Persisted] = field(default_factory=list)  # [k-1]: what a kill at safe point k leaves
    preempted: list[Persisted] = field(default_factory=list)  # [k-1]: what a preemption at k leaves
    effects_before: list[int] = field(default_factory=list)  # [k-1]: effects performed before safe point k

    def clock(self) -> float:
        return self.now

    def at_safe_point(self, ctx: Context, encoded: Callable[[], bytes]) -> None:
        if self.store.dead:
            raise Killed  # a `finally` in the job after its death: a killed process runs none
        self.reached += 1
        self.now += self.tick
        if self.recording:
            self.record(encoded)
        if self.reached == self.kill_at:
            self.die()
        if self.reached == self.preempt_at:
            ctx.request_stop("memory")

    def record(self, encoded: Callable[[], bytes]) -> None:
        self.before.append(self.store.snapshot())
        self.effects_before.append(len(self.effects.performed))
        if self.capture_states:
            forced = Checkpoint(self.store.seq + 1, encoded(), 0)
            self.preempted.append(Persisted(forced, len(self.store.once)))

    def finish(self) -> None:
        """The job returned: a kill now (before its result is stored) leaves what is persisted now."""
        if self.recording:
            self.before.append(self.store.snapshot())
            self.effects_before.append(len(self.effects.performed))

    def die(self) -> None:
        self.store.dead = True
        self.effects.pause()
        raise Killed

    def once_ran(self, key: str, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if self.store.dead:
            raise Killed
        self.effects.once_ran(key, fn, args, kwargs)


class KitContext(Context):
    """The real Context; only its safe points are seen by the monitor first."""

    monitor: Monitor

    def _safe_point(self, state: Any, encoded: Callable[[], bytes], force: bool, durable: bool = False) -> None:
        self.monitor.at_safe_point(self, encoded)
        super()._safe_point(state, encoded, force, durable)


@dataclass(frozen=True)
class Ended:
    """How an attempt ended: a result (as a worker stores it: through msgpack), or a death."""

    result: Any = None
    death: Death | None = None
    safe_points: int = 0


def run_attempt(job: LocalJob, store: MemoryStore, number: int, previous: Death | None, monitor: Monitor,
                persist_every: int | None) -> Ended:
    """Run attempt `number` from what `store` holds. `persist_every` None: real time and the job's own
    checkpoint_every. Exceptions the job raises propagate."""
    store.dead = False  # a new process, the same Redis
    attempt = Attempt(job.job_id, number, number, previous.evidence if previous else None, store.checkpoint)
    options, clock = job.options, time.monotonic
    if persist_every is not None:
        options, clock = dataclasses.replace(job.options, checkpoint_every=float(persist_every)), monitor.clock
    ctx = KitContext(attempt, store, options, store.checkpoint, job.max_bytes, clock=clock,
                     on_effect=monitor.once_ran)
    ctx.monitor = monitor
    token = monitor.effects.collect()
    try:
        result = job(ctx)
    except Killed:
        return Ended(death=_death(KILLED, number, store, monitor), safe_points=monitor.reached)
    except Preempted as stop:
        if monitor.reached != monitor.preempt_at:
            raise
        return Ended(death=_death(f"preempted:{stop.reason}", number, store, monitor), safe_points=monitor.reached)
    finally:
        monitor.effects.stop(token)
    if store.dead or (monitor.preempt_at and monitor.reached >= monitor.preempt_at):
        raise KitError(f"{job.name} caught the simulated death at safe point {monitor.reached} and returned: "
                       "a SIGKILL or a Preempted cannot be caught (re-raise BaseException, or catch Exception only)")
    monitor.finish()
    encoded = encode_state(result, job.max_bytes, "result")
    return Ended(result=decode(encoded, job.max_bytes, key="result"), safe_points=monitor.reached)


def _death(cause: str, number: int, store: MemoryStore, monitor: Monitor) -> Death:
    seq = store.checkpoint.seq if store.checkpoint else 0
    return Death(cause, {"cause": cause, "attempt": number, "seq": seq, "safe_point": monitor.reached})
