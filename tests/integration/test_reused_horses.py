"""--jobs-per-process N: one forked process runs job after job, and is replaced after N jobs or when its RSS
after a job passes the recycle line; a death of a reused process costs only its current job."""

from __future__ import annotations

import os
import signal

import pytest
import testjobs
from conftest import wait_until

from resilient import JobFailed

MiB = 1024 * 1024


def test_one_process_runs_n_jobs_then_a_fresh_one_takes_over(client, start_worker):
    """12 jobs with --jobs-per-process 5: three processes ran them, 5, 5 and 2, and module state carried
    over from job to job inside one process (the documented price of reuse)."""
    handles = [testjobs.keep_in_module.enqueue_call((0,), client=client) for _ in range(12)]
    start_worker("--burst", "--jobs-per-process", "5").proc.wait(60)
    results = [handle.result(timeout=30) for handle in handles]
    pids = [pid for pid, _ in results]
    assert [pids.count(pid) for pid in dict.fromkeys(pids)] == [5, 5, 2]
    assert [before for _, before in results] == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1]
    assert all(int(client.store.job_fields(h.id)["horse_pid"]) == pid for h, pid in zip(handles, pids))


def test_a_process_above_the_recycle_line_is_replaced(client, start_worker):
    """Each job leaves 80 MiB behind; with the recycle line at 0.25 of a 400M limit (100 MiB) no process
    runs a second job, although 100 were allowed."""
    handles = [testjobs.keep_in_module.enqueue_call((80,), client=client) for _ in range(3)]
    worker = start_worker("--burst", "--jobs-per-process", "100", "--memory-limit", "400M",
                          "--recycle-at", "0.25")
    assert worker.proc.wait(60) == 0
    results = [handle.result(timeout=30) for handle in handles]
    assert len({pid for pid, _ in results}) == 3 and [before for _, before in results] == [0, 0, 0]
    assert worker.output().count("above the recycle line") == 3


def test_a_killed_reused_process_costs_only_its_current_job(client, start_worker, redis_url, redis_client):
    """SIGKILL a reused process during its second job: the first stays completed, the second resumes from its
    checkpoint in a fresh process and ends right."""
    first = testjobs.keep_in_module.enqueue_call((0,), client=client)
    second = testjobs.count_items.enqueue_call((redis_url, 200, 0.01), client=client)
    start_worker("--jobs-per-process", "10")
    first_pid, _ = first.result(timeout=30)
    wait_until(lambda: int(client.store.job_fields(second.id).get("seq", 0)) >= 3, what="checkpoints")
    assert int(client.store.job_fields(second.id)["horse_pid"]) == first_pid, "the process was not reused"
    os.kill(first_pid, signal.SIGKILL)
    assert second.result(timeout=60) == sum(range(200))
    assert first.status == "completed"
    (death,) = [e for e in second.events() if e["type"] == "died"]
    assert death["cause"] == "killed" and death["evidence"]["signal"] == "SIGKILL"
    assert int(client.store.job_fields(second.id)["horse_pid"]) != first_pid
    resumed_at = next(int(e.split(b":")[1]) for e in redis_client.lrange(f"log:{second.id}", 0, -1)
                      if e.startswith(b"2:"))
    assert resumed_at >= 3, "restarted from scratch"


def test_sigterm_ends_a_worker_and_its_idle_reused_process(client, start_worker):
    """A worker whose reused process waits for the next job exits 0 on SIGTERM, and the process goes too."""
    worker = start_worker("--jobs-per-process", "10")
    pid, _ = testjobs.keep_in_module.enqueue_call((0,), client=client).result(timeout=30)
    assert os.path.exists(f"/proc/{pid}"), "the process did not wait for a next job"
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.proc.wait(10) == 0
    wait_until(lambda: not os.path.exists(f"/proc/{pid}"), timeout=5, what="the reused process to end")


def test_a_reused_process_steps_aside_on_sigterm_mid_job(client, start_worker, redis_url):
    """SIGTERM during a reused process's second job: it checkpoints and steps aside (preempted:shutdown),
    and another worker resumes it to the right result."""
    first = testjobs.keep_in_module.enqueue_call((0,), client=client)
    second = testjobs.count_items.enqueue_call((redis_url, 200, 0.01), client=client)
    worker = start_worker("--jobs-per-process", "10")
    first.result(timeout=30)
    wait_until(lambda: int(client.store.job_fields(second.id).get("seq", 0)) >= 2, what="checkpoints")
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.proc.wait(20) == 0
    start_worker("--burst")
    assert second.result(timeout=60) == sum(range(200))
    assert [e["cause"] for e in second.events() if e["type"] == "died"] == ["preempted:shutdown"]


def test_a_job_that_raises_fails_alone_and_the_process_goes_on(client, start_worker):
    """A job's exception fails that job with its error (as in a fresh process) and the same process runs
    the next job."""
    failing = testjobs.raises.enqueue_call(("boom",), client=client)
    after = testjobs.keep_in_module.enqueue_call((0,), client=client)
    start_worker("--burst", "--jobs-per-process", "5").proc.wait(60)
    with pytest.raises(JobFailed, match="boom"):
        failing.result(timeout=5)
    pid, _ = after.result(timeout=5)
    assert int(client.store.job_fields(failing.id)["horse_pid"]) == pid
