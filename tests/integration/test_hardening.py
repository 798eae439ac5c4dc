"""Defects found by an adversarial review, each reproduced against a real server."""

from __future__ import annotations

import os
import signal

import psutil
import pytest
import redis
import testjobs
from conftest import wait_until

from resilient import Client
from resilient.config import Settings
from resilient.errors import StaleAttempt
from resilient.model import Death
from resilient.runtime.memory_watch import MemoryWatcher
from resilient.runtime.supervisor import Reaper
from resilient.runtime.worker import ResilientWorker
from resilient.storage.codec import encode
from resilient.storage.server import ensure_server, stop_server


def test_a_completed_job_takes_no_more_writes(client):
    """After FINISH(completed), nothing under the same epoch moves it: fail, park, death, requeue, save."""
    client.store.create_job("done1", "x.y", "tests", 10)
    _, attempt = client.store.begin_attempt("done1", "w", "h")
    client.store.complete(attempt, encode("the result"))
    writes = [lambda: client.store.fail(attempt, "RQ's bookkeeping failed afterwards"),
              lambda: client.store.park(attempt, "no"),
              lambda: client.store.record_death(attempt, Death("preempted:redis")),
              lambda: client.store.mark_requeued(attempt, "preempted:redis", "tests"),
              lambda: client.store.save_checkpoint(attempt, encode({"n": 1}))]
    for write in writes:
        with pytest.raises(StaleAttempt):
            write()
    fields = client.store.job_fields("done1")
    assert fields["status"] == "completed" and fields.get("deaths", "0") == "0"
    assert [e["type"] for e in client.store.events("done1")] == ["enqueued", "started", "completed"]
    assert client.connection.llen("rq:queue:tests") == 0


def test_rq_bookkeeping_failing_after_the_result_keeps_the_job_completed_once(client, start_worker, redis_url,
                                                                              redis_client):
    """The job's result is stored, then RQ's own success bookkeeping fails (a Redis error): RQ takes the
    failure path, but the job stays completed with its result, its body ran once, and it is not requeued."""
    start_worker()
    handle = testjobs.breaks_rq_bookkeeping.enqueue_call((redis_url, "once"), client=client)
    try:
        assert handle.result(timeout=30) == "done"
        later = testjobs.side_effect.enqueue_call((redis_url, "after"), client=client)
        redis_client.delete("rq:finished:tests")
        assert later.result(timeout=30) == "ran"  # the worker went on; the job above had every chance to rerun
        assert handle.status == "completed"
        assert redis_client.lrange("once", 0, -1) == [b"ran"]
        types = [e["type"] for e in handle.events()]
        assert types.count("completed") == 1 and "failed" not in types and "requeued" not in types
    finally:
        redis_client.delete("rq:finished:tests")


