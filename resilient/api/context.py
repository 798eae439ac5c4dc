"""The Context a running job gets: its checkpoint, the safe point ctx.save(), ctx.iterate(), pressure."""

from __future__ import annotations

import time
from itertools import islice
from typing import Any, Callable, Iterable, Iterator, Protocol, Sized, TypeVar, cast

from ..errors import Preempted
from ..model import Attempt, Checkpoint, Death, JobOptions, Level
from ..ops import metrics
from ..storage.codec import decode, encode_state

T = TypeVar("T")

PROGRESS_WRITE_INTERVAL = 0.25  # seconds between progress writes that are not part of a checkpoint
FRESH_SAMPLE = 0.02  # seconds: ctx.save() samples memory itself when the governor's figure is older


class MemoryWatch(Protocol):
    """What the context needs from the memory governor."""

    @property
    def level(self) -> Level: ...

    sampled_at: float
    group_level: Level

    def sample(self) -> Level: ...

    def make_room(self) -> None: ...


class CheckpointStore(Protocol):
    """What the context writes through: storage.store.Store in a worker, an in-memory one in resilient.testing."""

    def save_checkpoint(self, attempt: Attempt, data: bytes, done: int | None = None,
                        total: int | None = None, durable: bool = False) -> int: ...

    def set_fields(self, attempt: Attempt, **fields: Any) -> None: ...

    def once_result(self, job_id: str, key: str) -> bytes | None: ...

    def record_once(self, attempt: Attempt, key: str, data: bytes) -> None: ...


# Called with (key, fn, args, kwargs) just before ctx.once runs a side effect: how resilient.testing counts them.
EffectHook = Callable[[str, Callable[..., Any], tuple[Any, ...], dict[str, Any]], None]


