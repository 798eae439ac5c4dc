"""Scenario 8: several workers, one limit. Three workers share one real 600 MiB cgroup (as the processes of
one container or pod do) and run three ETL-shaped jobs at once (`batches` in bench/jobs.py): each batch
builds its working set in steps, uses it as long again, then frees it, with a safe point after every
step. A 190 MiB working set fits alone and two fit together (with the three workers' own ~75 MiB: ~455
MiB), three at once do not (~645 MiB).

resilient: three `resilient worker bench.resilient_jobs -q bench-batches`, default flags otherwise (no
--memory-limit: the limit is the cgroup's; default lines; no --burst). They find each other through the
limit (resilient/runtime/limit_group.py). rq: three `rq worker` with rq's defaults (bench/rq_worker.py);
the same body keeps its progress in job.meta and has no checkpoint to resume from; once with Retry(max=3)
(as in scenario 6) and once with rq's default of no retry.

Every worker starts inside the group (it enters before it execs: all of its memory is charged there). The
benchmark makes the group (resilient.memory.cgroup.create_child under this process's own group), counts
kernel OOM kills with the group's own oom_kill counter and removes the group at the end. Each system gets
DEADLINE seconds; a job not ended by then (or when every worker has died) counts as lost.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

from rq import Queue, Retry, Worker
from rq.job import Job

from resilient import Client
from resilient.memory import cgroup as cgroups
from resilient.model import FINAL_STATUSES, Cause

from . import jobs, resilient_jobs
from .harness import (
    Entry,
    Env,
    Proc,
    entries,
    redone,
    resilient_worker,
    rq_worker,
    runs,
    stop_all,
    wait_until,
)
from .memory import cgroups_unavailable
from .report import Result, Row, ms, ratio

TITLE = "8. several workers, one limit"
LIMIT_BYTES = 600 << 20
WORKERS = 3  # and as many jobs
MB = 190  # a batch's working set
STEPS, DELAY = 5, 0.05  # ... built in STEPS steps of DELAY seconds and used for as many, a safe point each
DEADLINE = 120.0  # seconds each system gets to end its jobs
RQ_QUEUE = "rq-batches"
RQ_RETRY = 3
RQ_ENDED = ("finished", "failed", "canceled", "stopped")
RESILIENT_FLAGS = f"-q {resilient_jobs.BATCHES_QUEUE}"
KINDS = {"resilient": "resilient", "rq": f"rq with Retry(max={RQ_RETRY})", "rq_no_retry": "rq without Retry"}


@dataclass
class Run:
    """One system's run: three workers, three jobs, one group."""

    kind: str
    jobs: int
    correct: int
    kernel_oom_kills: int
    step_asides: int | None  # resilient: deaths with cause preempted:memory; rq has none such
    governor_stops: int | None  # resilient: deaths with cause oom:self (the horse stopped at the critical line)
    batches_redone: int  # batches begun more than once
    failed: int  # ended without a result: failed (rq: retries used up, or abandoned) or parked
    lost: int  # not ended by the deadline
    runs: int  # runs (horses) that began a batch, over all jobs
    wall_s: float  # enqueue → the last job ended (or the deadline)
    peak_group_mib: float | None  # the group's highest charge (v1 memory.max_usage_in_bytes, v2 memory.peak)
    finals: list[str] = field(default_factory=list)
    deaths: dict[str, int] = field(default_factory=dict)  # resilient: every death, by cause

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def run(env: Env) -> Result:
    batches = 2 if env.quick else 8
    unavailable = cgroups_unavailable()
    if unavailable:
        return Result(rows=[Row(TITLE, f"not run: {unavailable}", "not run")], raw={"skipped": unavailable})
    out = {kind: _once(env, kind, batches) for kind in KINDS}
    res, rq, plain = out["resilient"], out["rq"], out["rq_no_retry"]
    shape = (f"{WORKERS} workers in one {LIMIT_BYTES >> 20} MiB cgroup, {WORKERS} jobs × {batches} batches "
             f"of {MB} MiB")
    result = Result(raw={"workers": WORKERS, "batches": batches, "mb_per_batch": MB, "steps_per_batch": STEPS,
                         "step_delay_s": DELAY, "limit_bytes": LIMIT_BYTES, "deadline_s": DEADLINE,
                         "resilient_flags": RESILIENT_FLAGS, "runs": {k: v.as_dict() for k, v in out.items()}})
    result.rows += [
        Row(f"{TITLE} ({shape}): correct results, wall time", _ends(res),
            f"Retry(max={RQ_RETRY}): {_ends(rq)}; no Retry: {_ends(plain)}",
            ratio(res.wall_s, rq.wall_s) if rq.correct == rq.jobs else ""),
        Row("8. one limit: kernel OOM kills / step-asides / batches redone / jobs failed / lost", _counts(res),
            f"Retry(max={RQ_RETRY}): {_counts(rq)}; no Retry: {_counts(plain)}"),
    ]
    result.notes.append(
        f"8: resilient: `resilient worker bench.resilient_jobs {RESILIENT_FLAGS}`, default flags otherwise (the "
        f"limit from the cgroup, no --burst); rq: `rq worker` with rq's defaults, the job restarts at batch 0 "
        f"on a retry. Peak charge of the group: " + ", ".join(f"{KINDS[k]} {_mib(v)}" for k, v in out.items())
        + ". Job ends: " + "; ".join(f"{KINDS[k]}: {', '.join(v.finals)}" for k, v in out.items()) + ".")
    return result


