"""Redis is shared and long-lived: every key written for a job expires once the job has ended, the global
indexes are trimmed, and a finished job costs little while it is kept."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import testjobs
from conftest import ROOT, cli_json, wait_until

from resilient import JobFailed, JobParked
from resilient.config import Settings
from resilient.model import Cause, Death
from resilient.storage import keys
from resilient.storage.codec import encode
from resilient.storage.store import Store, now_ms


def _own_keys(redis_client, job_id: str) -> list[str]:
    return sorted(k.decode() for k in redis_client.scan_iter(f"resilient:*:{job_id}*"))


def test_every_key_of_an_ended_job_expires(client, start_worker, redis_url, redis_client, monkeypatch):
    """Completed, failed and parked jobs run by a real worker: each of their keys (hash, timeline, checkpoint
    and its history, memory history) has a TTL: the completed one `keep`, the others `keep_failed`; after
    it, nothing of theirs is left, and the next pass trims the indexes."""
    monkeypatch.setenv("RESILIENT_KEEP", "3s")
    monkeypatch.setenv("RESILIENT_KEEP_FAILED", "4s")
    start_worker("--memory-limit", "300M")
    done = testjobs.count_items.enqueue_call((redis_url, 120, 0.01), client=client)  # > 1 s: memory samples
    failed = testjobs.raises.enqueue_call(("boom",), client=client)
    parked = testjobs.declared_too_big.enqueue_call((redis_url, "k"), client=client)
    assert done.result(timeout=60) == sum(range(120))
    with pytest.raises(JobFailed):
        failed.result(timeout=30)
    with pytest.raises(JobParked):
        parked.result(timeout=30)

    kept = {job.id: _own_keys(redis_client, job.id) for job in (done, failed, parked)}
    assert {keys.memory(done.id, 1), keys.checkpoint(done.id), keys.checkpoint_history(done.id)} <= set(kept[done.id])
    for job_id, names in kept.items():
        ttls = {name: redis_client.ttl(name) for name in names}
        wanted = 3 if job_id == done.id else 4
        assert all(0 < ttl <= wanted for ttl in ttls.values()), ttls
    wait_until(lambda: not any(_own_keys(redis_client, job_id) for job_id in kept), timeout=10,
               what="the ended jobs' keys to expire")
    wait_until(lambda: redis_client.zcard(keys.JOBS) == 0 and redis_client.zcard(keys.PARKED) == 0, timeout=10,
               what="the indexes to be trimmed by the worker's next pass")


def test_a_jobs_own_keep_wins_and_a_requeue_keeps_it_for_good(client, redis_client):
    store = Store(client.connection, Settings(keep=60, keep_failed=600))
    store.create_job("own", "tests.fn", "tests", 10, keep=7 * 86400)
    _, attempt = store.begin_attempt("own", "w", "h")
    store.save_checkpoint(attempt, encode({"n": 1}))
    store.complete(attempt, encode(1))
    assert 7 * 86400 - 5 < redis_client.ttl(keys.job("own")) <= 7 * 86400

    store.create_job("parked", "tests.fn", "tests", 10)
    _, attempt = store.begin_attempt("parked", "w", "h")
    store.save_checkpoint(attempt, encode({"n": 1}))
    store.park(attempt, "for the test")
    names = _own_keys(redis_client, "parked")
    assert len(names) == 4 and all(550 < redis_client.ttl(name) <= 600 for name in names)
    redis_client.hset(keys.rq_job("parked"), "status", "failed")
    assert store.release("parked", more_attempts=1) == "OK"
    assert {redis_client.ttl(name) for name in names} == {-1}, "a job running again must not expire"


def test_a_finished_trivial_job_keeps_at_most_2_kib(client, start_worker, redis_url, redis_client):
    """What our own keys of a retained, finished job cost (RQ's own keys excluded), as Redis counts it."""
    start_worker()
    handle = testjobs.side_effect.enqueue_call((redis_url, "k"), client=client)
    assert handle.result(timeout=30) == "ran"
    names = _own_keys(redis_client, handle.id)
    cost = sum(redis_client.memory_usage(name, samples=0) for name in names)
    assert cost <= 2048, {name: redis_client.memory_usage(name, samples=0) for name in names}


def test_the_timeline_keeps_its_newest_events_and_reports_a_corrupt_one(client, redis_client):
    store = Store(client.connection, Settings(event_history=5))
    store.create_job("t", "tests.fn", "tests", 100)
    for _ in range(4):
        _, attempt = store.begin_attempt("t", "w", "h")
        store.record_death(attempt, Death(Cause.KILLED, {"at": now_ms()}))
        store.mark_requeued(attempt, Cause.KILLED, "tests")
    timeline = store.events("t")
    assert [e["type"] for e in timeline] == ["died", "requeued", "started", "died", "requeued"]
    assert timeline[0]["evidence"]["at"] > 0
    redis_client.rpush(keys.events("t"), b"\xc1not msgpack")
    assert store.events("t")[-1] == {"type": "corrupt", "error": store.events("t")[-1]["error"]}


def test_status_shows_what_redis_holds_and_what_is_retained(client, redis_url):
    store = Store(client.connection, Settings())
    for n in range(30):
        store.create_job(f"kept-{n}", "tests.fn", "tests", 10)
        _, attempt = store.begin_attempt(f"kept-{n}", "w", "h")
        store.complete(attempt, encode(n))
    footprint = cli_json(redis_url, "status")["redis"]
    assert footprint["used_memory"] > 0 and footprint["maxmemory_policy"] == "noeviction"
    assert footprint["retained_jobs"] == 30
    assert 30 * 300 < footprint["retained_bytes"] < 30 * 2048
    assert footprint["keep"] == 7 * 86400 and footprint["keep_failed"] == 30 * 86400
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'tests'}{os.pathsep}{ROOT}"}
    plain = subprocess.run([sys.executable, "-m", "resilient", "--redis-url", redis_url, "status"],
                           capture_output=True, text=True, env=env, timeout=30).stdout
    assert "30 jobs retained" in plain and "kept 7 d completed, 30 d failed or parked" in plain
