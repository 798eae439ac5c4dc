"""The reaper: attempts whose lease expired (worker or container gone) go back to their queue."""

from __future__ import annotations

import logging
import threading
from typing import Any

import redis
from rq.registry import StartedJobRegistry

from .config import Settings
from .connection import open_redis
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


def run_supervisor(settings: Settings, interval: float = REAP_INTERVAL) -> int:
    """`resilient supervisor`: reap until SIGTERM/SIGINT."""
    import signal

    connection, url = open_redis(settings)
    stop = threading.Event()

    def request_stop(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    log.info("supervisor reaping expired leases on %s every %.1f s (lease ttl %.0f s)", url, interval,
             settings.lease_ttl)
    Reaper(connection, settings).run(stop, interval)
    return 0
