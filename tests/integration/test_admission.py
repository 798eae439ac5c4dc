"""A job declared bigger than a worker's limit is not run there: it goes to its on_oom_queue, or is parked
at once with what it needs, and counts no attempt."""

from __future__ import annotations

import pytest
import testjobs

from resilient import JobParked


def test_a_job_declared_too_big_is_parked_without_running(client, start_worker, redis_url, redis_client):
    start_worker("--memory-limit", "300M", "-q", "tests")
    handle = testjobs.declared_too_big.enqueue_call((redis_url, "ran:big"), client=client)
    with pytest.raises(JobParked) as parked:
        handle.result(timeout=30)
    assert "needs ~400.0 MiB (declared)" in parked.value.reason and "300.0 MiB limit" in parked.value.reason
    assert redis_client.llen("ran:big") == 0, "the job ran"
    assert handle.attempts == 0
    assert testjobs.count_items.enqueue_call((redis_url, 3, 0.0), client=client).result(timeout=30) == 3


def test_a_job_declared_too_big_goes_to_its_on_oom_queue_and_runs_there(client, start_worker, redis_url,
                                                                       redis_client):
    start_worker("--memory-limit", "300M", "-q", "tests")
    handle = testjobs.declared_big_with_a_big_queue.enqueue_call((redis_url, "ran:routed"), client=client)
    start_worker("-q", "big")  # no limit of its own: the machine's RAM
    assert handle.result(timeout=30) == "ran"
    assert redis_client.llen("ran:routed") == 1 and handle.attempts == 1
    routed = [e for e in handle.events() if e["type"] == "requeued"]
    assert routed and routed[0]["queue"] == "big" and "routed to big" in routed[0]["reason"]
