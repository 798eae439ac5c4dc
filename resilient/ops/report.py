"""What status and inspect show, as plain data (the CLI formats it)."""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any, cast

import redis
from rq.queue import Queue
from rq.registry import StartedJobRegistry
from rq.worker import Worker

from ..config import Settings
from ..errors import CorruptCheckpoint
from ..model import Death, JobStatus, Level
from ..runtime.deaths import describe
from ..runtime.memory_history import series
from ..storage import keys, redis_settings
from ..storage.codec import MsgpackSerializer, decode
from ..storage.store import Store

DEFAULTS = Settings()  # for records written before a field existed


def status(connection: redis.Redis, store: Store, running_limit: int | None = None) -> dict[str, Any]:
    """Queues (depth), workers (state, current job, memory), limit groups and running jobs (progress,
    attempt). A few round trips per queue and per worker, one for all the running jobs, one for all the
    delayed ones: none per job. `running_limit`: summarise at most this many running jobs (top shows a
    screenful); `running_count` counts them all."""
    queues = Queue.all(connection=connection, serializer=MsgpackSerializer)
    running_ids, running_count = _running(connection, [q.name for q in queues], running_limit)
    workers, published = [], []
    for w in Worker.all(connection=connection, serializer=MsgpackSerializer):
        published.append(_published(connection, w.name))
        workers.append({"name": w.name, "hostname": w.hostname, "pid": w.pid, "state": str(w.get_state()),
                        "queues": w.queue_names(), "current_job": w.get_current_job_id(),
                        "silent_s": _silence(published[-1]), **worker_memory(published[-1])})
    delayed = _delayed(connection)
    return {
        "queues": [{"name": q.name, "depth": q.count, "finished": q.finished_job_registry.count,
                    "delayed": delayed.get(q.name, 0)} for q in queues],
        "workers": workers,
        "groups": limit_groups(store, list(zip(workers, published))),
        "running": job_summaries(store, running_ids),
        "running_count": running_count,
        "parked": store.parked_count(),
        "recent_deaths": store.recent_deaths(10),
        "redis": redis_footprint(connection, store),
    }


def _running(connection: redis.Redis, queues: list[str], limit: int | None) -> tuple[list[str], int]:
    """The ids in RQ's started registries (up to `limit`, each once) and how many entries they hold, in one
    round trip. Read as they are: RQ's own cleanup of a registry fetches each expired entry's job and fails
    it, which is its workers' business (and our reaper's), not a view's."""
    registries = [StartedJobRegistry(name, connection=connection).key for name in queues]
    with connection.pipeline(transaction=False) as pipe:
        for key in registries:
            pipe.zcard(key)
            pipe.zrange(key, 0, -1 if limit is None else limit - 1)
        replies = pipe.execute()
    members = [member for entries in replies[1::2] for member in cast(list[bytes], entries)]
    ids = list(dict.fromkeys(StartedJobRegistry.parse_job_id(m.decode()) for m in members))
    return ids[:limit], sum(int(count) for count in replies[0::2])


def _delayed(connection: redis.Redis) -> dict[str, int]:
    """Retries waiting out their backoff, per queue (two round trips for all of them)."""
    ids = [i.decode() for i in cast(list[bytes], connection.zrange(keys.DELAYED, 0, -1))]
    with connection.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.hget(keys.job(job_id), "queue")
        queues = cast(list[bytes | None], pipe.execute())
    return dict(Counter(queue.decode() for queue in queues if queue is not None))


def held(connection: redis.Redis, store: Store, limit: int = 500) -> dict[str, Any]:
    """Jobs that wait for an operator or a clock: parked (with their reason and since when) and delayed
    retries (with when they are due), oldest first, each summarised; up to `limit` of each, counted in full.
    Four round trips whatever the numbers."""
    with connection.pipeline(transaction=False) as pipe:
        for key in (keys.PARKED, keys.DELAYED):
            pipe.zcard(key)
            pipe.zrange(key, 0, limit - 1, withscores=True)
        parked_count, parked, delayed_count, delayed = pipe.execute()
    return {"parked": _held(store, parked, "parked_at"), "parked_count": int(parked_count),
            "delayed": _held(store, delayed, "due_at"), "delayed_count": int(delayed_count)}


