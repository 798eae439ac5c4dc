"""The reaper: attempts whose lease expired (worker or container gone) go back to their queue."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import redis
from rq.executions import ExecutionRegistry
from rq.registry import StartedJobRegistry

from ..config import Settings
from ..model import Cause, Claim
from ..ops import health, metrics
from ..storage import keys
from ..storage.connection import open_redis, resolve_url, wait_for_redis
from ..storage.store import Store
from . import deaths
from .attempt import settle
from .procs import become_subreaper, end_orphans, set_parent_death_signal
from .rqjob import fetch_rq_job, rq_queue

if TYPE_CHECKING:
    from ..web.server import WebOptions

log = logging.getLogger("resilient.supervisor")
REAP_INTERVAL = 0.5  # seconds between two looks at the leases: detection within lease_ttl + this


class Reaper:
    """Claims expired leases; any number of reapers may run, each lost attempt is taken over once."""

    def __init__(self, connection: redis.Redis, settings: Settings) -> None:
        self.connection = connection
        self.store = Store(connection, settings)
        self.result_ttl = settings.result_ttl
        self.lease_ttl = settings.lease_ttl
        self._stranded: dict[tuple[str, str], float] = {}
        # Server ms since which this reaper has seen Redis without a break, and when (monotonic) it last did.
        self._visible_since: int | None = self.store.server_ms()
        self._last_seen = time.monotonic()

    def reap_once(self, at_ms: int | None = None) -> list[Claim]:
        """One pass: expired leases, due delayed retries, entries stranded between dequeue and start."""
        at_ms = self.store.server_ms() if at_ms is None else at_ms
        claims = []
        for job_id in self.store.expired_leases(at_ms) if self._saw_a_lease_period(at_ms) else ():
            claim = self.store.claim_lost(job_id, at_ms)
            if claim is not None:
                self._after_claim(claim)
                claims.append(claim)
        self.store.promote_due(at_ms)
        self._rescue_stranded()
        return claims

    def _saw_a_lease_period(self, at_ms: int) -> bool:
        """True once this reaper has seen Redis for a whole lease period without a break. After an outage
        (a failed pass, or a pass that took long: redis-py retried inside it) live workers get that long to
        renew their leases: an outage is not a death."""
        seen = time.monotonic()
        if self._visible_since is None or seen - self._last_seen > self.lease_ttl / 2:
            self._visible_since = at_ms
        self._last_seen = seen
        return at_ms - self._visible_since >= self.lease_ttl * 1000

    def _after_claim(self, claim: Claim) -> None:
        """Decide by the job's own rules, as for any death (a lost job goes back at once), and settle it;
        then RQ's side: out of the started registry, and into RQ's failed registry when parked."""
        decision = deaths.decide(claim.death, claim.count, claim.rules, claim.queue)
        metrics.death(Cause.LOST)
        if not settle(self.store, claim.attempt, claim.death, decision):
            return
        job_id = claim.attempt.job_id
        _forget_started(self.connection, job_id, claim.queue)
        if decision.action != "park":
            return
        job = fetch_rq_job(job_id, self.connection)
        if job is not None:
            queue = rq_queue(claim.queue, self.connection)
            queue.failed_job_registry.add(job, ttl=self.result_ttl, exc_string=f"parked: {decision.reason}")

    def _rescue_stranded(self) -> None:
        """A worker that died right after taking a job off its queue leaves the id in RQ's intermediate
        list, with no lease: seen there twice, lease_ttl apart, it goes back to the front of its queue."""
        now = time.monotonic()
        seen_now: dict[tuple[str, str], float] = {}
        for queue in self._queue_names():
            for raw in cast(list[bytes], self.connection.lrange(keys.rq_intermediate(queue), 0, -1)):
                entry = (raw.decode(), queue)
                first_seen = self._stranded.get(entry, now)
                if now - first_seen > self.lease_ttl and self.store.rescue_stranded(*entry):
                    log.warning("job %s was stranded between dequeue and start; requeued", entry[0])
                    continue
                seen_now[entry] = first_seen
        self._stranded = seen_now

    def _queue_names(self) -> list[str]:
        names = cast(set[bytes], self.connection.smembers(keys.RQ_QUEUES))
        return [key.decode().removeprefix(keys.rq_queue("")) for key in names]

    def reap_or_log(self) -> None:
        """One pass that never raises for Redis trouble: the next pass tries again once Redis is back."""
        try:
            self.reap_once()
        except redis.RedisError as exc:
            self._visible_since = None
            log.warning("reaper: %s", exc)

    def run(self, stop: threading.Event, interval: float = REAP_INTERVAL) -> None:
        while not stop.is_set():
            self.reap_or_log()
            stop.wait(interval)


def _forget_started(connection: redis.Redis, job_id: str, queue: str) -> None:
    """Remove the job's entries (`{id}:{execution}`) from RQ's StartedJobRegistry. RQ indexes each job's
    executions under the job (`rq:executions:{id}`), so this costs what the job has, not what the registry
    holds; only when that index has expired (the reaper was away past RQ's heartbeat TTL) is the registry
    scanned for the job's entries."""
    registry = StartedJobRegistry(queue, connection=connection)
    index = ExecutionRegistry(job_id, connection=connection).key
    members = [f"{job_id}:{execution.decode()}" for execution in cast(list[bytes], connection.zrange(index, 0, -1))]
    if not members:
        entries = cast(list[tuple[bytes, float]],
                       list(connection.zscan_iter(registry.key, match=f"{job_id}:*", count=1000)))
        members = [member.decode() for member, _ in entries]
    if members:
        connection.zrem(registry.key, *members)


def start_reaper_thread(settings: Settings) -> threading.Event:
    """Run a reaper in this process (`resilient worker --reap`); set the returned event to stop it."""
    connection, _ = open_redis(settings)
    stop = threading.Event()
    thread = threading.Thread(target=Reaper(connection, settings).run, args=(stop,), name="reaper", daemon=True)
    thread.start()
    return stop


class WorkerManager:
    """`resilient supervisor --workers N`: N local worker processes, each restarted when it dies, with a
    crash-loop backoff (a worker that dies young waits 1, 2, 4 ... up to 60 s before its restart)."""

    def __init__(self, count: int, worker_argv: list[str], env: dict[str, str]) -> None:
        self.argv = worker_argv
        self.env = env
        self.slots = [_Slot() for _ in range(count)]

    def tick(self, now: float) -> None:
        for slot in self.slots:
            if slot.process is not None and slot.process.poll() is None:
                continue
            if slot.process is not None:
                slot.record_exit(now)
            if now >= slot.restart_at:
                slot.process = subprocess.Popen(self.argv, env=self.env, preexec_fn=set_parent_death_signal)
                slot.started_at = now
                log.info("worker started (pid %d)", slot.process.pid)
        # A worker that died whole took its horse along (PDEATHSIG), but not what the job started: as the
        # subreaper we adopt that, and end it here.
        end_orphans(keep=set(self.pids()))

    def pids(self) -> list[int]:
        return [s.process.pid for s in self.slots if s.process is not None and s.process.poll() is None]

    def stop(self, grace: float) -> None:
        """SIGTERM every worker (they checkpoint and requeue their jobs), SIGKILL what outlives `grace`."""
        running = [s.process for s in self.slots if s.process is not None and s.process.poll() is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process in running:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


class _Slot:
    YOUNG = 30.0  # a worker that dies sooner than this counts as crash-looping
    MAX_DELAY = 60.0

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.restart_at = 0.0
        self.crashes = 0

    def record_exit(self, now: float) -> None:
        """A worker killed by a signal (OOM killer, an operator) comes back at once; one that keeps exiting
        by itself soon after its start (bad config, Redis unreachable) is crash-looping and waits."""
        assert self.process is not None
        code = self.process.returncode
        young_failure = code is not None and code > 0 and now - self.started_at < self.YOUNG
        self.crashes = self.crashes + 1 if young_failure else 0
        delay = min(self.MAX_DELAY, 2.0 ** (self.crashes - 1)) if self.crashes else 0.0
        log.warning("worker pid %d exited (%s); restarting in %.0f s", self.process.pid, code, delay)
        self.restart_at = now + delay
        self.process = None


def unless_stopped(action: Callable[[], None], stop: threading.Event) -> None:
    """Run `action` in a thread and wait until it returns or `stop` is set. A reap pass that waits on a Redis
    gone away (its retries take ~15 s, a reply that never comes 30 s) must not hold back the workers' stop,
    which a container's stop grace bounds. Leaving a pass midway is as safe as a supervisor killed there:
    each claim is one atomic step."""
    done = threading.Event()

    def run() -> None:
        try:
            action()
        finally:
            done.set()

    threading.Thread(target=run, name="reap-pass", daemon=True).start()
    while not done.is_set() and not stop.is_set():
        done.wait(0.05)


def run_supervisor(settings: Settings, interval: float = REAP_INTERVAL, workers: int = 0,
                   worker_args: list[str] | None = None, metrics_port: int | None = None,
                   web: WebOptions | None = None) -> int:
    """`resilient supervisor`: reap expired leases (and keep `workers` local workers running) until SIGTERM;
    `web`: serve the dashboard alongside."""
    stop = threading.Event()

    def request_stop(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    health.for_redis(settings)
    reached = wait_for_redis(settings, lambda: health.mark_alive("supervisor", health.WAITING), stop)
    if reached is None:
        health.forget("supervisor")
        return 0
    connection, url = reached
    stop_web = _start_web(connection, settings, web) if web is not None else None
    manager = None
    if workers:
        # The workers use the server we use, however it was named (flag, env, file, embedded default):
        # a worker left to resolve it alone could start an embedded server of its own.
        worker_url = resolve_url(settings)
        env = {**os.environ, "REDIS_URL": worker_url, "RESILIENT_REDIS_URL": worker_url}
        become_subreaper()
        manager = WorkerManager(workers, [sys.executable, "-m", "resilient", "worker", *(worker_args or [])], env)
    log.info("supervisor on %s: reaping every %.1f s (lease ttl %.0f s)%s", url, interval, settings.lease_ttl,
             f", keeping {workers} workers" if workers else "")
    reaper = Reaper(connection, settings)
    reaper.store.durable.tick = lambda: health.mark_alive("supervisor", "supervisor")  # while a replica is awaited
    if metrics_port:
        metrics.enable(metrics_port, connection)
    while not stop.is_set():
        health.mark_alive("supervisor", "supervisor")
        if manager is not None:
            manager.tick(time.monotonic())
        unless_stopped(reaper.reap_or_log, stop)
        stop.wait(interval)
    if manager is not None:
        manager.stop(settings.shutdown_grace + 5)
    if stop_web is not None:
        stop_web()
    health.forget("supervisor")
    return 0


def _start_web(connection: redis.Redis, settings: Settings, options: WebOptions) -> Callable[[], None]:
    from ..web.server import start_for

    return start_for(connection, settings, options)
