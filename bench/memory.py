"""Scenario 6: a leaky job (+20 MB kept per item, ctx.save each item) under a real 300 MB cgroup limit.

resilient: `resilient worker --memory-limit 300M` makes its own child cgroup. rq: the benchmark makes a
child cgroup the same way (resilient.memory.cgroup.create_child / move_into / remove) and starts
`rq worker` inside it; the job keeps its progress in job.meta and has Retry(max=3).
Kernel OOM kills are read from the group's own oom_kill counter, polled while the worker runs.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import timezone
from typing import Any, Callable

from rq import Queue, Retry
from rq.job import Job

from resilient import Client
from resilient.errors import CgroupUnavailable
from resilient.memory import cgroup as cgroups

from . import jobs, resilient_jobs
from .harness import Env, Proc, entries, median, redone, resilient_worker, rq_worker, runs
from .report import Result, Row, ms, ratio

LIMIT = "300M"
LIMIT_BYTES = 300 << 20
RQ_QUEUE = "rq-leak"


@dataclass
class Run:
    kind: str
    completed: bool
    correct: bool
    wall_s: float
    kernel_oom_kills: int
    preemptions: int
    governor_stops: int
    attempts: int
    items_done: int
    items_redone: int
    final: str

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def run(env: Env) -> Result:
    items, mb, reps = (20, 20, 1) if env.quick else (100, 20, 3)
    unavailable = cgroups_unavailable()
    if unavailable:
        skipped = Row("6. leaky job under a real 300 MB cgroup", f"skipped: {unavailable}", "skipped")
        return Result(rows=[skipped], raw={"skipped": unavailable})
    kinds = ("resilient", "rq")
    outcomes: dict[str, list[Run]] = {k: [] for k in kinds}
    for _ in range(reps):
        for kind in kinds:
            outcomes[kind].append(_once(env, kind, items, mb))
    hand_written = _once(env, "rq_meta_resume", items, mb)
    result = Result(raw={"items": items, "mb_per_item": mb, "limit": LIMIT, "repeats": reps,
                         "runs": {k: [r.as_dict() for r in v] for k, v in outcomes.items()},
                         "rq_resume_from_meta": hand_written.as_dict()})
    res, rq = outcomes["resilient"], outcomes["rq"]
    res_wall = median([r.wall_s for r in res])
    rq_wall = median([r.wall_s for r in rq])
    result.rows += [
        Row(f"6. leaky job ({items} items × {mb} MB, limit {LIMIT}): outcome, time to the end (median)",
            f"{_outcome_text(res, items)}, {ms(res_wall)}", f"{_outcome_text(rq, items)}, {ms(rq_wall)}",
            ratio(res_wall, rq_wall) if all(r.completed for r in rq) else ""),
        Row("6. leaky job: kernel OOM kills / preemptions / items redone (median)", _counts(res),
            _counts(rq)),
        Row("6. leaky job, rq resuming from job.meta by hand (reference)", "",
            f"{_outcome_text([hand_written], items)}; {_counts([hand_written])}", ""),
    ]
    result.notes.append(
        "6: rq's retry re-saves the job from the parent's copy taken at dequeue, meta included once it is "
        "non-empty, so progress a horse wrote to job.meta is rolled back to where that attempt started.")
    return result


def _once(env: Env, kind: str, items: int, mb: int) -> Run:
    env.fresh()
    key = f"bench:log:{uuid.uuid4().hex}"
    args = (env.url, key, items, mb)
    group: cgroups.Cgroup | None = None
    try:
        if kind == "resilient":
            job_id = resilient_jobs.leak_job.enqueue_call(args, client=Client.from_url(env.url)).id
            started = time.time()
            worker = resilient_worker(env, resilient_jobs.LEAK_QUEUE, "--memory-limit", LIMIT)
            find: Callable[[], cgroups.Cgroup | None] = lambda: _own_group(worker.pid)  # noqa: E731
        else:
            group = _rq_cgroup()
            job_id = Queue(RQ_QUEUE, connection=env.redis).enqueue_call(
                jobs.on_rq, args=("leak", *args), kwargs={"resume_from_meta": kind == "rq_meta_resume"},
                retry=Retry(max=3)).id
            started = time.time()
            worker = rq_worker(env, RQ_QUEUE, cgroup=group.path)
            find = lambda: group  # noqa: E731
        kills = _watch_oom_kills(worker, find)
        try:
            worker.wait(timeout=60 if env.quick else 180)
        finally:
            worker.stop()
        oom_kills = kills()
    finally:
        if group is not None:
            cgroups.remove(group)
    log = entries(env, key)
    if kind == "resilient":
        return _resilient_run(env, job_id, log, started, oom_kills, items)
    return _rq_run(env, kind, job_id, log, started, oom_kills, items)


def _resilient_run(env: Env, job_id: str, log: list, started: float, oom_kills: int, items: int) -> Run:
    handle = Client.from_url(env.url).handle(job_id)
    fields = Client.from_url(env.url).store.job_fields(job_id)
    causes = [e["cause"] for e in handle.events() if e["type"] == "died"]
    completed = fields.get("status") == "completed"
    correct = completed and handle.result(timeout=1) == items and {e.item for e in log} == set(range(items))
    ended = int(fields["finished_at"]) / 1000 if fields.get("finished_at") else time.time()
    reason = fields.get("parked_reason")
    final = fields.get("status", "?") + (f" ({reason})" if reason else "")
    items_done = len({e.item for e in log})
    return Run("resilient", completed, correct, ended - started, oom_kills, causes.count("preempted:memory"),
               causes.count("oom:self"), int(fields.get("attempt", 0)), items_done, redone(log), final)


def _rq_run(env: Env, kind: str, job_id: str, log: list, started: float, oom_kills: int, items: int) -> Run:
    job = Job.fetch(job_id, connection=env.redis)
    status = str(getattr(job.get_status(), "value", job.get_status()))
    completed = status == "finished"
    correct = completed and job.return_value() == items and {e.item for e in log} == set(range(items))
    ended = job.ended_at.replace(tzinfo=timezone.utc).timestamp() if job.ended_at else time.time()
    reason = (job.exc_info or "").strip().splitlines()
    final = status + (f" ({reason[-1][:70]})" if status == "failed" and reason else "")
    return Run(kind, completed, correct, ended - started, oom_kills, 0, 0, len(runs(log)),
               len({e.item for e in log}), redone(log), final)


def _watch_oom_kills(worker: Proc, find: Callable[[], cgroups.Cgroup | None]) -> Callable[[], int]:
    """Poll the worker's cgroup oom_kill counter while it runs (resilient removes its group on exit)."""
    seen = [0]
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            group = find()
            count = cgroups.oom_kill_count(group) if group else None
            if count is not None:
                seen[0] = max(seen[0], count)
            if not worker.alive():
                return
            time.sleep(0.01)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()

    def result() -> int:
        stop.set()
        thread.join(5)
        return seen[0]

    return result


