"""assert_resumable: kill a job at every safe point (or a seeded sample of them), resume it as a worker
would, and compare its result and its effects with an uninterrupted run.

The attempt that dies is the uninterrupted run itself up to the death (a resumable job is deterministic:
ctx.iterate requires it), so only the resumed attempts run again: checking every safe point of a job with
N of them costs about N²/2 safe points, not N².
"""

from __future__ import annotations

import random
import reprlib
import time
from dataclasses import dataclass
from typing import Any, Callable, NoReturn

from ..model import Checkpoint, Death
from ..storage.codec import decode
from .attempts import KILLED, PREEMPTED, KitError, LocalJob, Monitor, run_attempt
from .effects import EffectLog
from .store import MemoryStore

Step = tuple[str, int]  # how an attempt dies (KILLED or PREEMPTED) and at which of its safe points
_short = reprlib.Repr()
_short.maxstring, _short.maxother, _short.maxlist, _short.maxdict, _short.maxlevel = 80, 80, 10, 10, 4


class NotResumable(AssertionError):
    """A job that gave another result, raised, or repeated or lost an effect after a resume. The fields say
    where: the deaths in order, the state the (last) resumed attempt started from, and both results."""

    __module__ = "resilient.testing"  # as the user imports it, in pytest's output

    def __init__(self, message: str, deaths: list[str], resumed_from: Any, result: Any, expected: Any,
                 effects: list[str]) -> None:
        super().__init__(message)
        self.deaths, self.resumed_from, self.result, self.expected = deaths, resumed_from, result, expected
        self.effects = effects


@dataclass(frozen=True)
class Report:
    """What assert_resumable checked: `checked` death plans over `safe_points` safe points (seed: when
    sampled)."""

    job: str
    result: Any
    safe_points: int
    checked: int
    seed: int | None
    seconds: float


@dataclass(frozen=True)
class _Reference:
    result: Any
    safe_points: int
    monitor: Monitor
    store: MemoryStore
    effects: list[str]
    calls: dict[str, str]


def assert_resumable(fn: Any, *args: Any, kwargs: dict[str, Any] | None = None, deaths: int = 1,
                     memory: bool = False, persist_every: int = 1, max_points: int = 2000, seed: int | None = None,
                     equal: Callable[[Any, Any], bool] | None = None,
                     max_checkpoint_bytes: int = 16 * 1024 * 1024) -> Report:
    """Run `fn(ctx, *args, **kwargs)` uninterrupted, then once per safe point k with a death at k, resumed
    from what was persisted; raise NotResumable unless each run returns the same result and performs each
    effect (ctx.once, record_effect) as often as the uninterrupted one.

    deaths: deaths per run (more than 1: a seeded sample of plans). memory: also preempt for memory at each
    safe point (a forced save, then the attempt steps aside). persist_every: a save persists every this many
    safe points (time is replaced by a count of safe points; forced and durable saves persist at once).
    max_points: above this many death points, check a seeded sample (the seed is printed; pass it back to
    repeat). equal: compares two results (default ==).
    """
    __tracebackhide__ = True  # pytest shows the caller's line and the message, not the kit's frames
    started = time.perf_counter()
    if deaths < 1 or persist_every < 1 or max_points < 1:
        raise ValueError("deaths, persist_every and max_points must be at least 1")
    job = LocalJob.of(fn, args, kwargs or {}, max_checkpoint_bytes)
    reference = _reference(job, persist_every, memory)
    plans, used_seed = _plans(reference.safe_points, deaths, memory, max_points, seed)
    if used_seed is not None:
        print(f"resilient.testing: {job.name}: {len(plans)} death plans over {reference.safe_points} safe points, "
              f"seed={used_seed}")
    same = equal or (lambda a, b: bool(a == b))
    for plan in plans:
        _check(job, reference, plan, persist_every, same, used_seed)
    return Report(job.name, reference.result, reference.safe_points, len(plans), used_seed,
                  time.perf_counter() - started)


def _reference(job: LocalJob, persist_every: int, memory: bool) -> _Reference:
    store, effects = MemoryStore(), EffectLog()
    monitor = Monitor(store, effects, recording=True, capture_states=memory)
    ended = run_attempt(job, store, 1, None, monitor, persist_every)
    return _Reference(ended.result, ended.safe_points, monitor, store, effects.performed, effects.calls)


