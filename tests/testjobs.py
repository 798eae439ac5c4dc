"""Jobs the tests run on real workers. Each records what it did in Redis so tests can assert on it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import redis

import resilient


def _log(url: str, key: str, value: str) -> None:
    with redis.Redis.from_url(url) as r:
        r.rpush(key, value)


def _exists(url: str, key: str) -> bool:
    with redis.Redis.from_url(url) as r:
        return bool(r.exists(key))


@resilient.job(queue="tests", checkpoint_every=0.2)
def count_items(ctx: resilient.Context, url: str, n: int, delay: float = 0.01) -> int:
    """Sums 0..n-1 with ctx.iterate; logs 'attempt:item' for every item it processes."""
    total = ctx.checkpoint.get("sum", 0) if isinstance(ctx.checkpoint, dict) else 0
    state_position = ctx.checkpoint.get("position", 0) if isinstance(ctx.checkpoint, dict) else 0
    r = redis.Redis.from_url(url)
    for i in range(state_position, n):
        r.rpush(f"log:{ctx.job_id}", f"{ctx.attempt}:{i}")
        total += i
        time.sleep(delay)
        ctx.save({"position": i + 1, "sum": total})
    return total


@resilient.job(queue="tests", checkpoint_every=0.1)
def iterate_items(ctx: resilient.Context, url: str, n: int, delay: float = 0.005) -> int:
    """ctx.iterate over range(n); logs each processed item; returns the count of distinct items."""
    r = redis.Redis.from_url(url)
    for i in ctx.iterate(range(n)):
        r.rpush(f"log:{ctx.job_id}", f"{ctx.attempt}:{i}")
        time.sleep(delay)
    return n


@resilient.job(queue="tests", max_deaths_without_progress=3)
def die_at_once(ctx: resilient.Context, url: str) -> None:
    """Kills its own process before any checkpoint, every time."""
    _log(url, f"log:{ctx.job_id}", str(ctx.attempt))
    os.kill(os.getpid(), 9)


@resilient.job(queue="tests")
def side_effect(ctx: resilient.Context, url: str, key: str) -> str:
    _log(url, key, "ran")
    return "ran"


def record_callback(job, connection, *args) -> None:
    """Not a job: a plain importable function an attacker could name as an RQ callback on a job record."""
    connection.rpush("callbacks", job.id)


@resilient.job(queue="tests")
def raises(ctx: resilient.Context, message: str) -> None:
    raise ValueError(message)


@resilient.job(queue="tests", checkpoint_every=3600)
def slow_saver(ctx: resilient.Context, url: str, n: int) -> int:
    """Saves each item (persisting only when asked), logs items; used for shutdown tests."""
    start = ctx.checkpoint["position"] if ctx.checkpoint else 0
    for i in range(start, n):
        _log(url, f"log:{ctx.job_id}", f"{ctx.attempt}:{i}")
        time.sleep(0.02)
        ctx.save({"position": i + 1})
    return n


MiB = 1024 * 1024


@resilient.job(queue="tests", checkpoint_every=3600)
def leaky(ctx: resilient.Context, url: str, items: int, mb_per_item: int = 20) -> int:
    """Keeps `mb_per_item` MiB per item and never frees it; ctx.save() after each item."""
    kept = []
    start = ctx.checkpoint["position"] if ctx.checkpoint else 0
    for i in range(start, items):
        kept.append(b"x" * (mb_per_item * MiB))
        _log(url, f"log:{ctx.job_id}", f"{ctx.attempt}:{i}")
        ctx.save({"position": i + 1})
    return sum(range(items))


@resilient.job(queue="tests", checkpoint_every=3600)
def spike_once(ctx: resilient.Context, mb: int) -> dict:
    """Checkpoints, then on its first attempt touches `mb` MiB in one C call (no safe point, GIL held)."""
    if ctx.checkpoint is None:
        ctx.save({"stage": "before spike"}, force=True)
    if ctx.previous_death is None:
        spike = b"x" * (mb * MiB)
        del spike
    death = ctx.previous_death
    return {"attempt": ctx.attempt, "resumed_from": ctx.checkpoint, "previous": death.cause if death else None}


@resilient.job(queue="tests")
def always_too_big(ctx: resilient.Context, mb: int) -> None:
    """Touches `mb` MiB at once before any checkpoint, every attempt."""
    spike = b"x" * (mb * MiB)
    del spike


@resilient.job(queue="tests", checkpoint_every=3600)
def hold_ballast(ctx: resilient.Context, url: str, step_mb: int = 5) -> str:
    """Grows by `step_mb` MiB, calling ctx.save(), until ctx.pressure is no longer 'ok'; records what it saw."""
    ballast = []
    r = redis.Redis.from_url(url)
    n = 0
    while (seen := ctx.pressure) == "ok":
        n += 1
        ballast.append(b"x" * (step_mb * MiB))
        ctx.save({"n": n})
        time.sleep(0.01)
    ctx.save({"n": n})  # the first safe point under pressure: it persists although the interval is an hour
    r.rpush(f"log:{ctx.job_id}", f"{seen}:{ctx.seq}")
    del ballast  # from here on the governor may rightly see "ok" again: report what the loop saw
    return seen


@resilient.job(queue="tests", checkpoint_every=3600)
def grow_without_safe_points(ctx: resilient.Context, mb_per_step: int = 2) -> dict:
    """First attempt: checkpoints once, then grows steadily with no safe point; later attempts just finish."""
    if ctx.previous_death is None:
        ctx.save({"stage": "before growth"}, force=True)
        kept = []
        while True:
            kept.append(b"x" * (mb_per_step * MiB))
            time.sleep(0.005)
    return {"attempt": ctx.attempt, "previous": ctx.previous_death.cause}


@resilient.job(queue="tests", checkpoint_every=0.1)
def quiet_sum(ctx: resilient.Context, n: int, delay: float = 0.01) -> int:
    """Sums range(n) slowly, touching Redis only through ctx (so only resilient's own retries matter)."""
    return _sum_slowly(ctx, n, delay)


def _sum_slowly(ctx: resilient.Context, n: int, delay: float, durable_every: int = 0) -> int:
    state = ctx.checkpoint or {"i": 0, "total": 0}
    i, total = state["i"], state["total"]
    while i < n:
        time.sleep(delay)
        total += i
        i += 1
        ctx.save({"i": i, "total": total}, durable=bool(durable_every) and i % durable_every == 0)
    return int(total)


@resilient.job(queue="chaos", checkpoint_every=0.1, max_attempts=100, max_deaths_without_progress=5)
def chaos_sum(ctx: resilient.Context, url: str, n: int = 200, delay: float = 0.01) -> int:
    """Sum of i*i over ctx.iterate(range(n)); counts every item it processes in `chaos:items`."""
    r = redis.Redis.from_url(url)
    for i in ctx.iterate(range(n)):
        time.sleep(delay)
        r.incr("chaos:items")
    return sum(i * i for i in range(n))


@resilient.job(queue="tests", checkpoint_every=3600)
def preempt_once(ctx: resilient.Context, step_mb: int = 5) -> int:
    """First attempt grows (saving each step) until the worker preempts it; the next attempt just returns."""
    if ctx.previous_death is None:
        kept = []
        while True:
            kept.append(b"x" * (step_mb * MiB))
            time.sleep(0.02)  # 250 MB/s: the 100 ms governor sees soft before it could miss hard
            ctx.save({"steps": len(kept)})
    return ctx.attempt


@resilient.job(queue="tests", checkpoint_every=3600)
def preempt_then_spike(ctx: resilient.Context, step_mb: int = 5, spike_mb: int = 400) -> int:
    """Attempt 1 grows slowly until preempted; attempt 2 spikes past the limit (kernel OOM); 3 finishes."""
    if ctx.attempt == 1:
        kept = []
        while True:
            kept.append(b"x" * (step_mb * MiB))
            time.sleep(0.05)
            ctx.save({"steps": len(kept)})
    if ctx.attempt == 2:
        ctx.save({"stage": "before spike"}, force=True)  # progress: not "twice at the same checkpoint"
        time.sleep(1.2)  # let a memory sample of this attempt be recorded
        spike = b"x" * (spike_mb * MiB)
        del spike
    return ctx.attempt


@resilient.job(queue="tests")
def breaks_rq_bookkeeping(ctx: resilient.Context, url: str, key: str) -> str:
    """Runs (logged), then turns RQ's finished registry into a string: RQ's success bookkeeping fails."""
    _log(url, key, "ran")
    r = redis.Redis.from_url(url)
    r.delete("rq:finished:tests")
    r.set("rq:finished:tests", "not a sorted set")
    return "done"


@resilient.job(queue="tests", checkpoint_every=3600)
def hangs_once(ctx: resilient.Context) -> dict:
    """First attempt: one checkpoint, then the horse stops dead (SIGSTOP, like a C call that never returns)."""
    if ctx.previous_death is None:
        ctx.save({"stage": "before the hang"}, force=True)
        os.kill(os.getpid(), signal.SIGSTOP)
    return {"attempt": ctx.attempt, "resumed_from": ctx.checkpoint, "previous": ctx.previous_death.cause}


@resilient.job(queue="tests")
def leave_children(ctx: resilient.Context, url: str) -> int:
    """Starts a `sleep` child and a detached one (setsid, its parent gone), logs both pids; attempt 1 then
    dies by SIGKILL, attempt 2 returns."""
    child = subprocess.Popen(["sleep", "1000"])
    detach = ("import os, subprocess; os.setsid(); "
              "print(subprocess.Popen(['sleep', '1000'], stdout=subprocess.DEVNULL).pid)")
    detached = subprocess.run([sys.executable, "-c", detach], stdout=subprocess.PIPE, text=True, check=True)
    _log(url, f"pids:{ctx.job_id}", str(child.pid))
    _log(url, f"pids:{ctx.job_id}", detached.stdout.strip())
    if ctx.attempt == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return ctx.attempt


@resilient.job(queue="tests", checkpoint_every=0.2)
def child_then_work(ctx: resilient.Context, url: str, n: int = 400) -> int:
    """Starts a `sleep` child (logs its pid), then works through n slow items."""
    child = subprocess.Popen(["sleep", "1000"])
    _log(url, f"pids:{ctx.job_id}", str(child.pid))
    for _ in ctx.iterate(range(n)):
        time.sleep(0.01)
    return n


@resilient.job(queue="tests", memory="400M")
def declared_too_big(ctx: resilient.Context, url: str, key: str) -> str:
    """Declares a 400M peak; logs that it ran."""
    _log(url, key, "ran")
    return "ran"


@resilient.job(queue="tests", memory="2G")
def declared_huge(ctx: resilient.Context, url: str, key: str) -> str:
    """Declares a 2G peak; logs that it ran."""
    _log(url, key, "ran")
    return "ran"


@resilient.job(queue="tests", memory="400M", on_oom_queue="big")
def declared_big_with_a_big_queue(ctx: resilient.Context, url: str, key: str) -> str:
    """Declares a 400M peak and a queue for big jobs; logs that it ran."""
    _log(url, key, "ran")
    return "ran"


@resilient.job(queue="tests", checkpoint_every=0.5)
def batches(ctx: resilient.Context, n: int, mb: int, steps: int = 5, delay: float = 0.05) -> int:
    """ETL-shaped: each of `n` batches builds a working set of `mb` MiB in `steps` steps (a safe point
    after each), uses it, frees it. Returns the sum of the batch numbers; resumes at the batch it was in."""
    state = ctx.checkpoint or {"batch": 0, "sum": 0}
    batch, total = state["batch"], state["sum"]
    while batch < n:
        working = []
        for _ in range(steps):
            working.append(b"x" * (mb * MiB // steps))
            time.sleep(delay)
            ctx.save({"batch": batch, "sum": total})
        del working
        total += batch
        batch += 1
        ctx.save({"batch": batch, "sum": total})
    return int(total)


@resilient.job(queue="tests", checkpoint_every=0.5)
def growing(ctx: resilient.Context, items: int, mb_per_item: int, delay: float = 0.05) -> int:
    """Keeps `mb_per_item` MiB per item until it ends (what it holds is rebuilt on resume, as a job would
    reload its state); returns the sum of the item numbers."""
    done = ctx.checkpoint["position"] if ctx.checkpoint else 0
    kept = [b"x" * (mb_per_item * MiB) for _ in range(done)]
    for i in range(done, items):
        kept.append(b"x" * (mb_per_item * MiB))
        time.sleep(delay)
        ctx.save({"position": i + 1})
    return sum(range(items)) + 0 * len(kept)


@resilient.job(queue="tests", checkpoint_every=0.5)
def steady(ctx: resilient.Context, n: int, mb: int, delay: float = 0.05, gate: list[str] | None = None) -> int:
    """Holds `mb` MiB from the start while it goes through `n` items and then, given a gate ([url, key]),
    until that key exists (so a test can keep it running while something else happens); returns n."""
    held = b"x" * (mb * MiB)
    for _ in ctx.iterate(range(n)):
        time.sleep(delay)
    while gate and not _exists(*gate):
        time.sleep(delay)
    return n + 0 * len(held)


@resilient.job(queue="calm", checkpoint_every=0.5)
def calm_batches(ctx: resilient.Context, n: int, mb: int, steps: int = 5, delay: float = 0.05) -> int:
    """`batches` on a queue of its own (for a worker under another limit)."""
    return int(batches.fn(ctx, n, mb, steps, delay))


@resilient.job(queue="failover", checkpoint_every=0.1, max_attempts=50)
def durable_sum(ctx: resilient.Context, n: int, delay: float = 0.01, durable_every: int = 25) -> int:
    """quiet_sum whose every `durable_every`-th checkpoint is durable (ctx.save(durable=True))."""
    return _sum_slowly(ctx, n, delay, durable_every)


_KEPT_ACROSS_JOBS: list[bytes] = []  # module state: a reused job process keeps it from one job to the next


@resilient.job(queue="tests")
def keep_in_module(ctx: resilient.Context, mb: int) -> list[int]:
    """Adds `mb` MiB to a module-level list that is never emptied; returns [its pid, blocks held before]."""
    before = len(_KEPT_ACROSS_JOBS)
    _KEPT_ACROSS_JOBS.append(b"x" * (mb * MiB))
    return [os.getpid(), before]


def _mail(url: str, job_id: str, user: str) -> str:
    """Stands for a side effect that must happen once per user (a mail): logged in Redis."""
    _log(url, f"mails:{job_id}", user)
    return f"receipt:{user}"


@resilient.job(queue="tests", checkpoint_every=0.2)
def mail_each(ctx: resilient.Context, url: str, users: list[str], delay: float = 0.01) -> list[str]:
    """Mails every user once (ctx.once), however often it is killed; returns the receipts in order."""
    for user in ctx.iterate(users):
        ctx.once(f"mail:{user}", _mail, url, ctx.job_id, user)
        time.sleep(delay)
    return [ctx.once(f"mail:{user}", _mail, url, ctx.job_id, user) for user in users]  # recorded: none sent again
