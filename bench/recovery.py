"""Scenarios 4 and 5: a job SIGKILLed mid-run (its horse; then its whole worker), and how it comes back.

The job is `count` (bench/jobs.py): items of 10 ms, each logged with the pid that ran it and when it
began. "Back" is the first item begun by a new process after the kill; "redone" counts items begun twice.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from dataclasses import dataclass
from typing import Any

from rq import Queue, Retry
from rq.job import Job

from resilient import Client
from resilient.model import FINAL_STATUSES

from . import jobs, resilient_jobs
from .harness import (
    BenchError,
    Env,
    Proc,
    entries,
    median,
    redone,
    resilient_supervisor,
    resilient_worker,
    rq_worker,
    runs,
    stop_all,
    wait_until,
)
from .report import Aim, Result, Row, ms, ratio

DELAY = 0.01  # seconds per item
LEASE_TTL = 2.0
RQ_AGGRESSIVE = ("--job-monitoring-interval", "1", "--maintenance-interval", "1", "--worker-ttl", "16")


@dataclass
class Outcome:
    """One kill and what followed."""

    back_after: float | None  # seconds from the kill to the first item of the next run; None: never
    redone: int
    done_before_kill: int
    finished: str  # what became of the job

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Started:
    """A job on its way: how to read its log and its final state."""

    kind: str
    key: str
    job_id: str
    queue: str


# --- scenario 4 ---------------------------------------------------------------------------------
HORSE_KILL_AIM = 0.1  # seconds from the SIGKILL to the job's next item, p50, default worker


def run_horse_kill(env: Env) -> Result:
    """Both systems with the workers users run: default flags, not --burst (a burst worker skips the
    backoff before a retry, so it would measure a configuration nobody deploys)."""
    n, kill_at, reps = (80, 60, 1) if env.quick else (200, 100, 5)
    outcomes: dict[str, list[Outcome]] = {"resilient": [], "rq_retry": []}
    commands: dict[str, str] = {}
    for _ in range(reps):
        for kind in outcomes:
            outcomes[kind].append(_horse_kill_once(env, kind, n, kill_at, commands))
    no_retry = _horse_kill_once(env, "rq_plain", n, kill_at, commands)
    kernel_log_ms = _kernel_log_read_ms()
    result = Result(raw={"items": n, "kill_after_item": kill_at, "item_s": DELAY, "repeats": reps,
                         "checkpoint_every_s": resilient_jobs.COUNT_CHECKPOINT_EVERY,
                         "worker_commands": commands, "kernel_log_read_ms": kernel_log_ms,
                         "outcomes": {k: [o.as_dict() for o in v] for k, v in outcomes.items()},
                         "rq_without_retry": no_retry.as_dict()})
    res, rq = outcomes["resilient"], outcomes["rq_retry"]
    every = resilient_jobs.COUNT_CHECKPOINT_EVERY
    res_back, rq_back = _median_back(res), _median_back(rq)
    no_retry_status = no_retry.finished.split(" (")[0]
    result.rows += [
        Row(f"4. horse SIGKILL after item {kill_at} of {n}, default workers: kill → next item (median, max)",
            _spread(res), f"{_spread(rq)} with Retry(max=2); without Retry: {no_retry_status}",
            ratio(res_back, rq_back)),
        Row("4. horse SIGKILL: items redone (median)",
            f"{median([o.redone for o in res]):.0f} (checkpoint_every {every:g} s)",
            f"{median([o.redone for o in rq]):.0f}: restarted from item 0", ""),
    ]
    met = res_back <= HORSE_KILL_AIM
    result.aims.append(Aim("4. horse kill", f"kill → the job's next item p50 ≤ {ms(HORSE_KILL_AIM)} with the "
                           "default worker", ms(res_back), met, "" if met else "see raw figures"))
    difference_ms = (res_back - rq_back) * 1000
    result.notes.append(
        f"4: workers as users run them, default flags, not --burst: `{commands['resilient']}`; "
        f"`{commands['rq_retry']}` (rq's defaults; the job enqueued with Retry(max=2), no interval), and the "
        f"same without Retry. Job outcomes: resilient {_finished(res)}; rq with Retry(max=2) {_finished(rq)}; "
        f"rq without Retry: {no_retry.finished}. After a SIGKILL resilient's parent looks for the kernel's OOM "
        f"line for the dead horse (dmesg: {kernel_log_ms:.1f} ms here, of the {difference_ms:.0f} ms "
        "difference) and records the death with its evidence before it requeues the job.")
    return result


def _kernel_log_read_ms() -> float:
    from resilient.memory.probe import find_oom_line, read_kernel_log

    samples = []
    for _ in range(5):
        start = time.perf_counter()
        find_oom_line(read_kernel_log(), os.getpid())
        samples.append((time.perf_counter() - start) * 1000)
    return median(samples)


def _horse_kill_once(env: Env, kind: str, n: int, kill_at: int, commands: dict[str, str]) -> Outcome:
    """One kill with a default (non-burst) worker; returns once the job has ended, then stops the worker."""
    env.fresh()
    job = _enqueue(env, kind, n)
    worker = (resilient_worker(env, resilient_jobs.COUNT_QUEUE, burst=False) if kind == "resilient"
              else rq_worker(env, job.queue, burst=False))
    commands[kind] = worker.command
    try:
        wait_until(lambda: _last_item(env, job.key) >= kill_at, 30, f"{kind} job to reach item {kill_at}")
        horse = entries(env, job.key)[0].pid
        os.kill(horse, signal.SIGKILL)
        killed_at = time.time()
        client = Client.from_url(env.url)
        wait_until(lambda: _ended(env, client, job) or not worker.alive(), 30 + 3 * n * DELAY,
                   f"the {kind} job to end", poll=0.02)
        if not worker.alive():
            raise BenchError(f"{worker.name} exited; see {worker.log_path}")
    finally:
        worker.stop()
    return _outcome(env, job, killed_at)


# --- scenario 5 ---------------------------------------------------------------------------------
def run_worker_kill(env: Env) -> Result:
    n, kill_at, reps, cap = (60, 15, 1, 1.0) if env.quick else (300, 100, 3, 120.0)
    res = [_worker_kill_resilient(env, n, kill_at) for _ in range(reps)]
    variants = {"defaults": (), "aggressive": RQ_AGGRESSIVE}
    rq = _worker_kill_rq(env, n, kill_at, variants, 1 if env.quick else 2, cap)
    result = Result(raw={"items": n, "kill_after_item": kill_at, "item_s": DELAY, "lease_ttl_s": LEASE_TTL,
                         "cap_s": cap, "resilient": [o.as_dict() for o in res],
                         "rq": {k: [o.as_dict() for o in v] for k, v in rq.items()},
                         "rq_aggressive_flags": list(RQ_AGGRESSIVE)})
    res_back = _median_back(res)
    rq_text = {k: _back_text(v, cap) for k, v in rq.items()}
    aggressive_back = [o.back_after for o in rq["aggressive"] if o.back_after is not None]
    result.rows += [
        Row(f"5. whole worker SIGKILL: kill → running on a 2nd worker (median, max; "
            f"lease_ttl {LEASE_TTL:g} s)",
            _spread(res), f"defaults: {rq_text['defaults']}; most aggressive: {rq_text['aggressive']}",
            ratio(res_back, median(aggressive_back)) if aggressive_back else ""),
        Row("5. whole worker SIGKILL: items redone (median)", f"{median([o.redone for o in res]):.0f}",
            _redone_text(rq["aggressive"]), ""),
    ]
    aim = LEASE_TTL + 1
    result.aims.append(Aim("5. worker kill", f"back within lease_ttl + 1 s = {aim:g} s", ms(res_back),
                           res_back <= aim, "" if res_back <= aim else "see raw figures"))
    result.notes.append(
        f"5: rq 'most aggressive' = rq worker {' '.join(RQ_AGGRESSIVE)} on both workers, job with "
        "Retry(max=2) (without a retry rq marks the abandoned job failed). rq runs are capped at "
        f"{cap:g} s after the kill "
        "(the aim says 10 minutes; the cap keeps the whole benchmark under 10 minutes). The rq variants run "
        "side by side, each on its own queue and workers; they only wait on rq's timers.")
    return result


def _worker_kill_resilient(env: Env, n: int, kill_at: int) -> Outcome:
    env.fresh()
    ttl = ("--lease-ttl", f"{LEASE_TTL:g}")
    procs = [resilient_supervisor(env, *ttl)]
    try:
        job = _enqueue(env, "resilient", n)
        first = resilient_worker(env, job.queue, *ttl, burst=False, name="resilient-A")
        procs.append(first)
        killed_at = _kill_whole_worker(env, job, first, lambda: procs.append(
            resilient_worker(env, job.queue, *ttl, burst=False, name="resilient-B")), kill_at)
        wait_until(lambda: _new_run(env, job.key), LEASE_TTL + 30, "the job to run again", poll=0.02)
        Client.from_url(env.url).handle(job.job_id).result(timeout=30 + 3 * n * DELAY)
    finally:
        stop_all(procs)
    return _outcome(env, job, killed_at)


def _worker_kill_rq(env: Env, n: int, kill_at: int, variants: dict[str, tuple[str, ...]], reps: int,
                    cap: float) -> dict[str, list[Outcome]]:
    """Every variant and repeat at once, each on its own queue: they all wait on rq's timers, not on CPU."""
    env.fresh()
    procs: list[Proc] = []
    started: list[tuple[str, Started, Proc]] = []
    try:
        for variant, flags in variants.items():
            for rep in range(reps if variant != "defaults" else 1):
                job = _enqueue(env, "rq_retry", n, queue=f"rq-count-{variant}-{rep}")
                worker = rq_worker(env, job.queue, *flags, burst=False, name=f"rq-{variant}-A")
                procs.append(worker)
                started.append((variant, job, worker))
        kills: list[tuple[str, Started, float]] = []
        for variant, job, worker in started:
            flags = variants[variant]
            killed_at = _kill_whole_worker(env, job, worker, lambda: procs.append(
                rq_worker(env, job.queue, *flags, burst=False, name=f"rq-{variant}-B")), kill_at)
            kills.append((variant, job, killed_at))
        deadline = max(k for _, _, k in kills) + cap
        while time.time() < deadline and not all(_new_run(env, job.key) for _, job, _ in kills):
            time.sleep(0.05)
    finally:
        stop_all(procs)
    out: dict[str, list[Outcome]] = {v: [] for v in variants}
    for variant, job, killed_at in kills:
        outcome = _outcome(env, job, killed_at)
        if outcome.back_after is not None and outcome.back_after > cap:
            outcome.back_after = None
        out[variant].append(outcome)
    return out


