"""The job bodies the benchmark runs, once on resilient and once on plain rq.

Each body is a plain function whose first argument is a context. resilient runs it through the
@resilient.job wrappers made once in bench/resilient_jobs.py (msgpack arguments, a real Context).
This module does not import resilient: rq's forking worker imports the job module afresh in every
horse, so importing resilient here would charge rq ~25 ms per job that a real rq job module does
not pay. Plain rq runs the bodies with rq's default serializer (pickle): `noop` directly, `items` through
`items_on_rq` (no checkpoints at all), the others through `on_rq`, where `RqContext` stands in for ctx. It
keeps progress in `job.meta`, as an rq user would, and has no checkpoint to resume from unless
asked to read one back from `job.meta` (the hand-written resume some rq users try).

Bodies that the benchmark watches log one line per item to the Redis list `key`:
"<pid> <item> <unix time>". A new pid means a new run (a new horse); the time is when that item began.
"""

from __future__ import annotations

import os
import time
from itertools import islice
from typing import Any, Iterable, Iterator

import redis

MiB = 1 << 20


# --- the bodies ---------------------------------------------------------------------------------
def noop(ctx: Any) -> None:
    """Scenario 1: a trivial job."""
    return None


def items(ctx: Any, n: int, item_s: float) -> float:
    """Scenario 10, a realistic job: `n` items through ctx.iterate, each a busy loop until this thread has used
    `item_s` seconds of CPU (time.thread_time). Not a sleep: the item holds the core, as real work does. And
    not a loop until a wall-clock deadline, which would hide the time the worker's own threads or processes
    take from the job: here an item ends only once the job itself has had its `item_s` of CPU.
    Returns the CPU seconds its process (the horse, every thread) has used since it was forked."""
    for _ in ctx.iterate(range(n)):
        end = time.thread_time() + item_s
        while time.thread_time() < end:
            pass
    return time.process_time()


def count(ctx: Any, url: str, key: str, n: int, delay: float) -> int:
    """Scenarios 4 and 5: `n` items of `delay` seconds each, through ctx.iterate."""
    log = redis.Redis.from_url(url)
    pid = os.getpid()
    for i in ctx.iterate(range(n)):
        log.rpush(key, f"{pid} {i} {time.time()}")
        time.sleep(delay)
    return n


def leak(ctx: Any, url: str, key: str, items: int, mb: int) -> int:
    """Scenario 6: keeps `mb` MiB per item and never frees it; ctx.save() after every item."""
    log = redis.Redis.from_url(url)
    pid = os.getpid()
    kept = []
    start = ctx.checkpoint["position"] if ctx.checkpoint else 0
    for i in range(start, items):
        kept.append(b"x" * (mb * MiB))
        log.rpush(key, f"{pid} {i} {time.time()}")
        ctx.save({"position": i + 1})
    return items


def batches(ctx: Any, url: str, key: str, n: int, mb: int, steps: int, delay: float) -> int:
    """Scenario 8, ETL-shaped: each of `n` batches builds a working set of `mb` MiB in `steps` steps (extract),
    uses it for as many steps (transform, load), then frees it; a safe point (ctx.save) after every step.
    Logs each batch as it begins; resumes at the batch its checkpoint names (rq's stand-in has none: it
    starts again at batch 0). Returns the sum of the batch numbers."""
    log = redis.Redis.from_url(url)
    pid = os.getpid()
    state = ctx.checkpoint or {"batch": 0, "sum": 0}
    batch, total = int(state["batch"]), int(state["sum"])
    while batch < n:
        log.rpush(key, f"{pid} {batch} {time.time()}")
        working = []
        for step in range(2 * steps):
            if step < steps:
                working.append(b"x" * (mb * MiB // steps))
            time.sleep(delay)
            ctx.save({"batch": batch, "sum": total})
        del working
        total += batch
        batch += 1
        ctx.save({"batch": batch, "sum": total})
    return total


def idle(ctx: Any, url: str, key: str, seconds: float) -> None:
    """Scenario 7: logs its pid, then sleeps without a safe point (only the governor, if any, runs)."""
    redis.Redis.from_url(url).rpush(key, f"{os.getpid()} 0 {time.time()}")
    time.sleep(seconds)


# --- plain rq ------------------------------------------------------------------------------------
BODIES = {"count": count, "leak": leak, "idle": idle, "batches": batches}


def on_rq(body: str, *args: Any, resume_from_meta: bool = False) -> Any:
    """The rq entry point for the bodies that use ctx: runs BODIES[body] with an RqContext."""
    from rq import get_current_job

    job = get_current_job()
    assert job is not None, "on_rq runs inside an rq job"
    return BODIES[body](RqContext(job, resume_from_meta), *args)


def items_on_rq(n: int, item_s: float) -> float:
    """The rq entry point for `items`, with no checkpoints at all: what the job costs without resilient."""
    return items(NoCheckpoints(), n, item_s)


class NoCheckpoints:
    """A ctx whose iterate() hands the items over as they are: no progress kept anywhere."""

    def iterate(self, values: Iterable[Any]) -> Iterator[Any]:
        return iter(values)


class RqContext:
    """What an rq user writes by hand: progress in job.meta; no checkpoint unless read back from meta."""

    def __init__(self, job: Any, resume_from_meta: bool = False) -> None:
        self._job = job
        self.checkpoint = job.meta.get("checkpoint") if resume_from_meta else None

    @property
    def job_id(self) -> str:
        return str(self._job.id)

    def save(self, state: Any, force: bool = False) -> None:
        self._job.meta["checkpoint"] = state
        self._job.save_meta()

    def iterate(self, items: Iterable[Any]) -> Iterator[Any]:
        position = int(self.checkpoint.get("position", 0)) if isinstance(self.checkpoint, dict) else 0
        for item in islice(items, position, None):
            yield item
            position += 1
            self.save({"position": position})
