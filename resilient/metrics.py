"""Prometheus metrics (`--metrics-port`). Workers fork a horse per job, so metrics use prometheus-client's
multiprocess mode: every process writes its own file, the parent's HTTP server adds them up, and what a
horse counted survives its death. Without --metrics-port every call here is a no-op."""

from __future__ import annotations

import os
import tempfile
from typing import Any

import redis

from .model import Level

_enabled = False
_m: dict[str, Any] = {}


def enable(port: int, connection: redis.Redis) -> None:
    """Start serving; must run before any horse is forked (it sets where every process writes)."""
    global _enabled
    directory = os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="resilient-metrics-"))
    os.makedirs(directory, exist_ok=True)
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    _m.update(
        deaths=Counter("resilient_job_deaths_total", "Attempts that ended in a death, by cause", ["cause"]),
        preemptions=Counter("resilient_preemptions_total", "Attempts that stepped aside, by reason", ["reason"]),
        redone=Counter("resilient_work_redone_items_total", "Items done again after a death"),
        rss=Gauge("resilient_worker_rss_bytes", "Memory counted against the limit (RSS of the worker's group)",
                  multiprocess_mode="liveall"),
        limit=Gauge("resilient_memory_limit_bytes", "The worker's memory limit L", multiprocess_mode="liveall"),
        level=Gauge("resilient_pressure_level", "0 ok, 1 soft, 2 hard, 3 critical", multiprocess_mode="liveall"),
        checkpoint_age=Gauge("resilient_checkpoint_age_seconds", "Seconds since the running job's last checkpoint",
                             multiprocess_mode="liveall"),
        save=Histogram("resilient_checkpoint_save_seconds", "Time to persist a checkpoint",
                       buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)),
    )
    registry = CollectorRegistry()
    MultiProcessCollector(registry, directory)
    registry.register(RqCollector(connection))
    start_http_server(port, registry=registry)
    _enabled = True


def death(cause: str, redone_items: int = 0) -> None:
    if not _enabled:
        return
    _m["deaths"].labels(cause).inc()
    if cause.startswith("preempted:"):
        _m["preemptions"].labels(cause.split(":", 1)[1]).inc()
    if redone_items > 0:
        _m["redone"].inc(redone_items)


def memory(rss: int, limit: int, level: str) -> None:
    if _enabled:
        _m["rss"].set(rss)
        _m["limit"].set(limit)
        _m["level"].set(Level(level).rank)


def checkpoint_age(seconds: float) -> None:
    if _enabled:
        _m["checkpoint_age"].set(seconds)


def checkpoint_saved(seconds: float) -> None:
    if _enabled:
        _m["save"].observe(seconds)


def process_exited(pid: int) -> None:
    """A horse is gone: drop its live gauges (its counters stay counted)."""
    if _enabled:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


class RqCollector:
    """rq-exporter's names, read from Redis at scrape time: rq_workers, rq_jobs{queue,status}."""

    def __init__(self, connection: redis.Redis) -> None:
        self.connection = connection

    def collect(self) -> Any:
        from prometheus_client.core import GaugeMetricFamily
        from rq.queue import Queue
        from rq.worker import Worker

        from .codec import MsgpackSerializer

        workers = GaugeMetricFamily("rq_workers", "RQ workers", labels=["state"])
        states: dict[str, int] = {}
        for worker in Worker.all(connection=self.connection, serializer=MsgpackSerializer):
            states[str(worker.get_state())] = states.get(str(worker.get_state()), 0) + 1
        for state, count in states.items():
            workers.add_metric([state], count)
        yield workers
        jobs = GaugeMetricFamily("rq_jobs", "RQ jobs by queue and status", labels=["queue", "status"])
        for queue in Queue.all(connection=self.connection, serializer=MsgpackSerializer):
            for status, count in (("queued", queue.count), ("started", queue.started_job_registry.count),
                                  ("failed", queue.failed_job_registry.count),
                                  ("finished", queue.finished_job_registry.count),
                                  ("scheduled", queue.scheduled_job_registry.count)):
                jobs.add_metric([queue.name, status], count)
        yield jobs