@pytest.fixture(params=["full", "short of replicas"])
def full_redis(request, redis_client):
    """Call it to make the session server refuse writes, then `.restore()` it (undone after the test too):
    full (maxmemory below its use, noeviction), or short of replicas (min-replicas-to-write 1, none there)."""
    before = redis_client.config_get("maxmemory-policy")["maxmemory-policy"]

    def refuse() -> None:
        if request.param == "full":
            redis_client.config_set("maxmemory-policy", "noeviction")
            redis_client.config_set("maxmemory", redis_client.info("memory")["used_memory"] // 2)
        else:
            redis_client.config_set("min-replicas-to-write", 1)

    def restore() -> None:
        redis_client.config_set("maxmemory", 0)
        redis_client.config_set("min-replicas-to-write", 0)

    refuse.restore = restore  # type: ignore[attr-defined]
    yield refuse
    restore()
    redis_client.config_set("maxmemory-policy", before)


def test_redis_refusing_writes_steps_the_job_aside_and_the_worker_waits(client, start_worker, redis_client,
                                                                        full_redis):
    """Redis refusing writes (at maxmemory with noeviction, or short of in-sync replicas): the job is not failed
    but steps aside as preempted:redis, the worker waits (live, saying why), and once Redis takes writes again
    the job resumes and completes."""
    worker = start_worker()
    handle = testjobs.quiet_sum.enqueue_call((300, 0.01), client=client)
    wait_until(lambda: int(client.store.job_fields(handle.id).get("seq", 0)) >= 5, what="progress")
    full_redis()
    wait_until(lambda: "refuses writes" in worker.output(), what="the worker to say Redis refuses writes")
    assert worker.proc.poll() is None
    full_redis.restore()
    assert handle.result(timeout=30) == sum(range(300))
    causes = [e["cause"] for e in handle.events() if e["type"] == "died"]
    assert causes == ["preempted:redis"]
    assert worker.proc.poll() is None, "the worker died"


def test_an_idle_worker_outlives_a_full_redis(client, start_worker, redis_client, full_redis):
    """An idle worker's heartbeat and dequeue are refused: it says why and takes jobs again afterwards."""
    worker = start_worker()
    wait_until(lambda: "Listening on" in worker.output(), what="the worker to listen")
    full_redis()
    wait_until(lambda: "refuses writes" in worker.output(), what="the worker to say Redis refuses writes")
    assert worker.proc.poll() is None
    full_redis.restore()
    assert testjobs.quiet_sum.enqueue_call((3, 0.0), client=client).result(timeout=30) == 3


def test_a_reaper_that_lost_sight_of_redis_waits_a_lease_period_before_claiming(tmp_path):
    """An outage longer than a lease is not a death: after it, live workers get a lease period to renew."""
    info = ensure_server(tmp_path / "redis")
    try:
        client = Client.from_url(info.url)
        testjobs.side_effect.enqueue_call((info.url, "k"), client=client, job_id="outage")
        client.store.begin_attempt("outage", "live-worker", "host")
        reaper = Reaper(redis.Redis.from_url(info.url), Settings(redis_url=info.url, lease_ttl=2.0))
        os.kill(info.pid, signal.SIGTERM)
        wait_until(lambda: not psutil.pid_exists(info.pid), what="the server to exit")
        reaper.reap_or_log()  # Redis is gone
        assert ensure_server(tmp_path / "redis").url == info.url
        at = client.store.server_ms() + 60_000  # the lease is long past its deadline
        assert reaper.reap_once(at) == [], "claimed a job the moment Redis came back"
        assert [claim.attempt.job_id for claim in reaper.reap_once(at + 2_000)] == ["outage"]
    finally:
        stop_server(tmp_path / "redis")


def test_sigterm_between_dequeue_and_fork_hands_the_job_back_untouched(client, redis_url, redis_client):
    """SIGTERM lands after the worker took a job off its queue but before any horse: the job goes back to
    the front of its queue with no attempt used and no lease, instead of being stranded or left running."""
    from resilient.runtime.worker import ResilientWorker

    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    worker = ResilientWorker(["tests"], redis.Redis.from_url(redis_url), Settings(redis_url=redis_url))
    handle = testjobs.side_effect.enqueue_call((redis_url, "k"), client=client)
    try:
        job, queue = worker.dequeue_job_and_maintain_ttl(1)
        worker.request_stop(signal.SIGTERM, None)  # what the signal handler runs, at this point
        worker.execute_job(job, queue)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    assert redis_client.lrange("rq:queue:tests", 0, -1) == [handle.id.encode()]
    assert redis_client.llen("rq:queue:tests:intermediate") == 0
    assert handle.status == "queued" and handle.attempts == 0
    assert redis_client.zscore("resilient:leases", handle.id) is None
    assert worker.dequeue_job_and_maintain_ttl(1) is None, "a stopping worker took another job"
    assert redis_client.llen("k") == 0


def test_the_monitors_alarm_right_after_the_reap_loses_no_exit_status(redis_url, monkeypatch):
    """RQ times the wait for the horse with SIGALRM and raises from the handler. If it lands after the horse
    was reaped, the next wait finds no child: the exit status (why the horse ended) must survive that."""
    from rq.timeouts import HorseMonitorTimeoutException

    from resilient.runtime.worker import ResilientWorker

    worker = ResilientWorker(["tests"], redis.Redis.from_url(redis_url), Settings(redis_url=redis_url))
    pid = os.fork()
    if pid == 0:
        os._exit(75)
    worker._horse_pid = pid  # RQ private: what fork_work_horse sets
    alarms = iter([HorseMonitorTimeoutException("the alarm, just after the reap")])

    def interrupted():
        raise next(alarms)

    monkeypatch.setattr(worker, "_own_children", interrupted)  # a step that runs after the reap
    with pytest.raises(HorseMonitorTimeoutException):
        worker.wait_for_horse()
    monkeypatch.setattr(worker, "_own_children", set)
    reaped, status, _ = worker.wait_for_horse()  # what RQ's monitor loop does next
    assert reaped == pid and os.WEXITSTATUS(status) == 75


def test_a_hung_horse_is_stopped_by_the_stall_timeout_and_resumes(client, start_worker):
    """--stall-timeout: a horse that makes no checkpoint for that long is stopped (cause `stalled`, with
    its checkpoint age) and the job resumes from its checkpoint; without it the lease would be renewed forever."""
    start_worker("--stall-timeout", "2")
    handle = testjobs.hangs_once.enqueue_call(client=client)
    result = handle.result(timeout=30)
    assert result == {"attempt": 2, "resumed_from": {"stage": "before the hang"}, "previous": "stalled"}
    (death,) = [e for e in handle.events() if e["type"] == "died"]
    assert death["cause"] == "stalled"
    assert 2 <= death["evidence"]["checkpoint_age"] < 10 and death["evidence"]["stall_timeout"] == 2


def test_the_suspension_check_outlives_redis_refusing_writes(client, redis_client, full_redis):
    """RQ's check for `rq suspend` beats on its own pipeline each turn of the work loop: with Redis refusing
    writes at that moment the worker carries on (its dequeue then waits for Redis) instead of quitting."""
    settings = client.settings
    worker = ResilientWorker(["tests"], client.connection, settings, memory=MemoryWatcher(settings))
    try:
        full_redis()
        worker.check_for_suspension(burst=False)
    finally:
        full_redis.restore()
        worker.memory.close()