def _held(store: Store, entries: list[tuple[bytes, float]], when: str) -> list[dict[str, Any]]:
    ids = [member.decode() for member, _ in entries]
    at = {member.decode(): int(score) for member, score in entries}
    return [{**summary, when: at[summary["id"]]} for summary in job_summaries(store, ids)]


def redis_footprint(connection: redis.Redis, store: Store, sample: int = 20) -> dict[str, Any]:
    """What Redis holds against its maxmemory, and what the retained jobs' own keys take: their number, and
    their bytes estimated from a sample of `sample` jobs (MEMORY USAGE), two round trips whatever the count."""
    use = redis_settings.memory_use(connection)
    retained, sampled = store.retained_jobs(sample)
    per_job = sum(sampled) / len(sampled) if sampled else 0.0
    return {"used_memory": use.used, "maxmemory": use.maxmemory, "maxmemory_policy": use.policy,
            "retained_jobs": retained, "retained_bytes": int(per_job * retained),
            "keep": store.keep, "keep_failed": store.keep_failed}


def _published(connection: redis.Redis, name: str) -> dict[str, str]:
    """The status hash the worker writes at each of its beats (empty once it has expired)."""
    status = cast(dict[bytes, bytes], connection.hgetall(keys.worker_status(name)))
    return {k.decode(): v.decode() for k, v in status.items()}


def _silence(raw: dict[str, str]) -> float | None:
    """Seconds since the worker last published its status (a live one does about every second; a worker
    killed whole stays registered in RQ until its registration expires, minutes later)."""
    return round(max(0.0, time.time() - int(raw["beat_at"])), 1) if raw.get("beat_at") else None


def worker_memory(raw: dict[str, str]) -> dict[str, Any]:
    """What the worker last published: usage (RSS of its group) against its limit L, and the level; its
    horse's RSS; under a shared limit, its limit group and the job it waits for headroom for."""
    if not raw:
        return {"rss": None, "limit": None, "limit_source": None, "level": None, "soft": None, "hard": None,
                "group": None, "horse_rss": None, "waiting_for": None}
    waiting = {"job": raw.get("waiting_job", ""), "expected": int(raw.get("waiting_expected", 0)) or None}
    return {"rss": int(raw["rss"]), "limit": int(raw["limit"]), "limit_source": raw["limit_source"],
            "level": raw["level"], "soft": float(raw.get("soft", DEFAULTS.soft)),
            "hard": float(raw.get("hard", DEFAULTS.hard)), "group": raw.get("group") or None,
            "horse_rss": int(raw.get("horse_rss", 0)), "waiting_for": waiting if waiting["job"] else None}


def limit_groups(store: Store, workers: list[tuple[dict[str, Any], dict[str, str]]]) -> list[dict[str, Any]]:
    """The workers that share a memory limit (each with what it published), one entry per group."""
    by_group: dict[str, list[tuple[dict[str, Any], dict[str, str]]]] = {}
    for worker, raw in workers:
        if worker["group"]:
            by_group.setdefault(worker["group"], []).append((worker, raw))
    return [_group(store, gid, members) for gid, members in sorted(by_group.items())]


def _group(store: Store, gid: str, members: list[tuple[dict[str, Any], dict[str, str]]]) -> dict[str, Any]:
    """Its limit, usage and lines in bytes (each the most cautious of its members' last readings), its
    members with the job each runs and its horse's RSS, the jobs they wait for headroom for, and how many
    times the group has chosen a horse to step aside for the others."""
    members = sorted(members, key=lambda member: member[0]["name"])
    workers = [worker for worker, _ in members]
    limit = min(w["limit"] for w in workers)
    return {
        "id": gid,
        "host": workers[0]["hostname"],
        "limit": limit,
        "usage": max(w["rss"] for w in workers),
        "soft": int(min(w["soft"] for w in workers) * limit),
        "hard": int(min(w["hard"] for w in workers) * limit),
        "level": max((Level(w["level"]) for w in workers), key=lambda level: level.rank),
        "members": [{"worker": w["name"], "pid": w["pid"], "state": w["state"], "job": raw.get("job") or None,
                     "horse_rss": w["horse_rss"]} for w, raw in members],
        "waiting": [{**w["waiting_for"], "worker": w["name"]} for w in workers
                    if w["waiting_for"] and _still_queued(store, w["waiting_for"]["job"])],
        "step_asides": max(int(raw.get("step_asides", 0)) for _, raw in members),
    }