def _once(env: Env, kind: str, batches: int) -> Run:
    env.fresh()
    group = cgroups.create_child(LIMIT_BYTES, f"bench-shared-{os.getpid()}-{uuid.uuid4().hex[:6]}")
    prefix = f"bench:log:{uuid.uuid4().hex}"
    keys = [f"{prefix}:{i}" for i in range(WORKERS)]
    args = [(env.url, key, batches, MB, STEPS, DELAY) for key in keys]
    workers: list[Proc] = []
    try:
        for i in range(WORKERS):
            workers.append(
                resilient_worker(env, resilient_jobs.BATCHES_QUEUE, burst=False, name=f"resilient-{i}",
                                 start_in=group.path) if kind == "resilient"
                else rq_worker(env, RQ_QUEUE, burst=False, name=f"{kind}-{i}", start_in=group.path))
        wait_until(lambda: len(Worker.all(connection=env.redis)) == WORKERS, 30, f"{WORKERS} {kind} workers")
        began = time.monotonic()
        if kind == "resilient":
            client = Client.from_url(env.url)
            handles = [resilient_jobs.batches_job.enqueue_call(a, client=client) for a in args]
            ended = _wait_for_ends(lambda: all(h.status in FINAL_STATUSES for h in handles), workers, began)
        else:
            queue = Queue(RQ_QUEUE, connection=env.redis)
            retry = Retry(max=RQ_RETRY) if kind == "rq" else None
            rq_jobs = [queue.enqueue_call(jobs.on_rq, args=("batches", *a), retry=retry) for a in args]
            ended = _wait_for_ends(lambda: all(_rq_status(j) in RQ_ENDED for j in rq_jobs), workers, began)
        wall = ended - began
        kills = cgroups.oom_kill_count(group) or 0
        peak = _peak_mib(group)
    finally:
        stop_all(workers)
        cgroups.remove(group)
    logs = [entries(env, key) for key in keys]
    if kind == "resilient":
        return _resilient_run(env, [h.id for h in handles], logs, batches, kills, wall, peak)
    return _rq_run(env, kind, rq_jobs, logs, batches, kills, wall, peak)


def _wait_for_ends(all_ended: Callable[[], bool], workers: list[Proc], began: float) -> float:
    """Poll until every job has ended, the deadline has passed or no worker is left; the time then."""
    while not all_ended() and time.monotonic() - began < DEADLINE and any(w.alive() for w in workers):
        time.sleep(0.05)
    return time.monotonic()


def _resilient_run(env: Env, job_ids: list[str], logs: list[list[Entry]], batches: int, kills: int,
                   wall: float, peak: float | None) -> Run:
    client = Client.from_url(env.url)
    correct = failed = lost = 0
    finals: list[str] = []
    causes: dict[str, int] = {}
    for job_id, log in zip(job_ids, logs):
        handle = client.handle(job_id)
        status = handle.status
        if status == "completed":
            correct += _correct(handle.result(timeout=1), log, batches)
        elif status in FINAL_STATUSES:
            failed += 1
        else:
            lost += 1
        fields = client.store.job_fields(job_id)
        reason = fields.get("parked_reason") or fields.get("error") or ""
        finals.append(status + (f" ({_last_line(reason)})" if reason.strip() else ""))
        for event in handle.events():
            if event["type"] == "died":
                causes[event["cause"]] = causes.get(event["cause"], 0) + 1
    return Run("resilient", len(job_ids), correct, kills, causes.get(Cause.PREEMPTED_MEMORY, 0),
               causes.get(Cause.OOM_SELF, 0), sum(redone(log) for log in logs), failed, lost,
               sum(len(runs(log)) for log in logs), wall, peak, finals, causes)


def _rq_run(env: Env, kind: str, rq_jobs: list[Job], logs: list[list[Entry]], batches: int, kills: int,
            wall: float, peak: float | None) -> Run:
    correct = failed = lost = 0
    finals: list[str] = []
    for job, log in zip(rq_jobs, logs):
        job = Job.fetch(job.id, connection=env.redis)
        status = _rq_status(job)
        if status == "finished":
            correct += _correct(job.return_value(), log, batches)
        elif status in RQ_ENDED:
            failed += 1
        else:
            lost += 1
        reason = (job.exc_info or "") if status == "failed" else ""
        finals.append(status + (f" ({_last_line(reason)})" if reason.strip() else ""))
    return Run(kind, len(rq_jobs), correct, kills, None, None, sum(redone(log) for log in logs), failed, lost,
               sum(len(runs(log)) for log in logs), wall, peak, finals)


def _correct(value: Any, log: list[Entry], batches: int) -> bool:
    """The right sum, and every batch was done."""
    return bool(value == sum(range(batches)) and {e.item for e in log} == set(range(batches)))


def _last_line(text: str) -> str:
    return text.strip().splitlines()[-1].strip(" ;")[:80]


def _rq_status(job: Job) -> str:
    status = job.get_status(refresh=True)
    return str(getattr(status, "value", status))


def _ends(r: Run) -> str:
    return f"{r.correct}/{r.jobs} correct, {ms(r.wall_s)}"


def _counts(r: Run) -> str:
    steps = "n/a" if r.step_asides is None else str(r.step_asides)
    text = f"{r.kernel_oom_kills} / {steps} / {r.batches_redone} / {r.failed} / {r.lost}"
    return text + (f" (+{r.governor_stops} governor stop)" if r.governor_stops else "")


def _mib(r: Run) -> str:
    return "unknown" if r.peak_group_mib is None else f"{r.peak_group_mib:.0f} MiB"


def _peak_mib(group: cgroups.Cgroup) -> float | None:
    name = "memory.max_usage_in_bytes" if group.version == 1 else "memory.peak"
    try:
        return int((group.path / name).read_text()) / (1 << 20)
    except (OSError, ValueError):
        return None
