"""Scenario 7: worker parent RSS (idle, during a job) and the CPU used while a job sleeps (the governor)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from rq import Queue

from resilient import Client

from . import jobs, resilient_jobs
from .harness import Env, entries, resilient_worker, rq_worker, rss_bytes, wait_until
from .report import Aim, Result, Row, ratio

AIM_GOVERNOR = 1.0  # % of one core
MiB = 1 << 20


def run(env: Env) -> Result:
    idle_s, window_s = (0.2, 0.4) if env.quick else (2.0, 8.0)
    figures = {
        "resilient": _measure(env, "resilient", idle_s, window_s),
        "rq": _measure(env, "rq", idle_s, window_s),
    }
    if not env.quick:  # the same measurement again, with the governor reading the cgroup's memory.stat
        figures["resilient_300M"] = _measure(env, "resilient", idle_s, window_s, "--memory-limit", "300M")
    res, rq = figures["resilient"], figures["rq"]
    capped = figures.get("resilient_300M")
    result = Result(raw={"idle_s": idle_s, "cpu_window_s": window_s, **figures})
    result.rows += [
        Row("7. worker parent RSS, idle", _mib(res["parent_rss_idle"]), _mib(rq["parent_rss_idle"]),
            ratio(res["parent_rss_idle"], rq["parent_rss_idle"])),
        Row("7. worker parent RSS, during a job", _mib(res["parent_rss_job"]), _mib(rq["parent_rss_job"]),
            ratio(res["parent_rss_job"], rq["parent_rss_job"])),
        Row("7. horse CPU while its job sleeps (% of a core; resilient: the governor)",
            f"{res['horse_cpu_pct']:.2f} %", f"{rq['horse_cpu_pct']:.2f} %", ""),
        Row("7. same, worker with --memory-limit 300M (governor reads cgroup memory.stat)",
            f"{capped['horse_cpu_pct']:.2f} %" if capped else "full run only", "", ""),
        Row("7. worker parent CPU during a job (% of a core)", f"{res['parent_cpu_pct']:.2f} %",
            f"{rq['parent_cpu_pct']:.2f} %", ""),
    ]
    worst = max(res["horse_cpu_pct"], capped["horse_cpu_pct"] if capped else 0.0)
    figure = f"{res['horse_cpu_pct']:.2f} % (RSS source)"
    if capped:
        figure += f", {capped['horse_cpu_pct']:.2f} % (cgroup source)"
    result.aims.append(Aim("7. footprint", f"governor ≤ {AIM_GOVERNOR:g} % of a core at the default interval",
                           figure, worst <= AIM_GOVERNOR))
    return result


def _measure(env: Env, kind: str, idle_s: float, window_s: float, *flags: str) -> dict[str, float]:
    env.fresh()
    key = f"bench:log:{uuid.uuid4().hex}"
    queue = resilient_jobs.IDLE_QUEUE if kind == "resilient" else "rq-idle"
    worker = (resilient_worker(env, queue, *flags, burst=False) if kind == "resilient"
              else rq_worker(env, queue, burst=False))
    try:
        wait_until(lambda: env.redis.scard(f"rq:workers:{queue}") >= 1, 30, f"{kind} worker to register")
        time.sleep(idle_s)
        idle_rss = rss_bytes(worker.pid)
        seconds = window_s + 0.6
        if kind == "resilient":
            resilient_jobs.idle_job.enqueue_call((env.url, key, seconds), client=Client.from_url(env.url))
        else:
            Queue(queue, connection=env.redis).enqueue_call(jobs.on_rq, args=("idle", env.url, key, seconds))
        horse = wait_until(lambda: entries(env, key), 30, f"{kind} job to start")[0].pid
        time.sleep(0.3)  # past the horse's start-up
        horse_cpu, parent_cpu, at = _cpu_ns(horse), _cpu_ns(worker.pid), time.monotonic()
        time.sleep(window_s)
        horse_cpu, parent_cpu = _cpu_ns(horse) - horse_cpu, _cpu_ns(worker.pid) - parent_cpu
        elapsed = time.monotonic() - at
        job_rss = rss_bytes(worker.pid)
        horse_rss = rss_bytes(horse)
        wait_until(lambda: not Path(f"/proc/{horse}/task").exists() or _zombie(horse), seconds + 10,
                   "the job to end", poll=0.05)
    finally:
        worker.stop()
    return {"parent_rss_idle": idle_rss, "parent_rss_job": job_rss, "horse_rss": horse_rss,
            "horse_cpu_pct": 100 * horse_cpu / 1e9 / elapsed,
            "parent_cpu_pct": 100 * parent_cpu / 1e9 / elapsed}


def _cpu_ns(pid: int) -> int:
    """CPU time of every thread of `pid` so far, in ns (/proc/PID/task/*/schedstat)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pass  # the thread ended meanwhile
    return total


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return True


def _mib(size: float) -> str:
    return f"{size / MiB:.1f} MiB"
