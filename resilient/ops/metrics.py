"""Prometheus metrics (`--metrics-port`). Workers fork a horse per job, so counters and histograms use
prometheus-client's multiprocess mode: every process writes its own file and the parent's HTTP server adds
them up. When a horse exits, its files are added into the worker's archive files and removed, so totals keep
what it counted while the directory holds a few files whatever the number of jobs. The memory gauges are
the parent's alone: they are served from memory, never from files. Without --metrics-port every call here
is a no-op."""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path
from typing import Any

import redis

from ..model import MEMORY_CAUSES, PREEMPTIONS, Level

_enabled = False
_m: dict[str, Any] = {}
_gauges: dict[str, float] = {}  # the parent's memory gauges, by metric name
_group_gauges: dict[str, tuple[str, float]] = {}  # the same for its limit group: name -> (group id, value)
_files_lock = threading.Lock()  # a scrape never sees a horse's file half folded into the archive
GAUGE_HELP = {
    "resilient_worker_rss_bytes": "Memory counted against the limit (RSS of the worker's group)",
    "resilient_memory_limit_bytes": "The worker's memory limit L",
    "resilient_pressure_level": "0 ok, 1 soft, 2 hard, 3 critical",
    "resilient_checkpoint_age_seconds": "Seconds since the running job's last checkpoint",
    "resilient_group_usage_bytes": "Memory counted against the limit the worker's group shares",
    "resilient_group_limit_bytes": "The limit L the worker's group shares",
    "resilient_group_horse_rss_bytes": "RSS of the worker's horse: its share of the group's usage",
}


def enable(port: int, connection: redis.Redis) -> None:
    """Start serving; must run before any horse is forked (it sets where every process writes)."""
    global _enabled
    directory = os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="resilient-metrics-"))
    os.makedirs(directory, exist_ok=True)
    from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

    _m.update(
        deaths=Counter("resilient_job_deaths_total", "Attempts that ended in a death, by cause", ["cause"]),
        memory_deaths=Counter("resilient_memory_deaths_total", "Memory deaths, by whose doing: the job's "
                              "neighbours under a shared limit, or the job itself", ["blame"]),
        preemptions=Counter("resilient_preemptions_total", "Attempts that stepped aside, by reason", ["reason"]),
        redone=Counter("resilient_work_redone_items_total", "Items done again after a death"),
        save=Histogram("resilient_checkpoint_save_seconds", "Time to persist a checkpoint",
                       buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)),
    )
    registry = CollectorRegistry()
    registry.register(FilesCollector(directory))
    registry.register(GaugeCollector())
    registry.register(RqCollector(connection))
    start_http_server(port, registry=registry)
    _enabled = True


def death(cause: str, redone_items: int = 0, for_neighbours: bool = False) -> None:
    """Count a judged death; a memory death also by blame (`for_neighbours`: see deaths.blame)."""
    if not _enabled:
        return
    _m["deaths"].labels(cause).inc()
    if cause in MEMORY_CAUSES:
        _m["memory_deaths"].labels("neighbours" if for_neighbours else "self").inc()
    if cause in PREEMPTIONS:
        _m["preemptions"].labels(cause.split(":", 1)[1]).inc()
    if redone_items > 0:
        _m["redone"].inc(redone_items)


def memory(rss: int, limit: int, level: str) -> None:
    if _enabled:
        _gauges.update(resilient_worker_rss_bytes=rss, resilient_memory_limit_bytes=limit,
                       resilient_pressure_level=Level(level).rank)


def group(gid: str, usage: int, limit: int, horse_rss: int) -> None:
    """The limit group's usage and limit, and this worker's horse's share, labelled by the group's id."""
    if _enabled:
        _group_gauges.update(resilient_group_usage_bytes=(gid, usage), resilient_group_limit_bytes=(gid, limit),
                             resilient_group_horse_rss_bytes=(gid, horse_rss))


def checkpoint_age(seconds: float) -> None:
    if _enabled:
        _gauges.update(resilient_checkpoint_age_seconds=seconds)


