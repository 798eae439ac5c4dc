"""What every scenario shares: worker subprocesses (started and stopped by pid), logs, waits, statistics."""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import redis

ROOT = Path(__file__).resolve().parent.parent


class BenchError(Exception):
    """A scenario could not run as planned (a worker that never started, a deadline passed)."""


@dataclass
class Env:
    """One benchmark run: the server's URL, a scratch directory, and the quick/full switch."""

    url: str
    workdir: Path
    quick: bool
    redis: redis.Redis = field(init=False)

    def __post_init__(self) -> None:
        self.redis = redis.Redis.from_url(self.url)

    def subprocess_env(self) -> dict[str, str]:
        """REDIS_URL and PYTHONPATH for workers. Bytecode caching stays on: rq's horse imports the job
        module afresh for every job, and recompiling it each time is not what a deployment pays."""
        path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
        env = {**os.environ, "PYTHONPATH": path, "REDIS_URL": self.url}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        return env

    def fresh(self) -> None:
        """Start a scenario on an empty server."""
        self.redis.flushall()


class Proc:
    """A subprocess of ours: output to a log file, stopped by its pid only (SIGTERM, then SIGKILL)."""

    def __init__(self, env: Env, name: str, argv: list[str], start_in: Path | None = None,
                 command: str = "") -> None:
        """`start_in`: a memory cgroup directory the process enters before it execs (as a container's would);
        `command`: the command line as a user would type it, for the report (default: argv)."""
        self.name = name
        self.command = command or " ".join(argv)
        self.log_path = env.workdir / f"{name}-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "wb")
        self.started = time.monotonic()
        enter = None if start_in is None else lambda: (start_in / "cgroup.procs").write_text(str(os.getpid()))
        self.popen = subprocess.Popen(argv, env=env.subprocess_env(), cwd=env.workdir,
                                      stdout=self._log, stderr=subprocess.STDOUT, preexec_fn=enter)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def wait(self, timeout: float) -> int:
        """Wait for it to exit on its own; BenchError at the deadline (it is then stopped)."""
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise BenchError(f"{self.name} did not finish within {timeout:g} s; see {self.log_path}") \
                from None

    def kill(self) -> None:
        """SIGKILL, as the OOM killer or `kill -9` would send it."""
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)

    def stop(self, grace: float = 10.0) -> None:
        if self.alive():
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.popen.wait(10)
        self.popen.wait(10)  # reap it even when it died by itself
        self._log.close()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


def resilient_worker(env: Env, queue: str, *flags: str, burst: bool = True, name: str = "resilient",
                     start_in: Path | None = None) -> Proc:
    """`resilient worker bench.resilient_jobs -q QUEUE FLAGS`; `start_in`: a memory cgroup it starts in."""
    args = ["worker", "bench.resilient_jobs", "-q", queue, *flags, *(["--burst"] if burst else [])]
    return Proc(env, name, [sys.executable, "-m", "resilient", *args], start_in, " ".join(["resilient", *args]))


def rq_worker(env: Env, queue: str, *flags: str, burst: bool = True, cgroup: Path | None = None,
              name: str = "rq", start_in: Path | None = None) -> Proc:
    """`rq worker` (rq's own CLI) with rq's defaults unless `flags` say otherwise. `cgroup`: a memory cgroup
    it moves itself into once Python runs (bench/rq_worker.py); `start_in`: one it starts in, before it
    execs, so that all of its memory is charged there (a kernel that refuses memory.move_charge_at_immigrate
    leaves what a process had before it moved charged to its old group)."""
    argv = [sys.executable, "-m", "bench.rq_worker"]
    if cgroup is not None:
        argv += ["--cgroup", str(cgroup)]
    args = [*flags, *(["--burst"] if burst else []), queue]
    argv += ["--", "--url", env.url, *args]
    return Proc(env, name, argv, start_in, " ".join(["rq", "worker", *args]))


def resilient_supervisor(env: Env, *flags: str) -> Proc:
    return Proc(env, "supervisor", [sys.executable, "-m", "resilient", "supervisor", *flags])


def stop_all(procs: list[Proc]) -> None:
    for proc in procs:
        proc.stop()


def wait_until(condition: Callable[[], Any], timeout: float, what: str, poll: float = 0.005) -> Any:
    """Poll until `condition` returns something truthy; BenchError at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(poll)


@dataclass(frozen=True)
class Entry:
    """One line a job body logged: which process ran which item, and when it began."""

    pid: int
    item: int
    at: float


def entries(env: Env, key: str) -> list[Entry]:
    out = []
    for raw in env.redis.lrange(key, 0, -1):
        pid, item, at = raw.decode().split()
        out.append(Entry(int(pid), int(item), float(at)))
    return out


def runs(log: list[Entry]) -> list[list[Entry]]:
    """The log split into runs (horses), in order."""
    out: list[list[Entry]] = []
    for entry in log:
        if not out or out[-1][0].pid != entry.pid:
            out.append([])
        out[-1].append(entry)
    return out


def redone(log: list[Entry]) -> int:
    """Items begun more than once."""
    return len(log) - len({e.item for e in log})


def median(values: list[float]) -> float:
    return statistics.median(values)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far (from /proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0