class Context:
    """Given to a job as its first argument. ctx.save() is the safe point: call it often, it is cheap."""

    def __init__(self, attempt: Attempt, store: CheckpointStore, options: JobOptions, checkpoint: Checkpoint | None,
                 max_checkpoint_bytes: int, governor: MemoryWatch | None = None,
                 clock: Callable[[], float] = time.monotonic, on_persist: Callable[[], None] | None = None,
                 on_effect: EffectHook | None = None) -> None:
        self._attempt = attempt
        self._store = store
        self._interval = options.checkpoint_every
        self._max_bytes = max_checkpoint_bytes
        self._governor = governor
        self._clock = clock
        self._on_persist = on_persist
        self._on_effect = on_effect
        self._state = decode(checkpoint.data, max_checkpoint_bytes, key=f"checkpoint of {attempt.job_id}") \
            if checkpoint else None
        self.seq = checkpoint.seq if checkpoint else 0
        self._next_due = clock() + self._interval
        self._stop_reason: str | None = None
        self._urgent = False
        self._level_seen = Level.OK
        self._done: int | None = None
        self._total: int | None = None
        self._progress_due = 0.0

    # --- what the job reads -------------------------------------------------------------------
    @property
    def checkpoint(self) -> Any:
        """The state this attempt resumed from (the last ctx.save that persisted), or None."""
        return self._state

    @property
    def attempt(self) -> int:
        """1 for the first run, 2 after one death, and so on."""
        return self._attempt.attempt

    @property
    def job_id(self) -> str:
        return self._attempt.job_id

    @property
    def previous_death(self) -> Death | None:
        """How the previous attempt ended (cause and evidence), or None on the first attempt."""
        record = self._attempt.last_death
        return Death(str(record.get("cause", "unknown")), record) if record else None

    @property
    def pressure(self) -> str:
        """'ok', 'soft' or 'hard': shrink batches when it is not 'ok'."""
        if self._governor is None:
            return str(Level.OK)
        level = self._governor.level
        return str(Level.HARD if level == Level.CRITICAL else level)

    # --- safe points --------------------------------------------------------------------------
    def save(self, state: Any, force: bool = False, durable: bool = False) -> None:
        """Validate and encode `state`; persist it when due (interval, force, pressure, shutdown).

        `durable`: persist it now, and with RESILIENT_DURABILITY=replica return only once a replica has it,
        so that a failover cannot lose it (before a side effect that must not be repeated, say).
        Raises CheckpointError for a state that cannot be stored, and Preempted after persisting when
        the worker wants this attempt to step aside (memory at the hard line, or shutdown).
        """
        data = encode_state(state, self._max_bytes)
        self._safe_point(state, lambda: data, force, durable)

    def _safe_point(self, state: Any, encoded: Callable[[], bytes], force: bool, durable: bool = False) -> None:
        # Every safe point comes through here (resilient.testing kills and preempts a job at this call).
        now = self._clock()
        governor = self._governor
        # Under pressure, or when the governor's last figure is older than a fast sample, read a fresh one:
        # a job can grow past the hard line between two of the thread's samples.
        if governor is not None and (governor.level != Level.OK or now - governor.sampled_at > FRESH_SAMPLE):
            self._check_memory()
        if force or durable or self._urgent or now >= self._next_due:
            self._persist(encoded(), state, durable)
        if self._stop_reason is not None:
            raise Preempted(self._stop_reason)

    def iterate(self, iterable: Iterable[Any]) -> Iterator[Any]:
        """Yield the items not done before; saves the position after each item (the source must be
        re-iterable and deterministic: a list, a range, a sorted listing)."""
        state = self._state if isinstance(self._state, dict) else {}
        position = int(state.get("position", 0))
        total = len(cast(Sized, iterable)) if hasattr(iterable, "__len__") else None
        for item in islice(iterable, position, None):
            yield item
            position += 1
            self._done, self._total = position, total
            # our own state is always storable: encode it only when it is persisted (~9 µs an item saved)
            state = {"position": position}
            self._safe_point(state, lambda: encode_state(state, self._max_bytes), force=False)

    def once(self, key: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call fn(*args, **kwargs) once for this job, across all its attempts, and return its result.

        The result is recorded (msgpack, like a checkpoint) under `key` once fn returns; a later call with
        the same key, in this attempt or after a resume, returns the recorded result without calling fn.
        At least once: a death between fn's return and the record (one Redis write) repeats it; give fn an
        idempotency key of its own (`key`, say) where the other side accepts one. `key` must name the effect
        the same way on every attempt (`f"mail:{user_id}"`, not a counter local to the attempt).
        """
        if not isinstance(key, str) or not key:
            raise TypeError(f"ctx.once needs a non-empty str key, got {key!r}")
        what = f"result of ctx.once({key!r})"
        recorded = self._store.once_result(self._attempt.job_id, key)
        if recorded is None:
            if self._on_effect is not None:
                self._on_effect(key, fn, args, kwargs)
            recorded = encode_state(fn(*args, **kwargs), self._max_bytes, what)
            self._store.record_once(self._attempt, key, recorded)
        return cast(T, decode(recorded, self._max_bytes, key=what))

    def final_progress(self) -> dict[str, int]:
        """The progress as it stands, for the job's end (writes during the run are throttled)."""
        if self._done is None:
            return {}
        return {"done": self._done, "total": -1 if self._total is None else self._total}

    def progress(self, done: int, total: int | None = None) -> None:
        """Report progress (shown by status/top); written with checkpoints and at most 4 times a second."""
        self._done, self._total = done, total
        now = self._clock()
        if now >= self._progress_due:
            self._progress_due = now + PROGRESS_WRITE_INTERVAL
            self._store.set_fields(self._attempt, done=done, total=-1 if total is None else total)

    # --- worker side --------------------------------------------------------------------------
    def request_stop(self, reason: str) -> None:
        """Ask the job to persist at its next safe point and step aside (safe in a signal handler)."""
        self._stop_reason = reason
        self._urgent = True

    def _check_memory(self) -> None:
        governor = self._governor
        if governor is None:
            return
        level = governor.sample()
        if level.rank < Level.HARD.rank <= governor.group_level.rank:  # a neighbour was chosen to step aside
            governor.make_room()
            level = governor.level
        if level.rank > self._level_seen.rank:
            self._urgent = True  # a rise in level: persist at this safe point
        self._level_seen = level
        if level.rank >= Level.HARD.rank:
            self.request_stop("memory")

    def _persist(self, data: bytes, state: Any, durable: bool = False) -> None:
        started = time.perf_counter()
        self.seq = self._store.save_checkpoint(self._attempt, data, self._done, self._total, durable)
        metrics.checkpoint_saved(time.perf_counter() - started)
        self._state = state
        self._urgent = False
        if self._on_persist is not None:
            self._on_persist()
        interval = self._interval / 4 if self._level_seen == Level.SOFT else self._interval
        self._next_due = self._clock() + interval