def _plans(safe_points: int, deaths: int, memory: bool, max_points: int,
           seed: int | None) -> tuple[list[list[Step]], int | None]:
    """Every death point (a kill at each safe point and after the last one; with `memory`, a preemption at
    each), or a seeded sample; with several deaths, a seeded sample of plans whose later deaths fall in the
    resumed attempts."""
    points: list[Step] = [(KILLED, k) for k in range(1, safe_points + 2)]
    if memory:
        points += [(PREEMPTED, k) for k in range(1, safe_points + 1)]
    if deaths == 1 and len(points) <= max_points:
        return [[point] for point in sorted(points, key=lambda p: p[1])], None
    used_seed = seed if seed is not None else random.SystemRandom().randrange(2**32)
    rng = random.Random(used_seed)
    if deaths == 1:
        return [[point] for point in sorted(rng.sample(points, max_points), key=lambda p: p[1])], used_seed
    modes = [KILLED, PREEMPTED] if memory else [KILLED]
    plans = []
    for _ in range(min(max_points, len(points))):
        first = rng.choice(points)
        span = max(1, (safe_points + 1 - first[1]) // (deaths - 1))
        plans.append([first, *((rng.choice(modes), rng.randint(1, span)) for _ in range(deaths - 1))])
    return plans, used_seed


def _check(job: LocalJob, reference: _Reference, plan: list[Step], persist_every: int,
           equal: Callable[[Any, Any], bool], seed: int | None) -> None:
    __tracebackhide__ = True
    how, point = plan[0]
    left = (reference.monitor.before if how == KILLED else reference.monitor.preempted)[point - 1]
    store = left.restore(reference.store)
    effects = EffectLog(reference.effects[:reference.monitor.effects_before[point - 1]], dict(reference.calls))
    story = [_first_death(how, point, reference.safe_points)]
    previous = Death(how, {"cause": how, "attempt": 1, "seq": store.seq, "safe_point": point})
    later, number = list(plan[1:]), 2
    while True:
        story.append(_resumed(number, store, job))
        resumed_from = store.checkpoint
        how, point = later.pop(0) if later else ("", 0)
        # The last attempt persists only forced and durable saves: nothing reads its checkpoints, and a job's
        # result cannot depend on when its saves persist (a worker's cadence is time, any cadence is possible).
        monitor = Monitor(store, effects, kill_at=point if how == KILLED else 0,
                          preempt_at=point if how == PREEMPTED else 0, tick=1.0 if how else 0.0)
        try:
            ended = run_attempt(job, store, number, previous, monitor, persist_every)
        except KitError:
            raise
        except Exception as exc:
            _fail(job, story, resumed_from, f"raised {type(exc).__name__}: {exc}", reference, effects, seed)
        if ended.death is None:
            break
        verb = "killed" if ended.death.cause == KILLED else "preempted for memory"
        story.append(f"{verb} at safe point {ended.safe_points} of attempt {number}")
        previous, number = ended.death, number + 1
    if not equal(ended.result, reference.result) or effects.differences(reference.effects):
        _fail(job, story, resumed_from, f"returned {_short.repr(ended.result)}", reference, effects, seed,
              ended.result)


def _first_death(how: str, point: int, safe_points: int) -> str:
    if how == PREEMPTED:
        return f"preempted for memory at safe point {point} of {safe_points} (after a forced save)"
    if point > safe_points:
        return f"killed after its last safe point ({safe_points}), before its result was stored"
    return f"killed at safe point {point} of {safe_points}"


def _resumed(number: int, store: MemoryStore, job: LocalJob) -> str:
    if store.checkpoint is None:
        return f"attempt {number} started over (nothing was persisted)"
    state = decode(store.checkpoint.data, job.max_bytes)
    return f"attempt {number} resumed from checkpoint seq {store.checkpoint.seq}: {_short.repr(state)}"


def _fail(job: LocalJob, story: list[str], resumed_from: Checkpoint | None, outcome: str, reference: _Reference,
          effects: EffectLog, seed: int | None, result: Any = None) -> NoReturn:
    __tracebackhide__ = True
    effect_lines = effects.differences(reference.effects)
    lines = [f"{job.name} is not resumable: {'; '.join(story)}",
             f"  {outcome}", f"  the uninterrupted run returned {_short.repr(reference.result)}",
             *(f"  {line}" for line in effect_lines)]
    if seed is not None:
        lines.append(f"  (seed={seed}: pass it to assert_resumable to check the same deaths again)")
    state = decode(resumed_from.data, job.max_bytes) if resumed_from is not None else None
    raise NotResumable("\n".join(lines), story, state, result, reference.result, effect_lines)
