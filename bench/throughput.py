"""Scenario 1: trivial jobs drained by one burst worker, then by two on one queue; enqueue rate as a side
figure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from typing import Any, Callable

from rq import Queue

from . import jobs, resilient_jobs
from .harness import Env, Proc, median, resilient_worker, rq_worker, stop_all
from .report import Aim, Result, Row, ratio

RQ_QUEUE = "rq-noop"
AIM = 0.9  # enqueue, one by one and in a batch
FORKING_AIM = 1.0
REUSED_AIM = 2.5
REUSE_FLAGS = ("--jobs-per-process", "100")


def run(env: Env) -> Result:
    n, reps = (50, 1) if env.quick else (2000, 3)
    kinds = ("resilient", "rq", "rq_simple", "resilient_x2", "rq_x2", "resilient_reused")
    drain: dict[str, list[float]] = {k: [] for k in kinds}
    enqueue: dict[str, list[float]] = {k: [] for k in kinds}
    wall: dict[str, list[float]] = {k: [] for k in kinds}
    commands: dict[str, list[str]] = {}
    for _ in range(reps):
        for kind in kinds:  # interleaved, so drift on the machine hits all of them alike
            env.fresh()
            enqueue_one = _enqueuer(env, kind)
            start = time.perf_counter()
            ids = [enqueue_one() for _ in range(n)]
            enqueue[kind].append(n / (time.perf_counter() - start))
            start = time.perf_counter()
            workers = [_worker(env, kind, i) for i in range(2 if kind.endswith("_x2") else 1)]
            commands[kind] = [w.command for w in workers]
            try:
                for worker in workers:
                    worker.wait(timeout=30 + n / 10)
            finally:
                stop_all(workers)
            wall[kind].append(time.perf_counter() - start)
            drain[kind].append(_drain_rate(env, ids) if len(workers) == 1 else _drain_rate_together(env, ids))
    res, rq, simple, res2, rq2, reused = (median(drain[k]) for k in kinds)
    enqueue_res, enqueue_rq = median(enqueue["resilient"]), median(enqueue["rq"])
    batch = {kind: median([_enqueue_batch(env, kind, 10 * n) for _ in range(reps)]) for kind in ("resilient", "rq")}
    result = Result(raw={"jobs": n, "repeats": reps, "drain_jobs_per_s": drain, "enqueue_jobs_per_s": enqueue,
                         "worker_wall_s": wall, "worker_commands": commands})
    result.rows += [
        Row(f"1. throughput, {n} trivial jobs, 1 forking worker (jobs/s)", f"{res:.0f}", f"{rq:.0f}",
            ratio(res, rq)),
        Row("1. throughput, rq SimpleWorker (no fork; reference)", "", f"{simple:.0f}", ratio(res, simple)),
        Row(f"1. throughput, reused processes ({' '.join(REUSE_FLAGS)}) vs rq's forking Worker (jobs/s)",
            f"{reused:.0f}", f"{rq:.0f}", ratio(reused, rq)),
        Row("1. throughput, two workers on two cores, one queue (jobs/s)", f"{res2:.0f} ({res2 / res:.2f}× one)",
            f"{rq2:.0f} ({rq2 / rq:.2f}× one)", ratio(res2, rq2)),
        Row("1. enqueue one by one (jobs/s)", f"{enqueue_res:.0f}", f"{enqueue_rq:.0f}",
            ratio(enqueue_res, enqueue_rq)),
        Row(f"1. enqueue {10 * n} in one batch: fn.enqueue_many vs rq Queue.enqueue_many (jobs/s)",
            f"{batch['resilient']:.0f}", f"{batch['rq']:.0f}", ratio(batch["resilient"], batch["rq"])),
    ]
    result.raw["enqueue_batch_jobs_per_s"] = batch
    for what, ours, theirs in (("one by one", enqueue_res, enqueue_rq), ("in one batch", batch["resilient"],
                                                                         batch["rq"])):
        result.aims.append(Aim(f"1. enqueue {what}", f"≥ {AIM}× rq", ratio(ours, theirs), ours >= AIM * theirs, ""))
    result.notes.append(
        f"1: burst workers, default flags otherwise: `{commands['resilient'][0]}`; `{commands['rq'][0]}`; "
        f"`{commands['rq_simple'][0]}`. Two workers: two such processes (resilient: "
        f"`{commands['resilient_x2'][0]}` twice; rq: `{commands['rq_x2'][0]}` twice) started together on one "
        f"queue of {n} jobs, rate counted over the time both were taking jobs; on this {os.cpu_count()}-core "
        "machine they share the cores with the server and the bench itself.")
    where = where_the_time_goes(env, res, rq)
    result.raw["where_the_time_goes"] = where
    met = res >= FORKING_AIM * rq
    result.aims.append(Aim("1. throughput", f"≥ {FORKING_AIM}× rq's forking Worker", ratio(res, rq), met,
                           "" if met else where["summary"]))
    result.aims.append(Aim("1. throughput, reused processes", f"≥ {REUSED_AIM}× rq's forking Worker",
                           ratio(reused, rq), reused >= REUSED_AIM * rq,
                           f"`{commands['resilient_reused'][0]}`"))
    return result


def where_the_time_goes(env: Env, res: float, rq: float) -> dict[str, Any]:
    """Split a job's time into work-loop phases for both workers (bench/overhead.py), and rank the
    resilient functions that take the extra time (under cProfile)."""
    n = 30 if env.quick else 300
    figures = {kind: _overhead(env, kind, str(n), *(["--profile"] if kind == "resilient" else []))
               for kind in ("rq", "resilient")}
    r, q = figures["resilient"]["phases"], figures["rq"]["phases"]
    profile = figures["resilient"]["profile_ms_per_job"]
    top = {part: ", ".join(f"{fn} {ms_:.1f}" for fn, ms_ in list(profile[part].items())[:4])
           for part in ("horse", "parent")}
    summary = (
        f"{(1 / res - 1 / rq) * 1000:.1f} ms more per job. In-process ({n} jobs, ms per job, resilient vs "
        "rq): "
        f"horse from fork to reaped {r['horse, fork to reaped']:.1f} vs {q['horse, fork to reaped']:.1f}; "
        f"parent: dequeue {r['dequeue']:.1f} vs {q['dequeue']:.1f}, around the horse "
        f"{r['execute, parent side']:.1f} vs {q['execute, parent side']:.1f}; heartbeat() runs "
        f"{r['heartbeat calls']:.0f}× per job and takes {r['heartbeat']:.1f} vs {q['heartbeat']:.1f} in all. "
        f"Largest resilient functions under cProfile (ms per job, profiler-inflated), horse: {top['horse']}; "
        f"parent: {top['parent']}")
    return {**figures, "summary": summary}


def _overhead(env: Env, *args: str) -> dict[str, Any]:
    argv = [sys.executable, "-m", "bench.overhead", env.url, *args]
    done = subprocess.run(argv, env=env.subprocess_env(), capture_output=True, text=True, timeout=300,
                          check=True)
    return json.loads(done.stdout)


def _worker(env: Env, kind: str, number: int) -> Proc:
    """A burst worker of `kind` (the _x2 kinds run two of them: `number` 0 and 1)."""
    if kind.startswith("resilient"):
        flags = REUSE_FLAGS if kind == "resilient_reused" else ()
        return resilient_worker(env, resilient_jobs.NOOP_QUEUE, *flags, name=f"resilient-{number}")
    flags = ("-w", "rq.worker.SimpleWorker") if kind == "rq_simple" else ()
    return rq_worker(env, RQ_QUEUE, *flags, name=f"rq-{number}")


def _enqueuer(env: Env, kind: str) -> Callable[[], str]:
    """Enqueue one trivial job, returning its id; the client is made before (an application makes it once)."""
    if kind.startswith("resilient"):
        from resilient import Client

        client = Client.from_url(env.url)
        return lambda: resilient_jobs.noop_job.enqueue_call((), client=client).id
    queue = Queue(RQ_QUEUE, connection=env.redis)
    return lambda: queue.enqueue(jobs.noop, None).id


def _enqueue_batch(env: Env, kind: str, n: int) -> float:
    """Jobs per second for one batch of `n` trivial jobs, each system's batch form (one pipeline)."""
    env.fresh()
    from resilient import Client

    client, queue = Client.from_url(env.url), Queue(RQ_QUEUE, connection=env.redis)
    client.connection.ping()
    start = time.perf_counter()
    if kind == "resilient":
        resilient_jobs.noop_job.enqueue_many([()] * n, client=client)
    else:
        queue.enqueue_many([Queue.prepare_data(jobs.noop, (None,)) for _ in range(n)])
    return n / (time.perf_counter() - start)