def _still_queued(store: Store, job_id: str) -> bool:
    """A worker goes on naming the job it last handed back until it takes another: once another worker
    has taken that job, this one waits for nothing."""
    return store.job_fields(job_id).get("status") == JobStatus.QUEUED


SUMMARY_FIELDS = ("name", "queue", "status", "attempt", "done", "total", "seq", "saved_at", "deaths", "worker",
                  "horse_pid", "parked_reason", "error")


def job_summary(store: Store, job_id: str) -> dict[str, Any]:
    return _summary(job_id, store.job_fields(job_id))


def job_summaries(store: Store, job_ids: list[str]) -> list[dict[str, Any]]:
    """The summaries of these jobs, in one round trip; a job whose record is gone is left out."""
    return [_summary(job_id, fields) for job_id, fields in zip(job_ids, store.jobs_fields(job_ids, SUMMARY_FIELDS))
            if fields]


def _summary(job_id: str, fields: dict[str, str]) -> dict[str, Any]:
    if not fields:
        return {}
    total = int(fields.get("total", -1))
    saved_at = int(fields.get("saved_at", 0))
    return {
        "id": job_id,
        "name": fields.get("name"),
        "queue": fields.get("queue"),
        "status": fields.get("status"),
        "attempt": int(fields.get("attempt", 0)),
        "done": int(fields.get("done", 0)),
        "total": None if total < 0 else total,
        "checkpoint_seq": int(fields.get("seq", 0)),
        "checkpoint_age_s": round(time.time() - saved_at / 1000, 1) if saved_at else None,
        "deaths": int(fields.get("deaths", 0)),
        "worker": fields.get("worker"),
        "pid": int(fields["horse_pid"]) if fields.get("horse_pid") else None,  # the process running the job
        "parked_reason": fields.get("parked_reason"),
        "error": fields.get("error"),
    }


def inspect(store: Store, job_id: str) -> dict[str, Any]:
    """One job: summary, its timeline (deaths explained in words), its checkpoint history."""
    summary = job_summary(store, job_id)
    if not summary:
        return {}
    timeline = store.events(job_id)
    for event in timeline:
        if event.get("type") == "died":
            event["explanation"] = describe(Death(event.get("cause", "unknown"), event.get("evidence") or {}))
    fields = store.job_fields(job_id)
    memory = {
        "limit": int(fields["limit"]) if "limit" in fields else None,
        "limit_source": fields.get("limit_source"),
        "soft": float(fields.get("soft", DEFAULTS.soft)),
        "hard": float(fields.get("hard", DEFAULTS.hard)),
        "critical": float(fields.get("critical", DEFAULTS.critical)),
        "samples": series(store, job_id, summary["attempt"]),
    }
    return {**summary, "timeline": timeline, "checkpoints": store.checkpoint_history_entries(job_id),
            "memory": memory, "result": _result(store, job_id, summary["status"])}


def _result(store: Store, job_id: str, status: str | None) -> Any:
    """A completed job's return value (None otherwise); a record that cannot be read is reported, not raised."""
    if status != JobStatus.COMPLETED:
        return None
    try:
        value = decode(store.result_bytes(job_id) or b"\xc0", key=f"result of {job_id}")
    except CorruptCheckpoint as exc:
        return f"(unreadable: {exc})"
    try:
        json.dumps(value, default=str)  # what --json and the dashboard print; msgpack allows more (bytes keys)
    except (TypeError, ValueError):
        return repr(value)
    return value
