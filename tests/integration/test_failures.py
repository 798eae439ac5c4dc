"""Poison jobs, fencing, shutdown, and bad input: what a user sees when things go wrong."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time

import psutil
import pytest
import testjobs
from conftest import ROOT, wait_until

from resilient import CheckpointError, ConfigError, JobFailed, JobParked, NoSuchJob
from resilient.errors import StaleAttempt
from resilient.ops.admin import requeue_job
from resilient.runtime.rqjob import rq_queue
from resilient.storage import keys
from resilient.storage.codec import encode


def test_poison_job_is_parked_after_three_deaths(client, start_worker, redis_url):
    """A job that dies before its first checkpoint every time is parked with a diagnosis, not retried forever."""
    start_worker()
    handle = testjobs.die_at_once.enqueue_call((redis_url,), client=client)
    with pytest.raises(JobParked) as parked:
        handle.result(timeout=60)
    assert "died 3 times at checkpoint 0 without progress" in parked.value.reason
    assert handle.attempts == 3
    assert [e["cause"] for e in handle.events() if e["type"] == "died"] == ["killed"] * 3
    assert (handle.id, ) == tuple(j for j, _ in client.store.parked())


def test_job_that_raises_fails_with_its_error(client, start_worker):
    """A real bug is not resumed: the job fails once, with the exception text."""
    start_worker()
    handle = testjobs.raises.enqueue_call(("boom",), client=client)
    with pytest.raises(JobFailed, match="ValueError: boom"):
        handle.result(timeout=30)
    assert handle.attempts == 1


def test_stale_epoch_writes_nothing(client):
    """A checkpoint, result or progress write under an old epoch raises StaleAttempt and changes nothing."""
    client.store.create_job("j1", "x.y", "tests", 10)
    _, first = client.store.begin_attempt("j1", "w1", "h")
    assert client.store.save_checkpoint(first, encode({"n": 1})) == 1
    _, second = client.store.begin_attempt("j1", "w2", "h")
    assert client.store.save_checkpoint(second, encode({"n": 2})) == 2

    with pytest.raises(StaleAttempt):
        client.store.save_checkpoint(first, encode({"n": 99}))
    with pytest.raises(StaleAttempt):
        client.store.complete(first, encode("stale result"))
    with pytest.raises(StaleAttempt):
        client.store.set_fields(first, done=99)
    assert client.store.load_checkpoint("j1").seq == 2
    fields = client.store.job_fields("j1")
    assert fields["status"] == "running" and "done" not in fields
    assert client.store.result_bytes("j1") is None


def test_epochs_come_from_the_server_clock_and_never_go_back(client, redis_client):
    """The next epoch is the server's ms, or one more than the last: the number a BEGIN lost in a failover
    handed out is below the next primary's clock by then, so it is not handed out again. CLAIM and RELEASE
    take theirs the same way."""
    store = client.store
    store.create_job("j1", "x.y", "tests", 10)
    _, first = store.begin_attempt("j1", "w1", "h")
    server_ms = store.server_ms()
    assert server_ms - 5000 < first.epoch <= server_ms
    _, second = store.begin_attempt("j1", "w2", "h")
    assert second.epoch > first.epoch
    redis_client.hset("resilient:job:j1", "epoch", server_ms + 10**6)  # an epoch ahead of this clock
    _, third = store.begin_attempt("j1", "w3", "h")
    assert third.epoch == server_ms + 10**6 + 1
    claim = store.claim_lost("j1", server_ms + 10**6)  # its lease deadline has passed by then
    assert claim is not None and claim.attempt.epoch == third.epoch + 1
    lost = [e for e in store.events("j1") if e["type"] == "died"]
    assert [int(e["epoch"]) for e in lost] == [third.epoch]


def test_sigterm_requeues_job_with_checkpoint_and_exits_zero(client, start_worker, redis_url, redis_client):
    """SIGTERM: the job checkpoints at its next safe point, goes back to the front, the worker exits 0."""
    worker = start_worker("--shutdown-grace", "10")
    handle = testjobs.slow_saver.enqueue_call((redis_url, 100000), client=client)
    wait_until(lambda: redis_client.llen(f"log:{handle.id}") >= 20, what="job running")
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.proc.wait(timeout=10) == 0
    fields = client.store.job_fields(handle.id)
    assert fields["status"] == "queued"
    assert int(fields["seq"]) >= 1  # the checkpoint interval is an hour: this one was made for shutdown
    assert rq_queue("tests", redis_client).get_job_ids() == [handle.id]
    assert [e["cause"] for e in handle.events() if e["type"] == "died"] == ["preempted:shutdown"]


def test_second_sigterm_exits_at_once_and_job_still_resumes(client, start_worker, redis_url, redis_client):
    """Two SIGTERMs: the worker exits now; the job resumes elsewhere from its last checkpoint."""
    worker = start_worker("--shutdown-grace", "30")
    handle = testjobs.count_items.enqueue_call((redis_url, 400, 0.02), client=client)
    wait_until(lambda: int(client.store.job_fields(handle.id).get("seq", 0)) >= 2, what="checkpoints")
    horse = int(client.store.job_fields(handle.id)["horse_pid"])
    os.kill(horse, signal.SIGSTOP)  # a job that will not reach a safe point by itself
    worker.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: "warm shut down" in worker.output(), what="first SIGTERM handled")
    time.sleep(1.1)  # RQ ignores a second signal within 1 s of the first (its duplicate-delivery guard)
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.proc.wait(timeout=10) == 0
    start_worker()
    assert handle.result(timeout=60) == sum(range(400))
    assert handle.attempts == 2


def test_unserializable_state_fails_at_save(client):
    """A set in the state fails at ctx.save with the path of the bad value."""
    from resilient.api.context import Context
    from resilient.api.registry import JobOptions

    client.store.create_job("j2", "x.y", "tests", 10)
    _, attempt = client.store.begin_attempt("j2", "w", "h")
    ctx = Context(attempt, client.store, JobOptions(), None, max_checkpoint_bytes=1024)
    with pytest.raises(CheckpointError, match=r"state\['rows'\]\[3\]: set is not serializable"):
        ctx.save({"rows": [1, 2, 3, {4}]})
    with pytest.raises(CheckpointError, match="above the 1.0 KiB cap"):
        ctx.save({"blob": b"x" * 2000})
    assert client.store.load_checkpoint("j2") is None


def test_corrupt_checkpoint_parks_job_and_worker_keeps_running(client, start_worker, redis_url, redis_client):
    """Garbage bytes in the checkpoint key: the job is parked (CorruptCheckpoint); the worker runs the next job."""
    client.store.create_job("bad", "testjobs.count_items", "tests", 10)
    redis_client.hset(keys.checkpoint("bad"), mapping={"seq": 5, "data": b"\xc1\xff garbage", "saved_at": 1})
    rq_queue("tests", redis_client).enqueue_call(func="testjobs.count_items", args=(redis_url, 5), job_id="bad")
    start_worker()
    with pytest.raises(JobParked, match="checkpoint cannot be read"):
        client.handle("bad").result(timeout=30)
    assert testjobs.count_items.enqueue_call((redis_url, 5), client=client).result(timeout=30) == 10
    assert requeue_job(client, "bad", restart=True) == "job bad requeued on tests"
    assert client.handle("bad").result(timeout=30) == 10


def test_job_id_cannot_be_reused(client, redis_url):
    """Enqueueing under an id already in use is refused instead of resuming someone else's checkpoint."""
    testjobs.side_effect.enqueue_call((redis_url, "k"), client=client, job_id="same")
    with pytest.raises(ConfigError, match="already used"):
        testjobs.side_effect.enqueue_call((redis_url, "k"), client=client, job_id="same")