def checkpoint_saved(seconds: float) -> None:
    if _enabled:
        _m["save"].observe(seconds)


def process_exited(pid: int) -> None:
    """A horse is gone: add what it counted into this worker's archive files and remove its own."""
    if not _enabled:
        return
    from prometheus_client import multiprocess
    from prometheus_client.mmap_dict import MmapedDict

    directory = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    with _files_lock:
        for kind in ("counter", "histogram"):
            horse_file = directory / f"{kind}_{pid}.db"
            if not horse_file.exists():
                continue
            # "<kind>_…": the collector reads the kind from the name, and adds counters and buckets up
            archive = MmapedDict(str(directory / f"{kind}_archive-{os.getpid()}.db"))
            try:
                for key, value, timestamp, _ in MmapedDict.read_all_values_from_file(str(horse_file)):
                    archive.write_value(key, archive.read_value(key)[0] + value, timestamp)
            finally:
                archive.close()
            horse_file.unlink()
        multiprocess.mark_process_dead(pid, str(directory))  # any gauge file a horse may have made


class FilesCollector:
    """prometheus-client's MultiProcessCollector, read under the lock process_exited folds files with."""

    def __init__(self, directory: str) -> None:
        from prometheus_client.multiprocess import MultiProcessCollector

        self._files = MultiProcessCollector(None, directory)

    def collect(self) -> Any:
        with _files_lock:
            return list(self._files.collect())


class GaugeCollector:
    """The parent's memory gauges, as last set by `memory()` and `group()`."""

    def collect(self) -> Any:
        from prometheus_client.core import GaugeMetricFamily

        for name, value in _gauges.items():
            yield GaugeMetricFamily(name, GAUGE_HELP[name], value=value)
        for name, (gid, value) in _group_gauges.items():
            family = GaugeMetricFamily(name, GAUGE_HELP[name], labels=["group"])
            family.add_metric([gid], value)
            yield family


class RqCollector:
    """rq-exporter's names, read from Redis at scrape time: rq_workers, rq_jobs{queue,status}."""

    def __init__(self, connection: redis.Redis) -> None:
        self.connection = connection

    def collect(self) -> Any:
        from prometheus_client.core import GaugeMetricFamily
        from rq.queue import Queue
        from rq.worker import Worker

        from ..storage.codec import MsgpackSerializer

        workers = GaugeMetricFamily("rq_workers", "RQ workers", labels=["state"])
        states: dict[str, int] = {}
        for worker in Worker.all(connection=self.connection, serializer=MsgpackSerializer):
            states[str(worker.get_state())] = states.get(str(worker.get_state()), 0) + 1
        for state, count in states.items():
            workers.add_metric([state], count)
        yield workers
        jobs = GaugeMetricFamily("rq_jobs", "RQ jobs by queue and status", labels=["queue", "status"])
        for queue in Queue.all(connection=self.connection, serializer=MsgpackSerializer):
            # counted without RQ's clean-up, which a scrape must not run: it fetches (and fails) each expired entry
            registries = (("started", queue.started_job_registry), ("failed", queue.failed_job_registry),
                          ("finished", queue.finished_job_registry), ("scheduled", queue.scheduled_job_registry))
            for status, count in (("queued", queue.count),
                                  *((name, registry.get_job_count(cleanup=False)) for name, registry in registries)):
                jobs.add_metric([queue.name, status], count)
        yield jobs
        yield from self._redis_memory()

    def _redis_memory(self) -> Any:
        """What Redis holds against its maxmemory (0: none set): alert well before the high-water mark."""
        from prometheus_client.core import GaugeMetricFamily

        from ..storage.redis_settings import memory_use

        use = memory_use(self.connection)
        yield GaugeMetricFamily("resilient_redis_used_memory_bytes", "Redis INFO used_memory", value=use.used)
        yield GaugeMetricFamily("resilient_redis_maxmemory_bytes", "Redis maxmemory (0: no limit)",
                                value=use.maxmemory)