def _own_group(pid: int) -> cgroups.Cgroup | None:
    group = cgroups.find_cgroup(pid)
    return group if group and group.path.name.startswith("resilient-worker-") else None


def _rq_cgroup() -> cgroups.Cgroup:
    """A child cgroup capped at 300M, as `resilient worker --memory-limit` makes its own."""
    group = cgroups.create_child(LIMIT_BYTES, f"bench-rq-{os.getpid()}-{uuid.uuid4().hex[:6]}")
    switch = group.path / "memory.move_charge_at_immigrate"
    if group.version == 1 and switch.exists():
        try:  # as resilient does: memory follows a process that moves in (newer kernels refuse; harmless)
            switch.write_text("3")
        except OSError:
            pass
    return group


def cgroups_unavailable() -> str:
    try:
        probe = cgroups.create_child(64 << 20, f"bench-probe-{os.getpid()}")
    except CgroupUnavailable as exc:
        return str(exc)
    cgroups.remove(probe)
    return ""


def _outcome_text(runs_: list[Run], items: int) -> str:
    ok = sum(r.correct for r in runs_)
    if ok == len(runs_):
        return "correct result" if len(runs_) == 1 else f"correct result {ok}/{len(runs_)}"
    finals = "/".join(sorted({r.final.split(" (")[0] for r in runs_}))
    return (f"{finals} after {median([r.attempts for r in runs_]):.0f} runs "
            f"({ok}/{len(runs_)} correct), {median([r.items_done for r in runs_]):.0f}/{items} items reached")


def _counts(runs_: list[Run]) -> str:
    kills = median([r.kernel_oom_kills for r in runs_])
    pre = median([r.preemptions for r in runs_])
    stops = median([r.governor_stops for r in runs_])
    redo = median([r.items_redone for r in runs_])
    text = f"{kills:.0f} kills / {pre:.0f} preemptions / {redo:.0f} redone"
    return text + (f" / {stops:.0f} governor stops" if stops else "")
