"""Where resilient's extra time per trivial job goes (scenario 1's explanation when it misses its aim).

`python -m bench.overhead URL resilient|rq N [--profile]` runs N trivial jobs through the real worker class
in this process (burst mode, logging at WARNING) and prints JSON:

- `phases`: ms per job in each phase of the work loop, measured without a profiler (inclusive times:
  heartbeat() also runs inside dequeue).
- `fork_us`: fork + exit + wait of this process, which grows with what the parent has loaded.
- with `--profile` (resilient only): a second run under cProfile, parent and every horse, and the ms per
  job spent in each function of the resilient package, counting its own time and the library calls
  (redis-py, threading, files) it makes directly, but not what it hands back to rq's own code.
  cProfile slows Python calls down, so these are shares, not timings.
"""

from __future__ import annotations

import cProfile
import json
import os
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PACKAGE = f"{os.sep}resilient{os.sep}"
RQ = f"{os.sep}rq{os.sep}"


def make_worker(url: str, kind: str, n: int) -> Any:
    """A worker of `kind` for a queue holding n trivial jobs."""
    import redis
    from rq import Queue, Worker

    if kind == "rq":
        from . import jobs

        connection = redis.Redis.from_url(url)
        queue = Queue("overhead-rq", connection=connection)
        for _ in range(n):
            queue.enqueue(jobs.noop, None)
        return Worker([queue.name], connection=connection)
    from resilient import Client
    from resilient.config import Settings
    from resilient.runtime.memory_watch import MemoryWatcher
    from resilient.runtime.worker import ResilientWorker

    from . import resilient_jobs

    client = Client.from_url(url)
    for _ in range(n):
        resilient_jobs.noop_job.enqueue_call((), client=client)
    settings = Settings(redis_url=url)
    return ResilientWorker([resilient_jobs.NOOP_QUEUE], client.connection, settings,
                           memory=MemoryWatcher(settings))


def phases(url: str, kind: str, n: int) -> dict[str, float]:
    worker = make_worker(url, kind, n)
    spent: dict[str, float] = {}
    calls: dict[str, int] = {}

    def timed(method: str, phase: str) -> None:
        inner = getattr(worker, method)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                spent[phase] = spent.get(phase, 0.0) + time.perf_counter() - start
                calls[phase] = calls.get(phase, 0) + 1

        setattr(worker, method, wrapper)  # the instance attribute shadows the method for this worker only

    for method, phase in (("dequeue_job_and_maintain_ttl", "dequeue"), ("execute_job", "execute"),
                          ("fork_work_horse", "fork"), ("monitor_work_horse", "horse"),
                          ("heartbeat", "heartbeat")):
        timed(method, phase)
    start = time.perf_counter()
    worker.work(burst=True, logging_level="WARNING")
    total = time.perf_counter() - start
    out = {phase: spent.get(phase, 0.0) * 1000 / n for phase in ("dequeue", "execute", "fork", "horse",
                                                                  "heartbeat")}
    out["total"] = total * 1000 / n
    out["horse, fork to reaped"] = out["fork"] + out["horse"]
    out["execute, parent side"] = out["execute"] - out["horse, fork to reaped"]
    out["heartbeat calls"] = calls.get("heartbeat", 0) / n
    return out


def profile(url: str, n: int) -> dict[str, dict[str, float]]:
    """ms per job attributable to each resilient function, in the parent and in the horses."""
    worker = make_worker(url, "resilient", n)
    folder = Path(tempfile.mkdtemp(prefix="bench-profile-"))
    original = type(worker).main_work_horse

    def profiled_horse(job: Any, queue: Any) -> None:
        horse_profile = cProfile.Profile()
        real_exit = os._exit

        def dump_then_exit(code: int) -> None:  # the horse leaves through os._exit: save the profile first
            horse_profile.disable()
            horse_profile.dump_stats(str(folder / f"horse-{os.getpid()}.prof"))
            real_exit(code)

        os._exit = dump_then_exit  # type: ignore[assignment]
        horse_profile.enable()
        original(worker, job, queue)

    worker.main_work_horse = profiled_horse
    parent = cProfile.Profile()
    parent.enable()
    worker.work(burst=True, logging_level="WARNING")
    parent.disable()
    parent.dump_stats(str(folder / "parent.prof"))
    horses = sorted(folder.glob("horse-*.prof"))
    result = {"parent": _attribute([folder / "parent.prof"], n), "horse": _attribute(horses, n)}
    for path in folder.iterdir():
        path.unlink()
    folder.rmdir()
    return result


def _attribute(files: list[Path], n: int) -> dict[str, float]:
    """Per resilient function: its own time plus its direct calls into code that is neither resilient's nor
    rq's (ms per job)."""
    if not files:
        return {}
    stats = pstats.Stats(str(files[0]))
    for path in files[1:]:
        stats.add(str(path))
    table: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    spent: dict[str, float] = {}

    def name(func: tuple[str, int, str]) -> str:
        filename, _, function = func
        return f"{filename.rsplit(PACKAGE, 1)[1]}:{function}"

    for func, (_, _, own, _, callers) in table.items():
        if PACKAGE in func[0]:
            spent[name(func)] = spent.get(name(func), 0.0) + own
        elif RQ not in func[0]:
            for caller, (_, _, _, cumulative) in callers.items():
                if PACKAGE in caller[0]:
                    spent[name(caller)] = spent.get(name(caller), 0.0) + cumulative
    ranked = sorted(spent.items(), key=lambda kv: -kv[1])
    return {function: seconds * 1000 / n for function, seconds in ranked[:8]}


def fork_us(n: int) -> float:
    samples = []
    for _ in range(n):
        start = time.perf_counter_ns()
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        samples.append((time.perf_counter_ns() - start) / 1000)
    return statistics.median(samples)


def main() -> None:
    url, kind, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    out: dict[str, Any] = {"phases": phases(url, kind, n), "fork_us": fork_us(min(n, 200))}
    if "--profile" in sys.argv and kind == "resilient":
        out["profile_ms_per_job"] = profile(url, n)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