def _drain_rate(env: Env, ids: list[str]) -> float:
    """Jobs per second from the first job's start to the last job's end, as rq recorded them."""
    with env.redis.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.hmget(f"rq:job:{job_id}", "started_at", "ended_at")
        stamps = pipe.execute()
    missing = sum(1 for s, e in stamps if not s or not e)
    if missing:
        raise RuntimeError(f"{missing} of {len(ids)} jobs did not finish")
    first = min(_parse(s) for s, _ in stamps)
    last = max(_parse(e) for _, e in stamps)
    return len(ids) / (last - first)


def _drain_rate_together(env: Env, ids: list[str]) -> float:
    """Jobs per second while every worker was taking jobs: from the latest first start of any worker to the
    earliest last end (a worker that started later or ran out sooner does not count as idle time)."""
    with env.redis.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.hmget(f"rq:job:{job_id}", "started_at", "ended_at", "worker_name")
        stamps = pipe.execute()
    missing = sum(1 for s, e, _ in stamps if not s or not e)
    if missing:
        raise RuntimeError(f"{missing} of {len(ids)} jobs did not finish")
    by_worker: dict[bytes, list[tuple[float, float]]] = {}
    for started, ended, worker in stamps:
        by_worker.setdefault(worker, []).append((_parse(started), _parse(ended)))
    if len(by_worker) < 2:
        raise RuntimeError(f"only {len(by_worker)} worker took jobs")
    begin = max(min(s for s, _ in jobs_) for jobs_ in by_worker.values())
    end = min(max(e for _, e in jobs_) for jobs_ in by_worker.values())
    done = sum(1 for jobs_ in by_worker.values() for _, e in jobs_ if begin < e <= end)
    if end <= begin or not done:
        raise RuntimeError("the workers never took jobs at the same time")
    return done / (end - begin)


def _parse(stamp: bytes) -> float:
    return datetime.strptime(stamp.decode(), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()