def _kill_whole_worker(env: Env, job: Started, first: Proc, start_second: Any, kill_at: int) -> float:
    """Once the job is past `kill_at` on the first worker and a second worker listens: SIGKILL parent and
    horse. Returns the time of the kill."""
    wait_until(lambda: _last_item(env, job.key) >= kill_at, 60, f"{job.kind} job to reach item {kill_at}")
    start_second()
    wait_until(lambda: env.redis.scard(f"rq:workers:{job.queue}") >= 2, 30, "the second worker to register")
    horse = entries(env, job.key)[0].pid
    os.kill(first.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):  # a horse may die with its parent before we get to it
        os.kill(horse, signal.SIGKILL)
    return time.time()


# --- shared -------------------------------------------------------------------------------------
def _enqueue(env: Env, kind: str, n: int, queue: str = "rq-count") -> Started:
    key = f"bench:log:{uuid.uuid4().hex}"
    args = (env.url, key, n, DELAY)
    if kind == "resilient":
        handle = resilient_jobs.count_job.enqueue_call(args, client=Client.from_url(env.url))
        return Started(kind, key, handle.id, resilient_jobs.COUNT_QUEUE)
    retry = Retry(max=2) if kind == "rq_retry" else None
    job = Queue(queue, connection=env.redis).enqueue_call(jobs.on_rq, args=("count", *args), retry=retry)
    return Started(kind, key, job.id, queue)


