"""Starting a worker process: logging, job modules, Redis, memory (its own cgroup), metrics, reaper."""

from __future__ import annotations

import logging
import os
import signal
import threading

import redis

from ..api.registry import import_job_modules, lookup
from ..config import Settings
from ..errors import ConfigError
from ..ops import logs, metrics
from ..ops.health import WAITING, for_redis, forget, mark_alive
from ..ops.logs import log_to_stderr
from ..storage import redis_settings
from ..storage.connection import wait_for_redis
from .memory_watch import MemoryWatcher
from .procs import become_subreaper, load_prctl, set_parent_death_signal
from .worker import ResilientWorker

log = logging.getLogger("resilient.worker")


def run_worker(modules: list[str], queues: list[str], settings: Settings, burst: bool = False,
               name: str | None = None, log_level: str = "INFO", reap: bool = False, log_format: str = "auto",
               metrics_port: int | None = None) -> int:
    """Import the job modules, connect, and work until stopped (or drained, with burst). Exit code."""
    log_to_stderr(log_level, log_format)
    worker_pid = os.getpid()
    load_prctl()  # load libc here once, not in every child
    # RQ's scheduler runs in a forked process too: none of our children may outlive this worker
    os.register_at_fork(after_in_child=lambda: set_parent_death_signal() if os.getppid() == worker_pid else None)
    job_names = import_job_modules(modules)
    if not job_names:
        raise ConfigError(f"no @resilient.job found in {', '.join(modules)}")
    queues = queues or sorted({lookup(job_name).options.queue for job_name in job_names})
    reached = reach_redis(settings)
    if reached is None:
        forget("worker")
        return 0
    connection, url = reached
    # Only now: an embedded server this worker has just started (a daemon, orphaned at once) must not be
    # adopted, or the first job's end would take it for something the job left running.
    become_subreaper()
    for warning in redis_settings.warnings(connection):
        log.warning("%s", warning)
    memory = MemoryWatcher(settings)
    worker = ResilientWorker(queues, connection, settings, memory=memory, name=name, burst=burst)
    if name and connection.exists(worker.key) and not connection.hexists(worker.key, "death"):
        memory.close()  # (RQ would refuse the name with a traceback)
        raise ConfigError(f"a worker named {name!r} is registered already (running, or killed less than "
                          f"{worker.worker_ttl} s ago: its registration then expires by itself); pick another "
                          "--name, or leave --name out")
    logs.bind(worker=worker.name)
    if metrics_port:
        metrics.enable(metrics_port, connection)
    if reap:
        from .supervisor import start_reaper_thread

        start_reaper_thread(settings)
    log.info("worker %s on %s, queues %s, jobs %s", worker.name, url, ", ".join(queues), ", ".join(job_names))
    try:
        worker.work(burst=burst, logging_level=log_level)
    finally:
        worker.retire_horse()
        memory.close()
        forget("worker")
    if not worker.ended_cleanly:
        log.error("worker %s stopped on an unexpected error (logged above); exit code 1", worker.name)
        return 1
    return 0



def reach_redis(settings: Settings) -> tuple[redis.Redis, str] | None:
    """Wait for Redis (live, not ready, meanwhile); None when SIGTERM or SIGINT ends the wait."""
    stop = threading.Event()
    stop_signals = (signal.SIGTERM, signal.SIGINT)
    previous = {sig: signal.signal(sig, lambda signum, frame: stop.set()) for sig in stop_signals}
    try:
        for_redis(settings)
        return wait_for_redis(settings, lambda: mark_alive("worker", WAITING), stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
