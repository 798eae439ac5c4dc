"""Defects found by an adversarial review, each reproduced against a real server (issue 9)."""

from __future__ import annotations

import pytest

import testjobs
from conftest import wait_until
from resilient.codec import encode
from resilient.store import STALE


def test_a_completed_job_takes_no_more_writes(client):
    """After FINISH(completed), nothing under the same epoch moves it: fail, park, death, requeue, save."""
    client.store.create_job("done1", "x.y", "tests", 10)
    _, attempt = client.store.begin_attempt("done1", "w", "h")
    assert client.store.complete(attempt, encode("the result"))
    assert client.store.fail(attempt, "RQ's bookkeeping failed afterwards") is False
    assert client.store.park(attempt, "no") is False
    assert client.store.record_death(attempt, "preempted:redis", {}, False, False) is None
    assert client.store.mark_requeued(attempt, "preempted:redis", "tests") is False
    assert client.store.save_checkpoint(attempt, encode({"n": 1})) == STALE
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