def _outcome(env: Env, job: Started, killed_at: float) -> Outcome:
    log = entries(env, job.key)
    parts = runs(log)
    before = [e for e in log if e.at < killed_at]
    after = [e for e in log if e.at >= killed_at and e.pid != parts[0][0].pid]
    back = after[0].at - killed_at if after else None
    return Outcome(back, redone(log), len({e.item for e in before}), _final_state(env, job))


def _final_state(env: Env, job: Started) -> str:
    if job.kind == "resilient":
        fields = Client.from_url(env.url).store.job_fields(job.job_id)
        return f"{fields.get('status')} after {fields.get('attempt')} attempts"
    rq_job = Job.fetch(job.job_id, connection=env.redis)
    status = rq_job.get_status()
    if status == "failed":
        reason = (rq_job.exc_info or "").strip().splitlines()
        return f"failed ({reason[-1][:80] if reason else 'no reason recorded'})"
    return str(status.value if hasattr(status, "value") else status)


def _ended(env: Env, client: Client, job: Started) -> bool:
    """The job is over, one way or another (and will not be retried)."""
    if job.kind == "resilient":
        return client.store.job_fields(job.job_id).get("status") in FINAL_STATUSES
    return env.redis.hget(f"rq:job:{job.job_id}", "status") in (b"finished", b"failed")


def _last_item(env: Env, key: str) -> int:
    last = env.redis.lindex(key, -1)
    return int(last.split()[1]) if last else -1


def _new_run(env: Env, key: str) -> bool:
    return len(runs(entries(env, key))) >= 2


def _median_back(outcomes: list[Outcome]) -> float:
    values = [o.back_after for o in outcomes if o.back_after is not None]
    if not values:
        raise BenchError("the job never ran again")
    return median(values)


def _spread(outcomes: list[Outcome]) -> str:
    values = [o.back_after for o in outcomes if o.back_after is not None]
    return f"{ms(median(values))}, {ms(max(values))}" if len(values) > 1 else ms(values[0])


def _back_text(outcomes: list[Outcome], cap: float) -> str:
    values = [o.back_after for o in outcomes if o.back_after is not None]
    if not values:
        return f"not within the cap ({cap:g} s)"
    missing = len(outcomes) - len(values)
    return ms(median(values)) + (f" ({missing} of {len(outcomes)} not within {cap:g} s)" if missing else "")


def _redone_text(outcomes: list[Outcome]) -> str:
    values = [o.redone for o in outcomes if o.back_after is not None]
    return f"{median(values):.0f}: restarted from item 0" if values else "n/a (never ran again)"


def _finished(outcomes: list[Outcome]) -> str:
    return ", ".join(sorted({o.finished for o in outcomes}))
