"""The reaper: attempts whose lease expired (worker or container gone) go back to their queue."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import redis
from rq.registry import StartedJobRegistry

from .config import Settings
from .connection import open_redis, resolve_url
from .rqjob import fetch_rq_job, rq_queue
from .store import Claim, Store, now_ms

log = logging.getLogger("resilient.supervisor")
REAP_INTERVAL = 0.5  # seconds between two looks at the leases: detection within lease_ttl + this


class Reaper:
    """Claims expired leases; any number of reapers may run, each lost attempt is taken over once."""

    def __init__(self, connection: redis.Redis, settings: Settings) -> None:
        self.connection = connection
        self.store = Store(connection, settings.checkpoint_history, settings.event_history, settings.lease_ttl)
        self.result_ttl = settings.result_ttl

    def reap_once(self, at_ms: int | None = None) -> list[Claim]:
        at_ms = now_ms() if at_ms is None else at_ms
        claims = []
        for job_id in self.store.expired_leases(at_ms):
            claim = self.store.claim_lost(job_id, at_ms)
            if claim is not None:
                self._hand_back(claim)
                claims.append(claim)
        return claims

    def _hand_back(self, claim: Claim) -> None:
        """RQ's side of a takeover: out of the started registry, then requeued at the front, or parked."""
        _forget_started(self.connection, claim)
        job = fetch_rq_job(claim.job_id, self.connection)
        queue = rq_queue(claim.queue, self.connection)
        reason = _park_reason(claim)
        if reason:
            self.store.park(claim.attempt_record, reason)
            if job is not None:
                queue.failed_job_registry.add(job, ttl=self.result_ttl, exc_string=f"parked: {reason}")
            log.warning("job %s parked: %s", claim.job_id, reason)
            return
        self.store.mark_requeued(claim.attempt_record, "lost", claim.queue)
        if job is None:
            log.error("job %s lost its RQ record; cannot requeue it", claim.job_id)
            return
        queue.enqueue_job(job, at_front=True)
        log.info("job %s: lease expired (worker gone); requeued from checkpoint %d", claim.job_id, claim.seq)

    def run(self, stop: threading.Event, interval: float = REAP_INTERVAL) -> None:
        while not stop.is_set():
            try:
                self.reap_once()
            except redis.RedisError as exc:  # keep reaping once Redis is back
                log.warning("reaper: %s", exc)
            stop.wait(interval)


def _park_reason(claim: Claim) -> str:
    if claim.stuck >= claim.max_stuck:
        return (f"lost {claim.stuck} times at checkpoint {claim.seq} without progress (its worker died each "
                "time: look for the whole container being killed)")
    if claim.attempt >= claim.max_attempts:
        return f"gave up after {claim.attempt} attempts (max_attempts); last: lost"
    return ""


def _forget_started(connection: redis.Redis, claim: Claim) -> None:
    registry = StartedJobRegistry(claim.queue, connection=connection)
    members = [m for m in connection.zrange(registry.key, 0, -1) if m.decode().split(":", 1)[0] == claim.job_id]
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
                slot.process = subprocess.Popen(self.argv, env=self.env)
                slot.started_at = now
                log.info("worker started (pid %d)", slot.process.pid)

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
        assert self.process is not None
        code = self.process.returncode
        self.crashes = self.crashes + 1 if now - self.started_at < self.YOUNG else 0
        delay = min(self.MAX_DELAY, 2.0 ** (self.crashes - 1)) if self.crashes else 0.0
        log.warning("worker pid %d exited (%s); restarting in %.0f s", self.process.pid, code, delay)
        self.restart_at = now + delay
        self.process = None


def run_supervisor(settings: Settings, interval: float = REAP_INTERVAL, workers: int = 0,
                   worker_args: list[str] | None = None) -> int:
    """`resilient supervisor`: reap expired leases (and keep `workers` local workers running) until SIGTERM."""
    connection, url = open_redis(settings)
    stop = threading.Event()

    def request_stop(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    manager = None
    if workers:
        env = {**os.environ, "REDIS_URL": resolve_url(settings)}
        manager = WorkerManager(workers, [sys.executable, "-m", "resilient", "worker", *(worker_args or [])], env)
    log.info("supervisor on %s: reaping every %.1f s (lease ttl %.0f s)%s", url, interval, settings.lease_ttl,
             f", keeping {workers} workers" if workers else "")
    reaper = Reaper(connection, settings)
    while not stop.is_set():
        if manager is not None:
            manager.tick(time.monotonic())
        try:
            reaper.reap_once()
        except redis.RedisError as exc:
            log.warning("reaper: %s", exc)
        stop.wait(interval)
    if manager is not None:
        manager.stop(settings.shutdown_grace + 5)
    return 0