@pytest.mark.parametrize("payload", ["pickle", "unknown"])
def test_foreign_queue_entries_are_refused(client, start_worker, redis_url, redis_client, tmp_path, payload):
    """A pickle payload or an unregistered function in the queue is refused; its side effect never happens."""
    marker = tmp_path / "pwned"
    queue = rq_queue("tests", redis_client)
    if payload == "unknown":
        queue.enqueue_call(func="os.system", args=(f"touch {marker}",), job_id="evil")
    else:
        job = queue.enqueue_call(func="testjobs.side_effect", args=(redis_url, "k"), job_id="evil")
        evil = pickle.dumps(("os.system", None, (f"touch {marker}",), {}))
        redis_client.hset(job.key, "data", evil)
    start_worker("-q", "tests")  # one queue: RQ moves entries through its intermediate list
    wait_until(lambda: queue.failed_job_registry.get_job_ids() == ["evil"], what="entry refused")
    assert redis_client.lrange(queue.intermediate_queue_key, 0, -1) == []  # no reaper will put it back
    assert not marker.exists()
    assert redis_client.llen("k") == 0
    assert testjobs.side_effect.enqueue_call((redis_url, "ok"), client=client).result(timeout=30) == "ran"


@pytest.mark.parametrize("command", [["status"], ["enqueue", "testjobs.quiet_sum", "[3]"]])
def test_unreachable_redis_url_is_one_clear_line(command):
    """A wrong REDIS_URL on a one-off command: one line that says what is wrong, exit code != 0 at once,
    no traceback (long-running workers wait for Redis instead; test_operate)."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'tests'}{os.pathsep}{ROOT}"}
    run = subprocess.run([sys.executable, "-m", "resilient", "--redis-url", "redis://127.0.0.1:1/0", *command],
                         capture_output=True, text=True, env=env, timeout=30)
    assert run.returncode != 0
    assert "connection refused" in run.stderr
    assert "Traceback" not in run.stderr and len(run.stderr.strip().splitlines()) == 1


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_nothing_a_job_started_outlives_its_horse(client, start_worker, redis_url, redis_client):
    """Children a job starts, detached (setsid) or not, are gone once its horse is SIGKILLed or returns."""
    worker = start_worker()
    handle = testjobs.leave_children.enqueue_call((redis_url,), client=client)
    assert handle.result(timeout=60) == 2
    pids = [int(pid) for pid in redis_client.lrange(f"pids:{handle.id}", 0, -1)]
    assert len(pids) == 4
    try:
        wait_until(lambda: not any(_running(pid) for pid in pids), timeout=10, what="the job's children to end")
        assert worker.proc.poll() is None
    finally:
        for pid in pids:  # on failure: end the `sleep 1000`s this test started, by pid
            if _running(pid) and psutil.Process(pid).cmdline() == ["sleep", "1000"]:
                os.kill(pid, signal.SIGKILL)


def test_parked_job_whose_rq_record_expired_can_be_requeued(client, start_worker, redis_url, redis_client):
    """After RQ's failure TTL removed its record, `requeue` rebuilds it and the parked job runs again."""
    handle = testjobs.count_items.enqueue_call((redis_url, 5), client=client)
    redis_client.hset(keys.checkpoint(handle.id), mapping={"seq": 5, "data": b"\xc1\xff garbage", "saved_at": 1})
    start_worker()
    with pytest.raises(JobParked):
        handle.result(timeout=30)
    redis_client.delete(f"rq:job:{handle.id}")  # what RQ's failure TTL does
    assert requeue_job(client, handle.id, restart=True) == f"job {handle.id} requeued on tests"
    assert handle.result(timeout=30) == 10
    assert not redis_client.zscore(keys.PARKED, handle.id)


def test_requeue_that_cannot_rebuild_leaves_the_job_parked(client):
    """A parked job with neither an RQ record nor kept arguments is refused, and stays parked and listed."""
    client.store.create_job("old", "testjobs.count_items", "tests", 10)  # as older versions did: no arguments
    _, attempt = client.store.begin_attempt("old", "w", "h")
    client.store.park(attempt, "died 3 times")
    with pytest.raises(NoSuchJob, match="enqueue it again"):
        requeue_job(client, "old")
    assert client.handle("old").status == "parked"
    assert [job_id for job_id, _ in client.store.parked()] == ["old"]
