"""Queue entries a worker must not trust (someone with write access to Redis wrote them): nothing outside
@resilient.job runs."""

from __future__ import annotations

import json
import select
import socket
import uuid

import pytest
from rq.command import send_stop_job_command

import testjobs
from conftest import wait_until
from resilient import JobFailed, JobHandle
from resilient.codec import MsgpackSerializer
from resilient.rqjob import rq_queue


def _canary(client, redis_url) -> None:
    """A job queued after the hostile one: once it is done, the worker has finished with the one before."""
    assert testjobs.side_effect.enqueue_call((redis_url, "canary"), client=client).result(timeout=30) == "ran"


def _tampered(client, spec, args, **fields) -> JobHandle:
    """Enqueue as the client does, with the RQ record altered (`fields`) in the same MULTI, as someone with
    write access to Redis would: no worker can take the entry before it is altered."""
    job_id = uuid.uuid4().hex
    queue = rq_queue(spec.options.queue, client.connection)
    job = queue.create_job(spec.name, args=args, job_id=job_id)
    with client.connection.pipeline() as pipe:
        pipe.multi()
        client.store.create_job(job_id, spec.name, spec.options.queue, spec.options.max_attempts, pipeline=pipe)
        queue.enqueue_job(job, pipeline=pipe)
        pipe.hset(job.key, mapping=fields)
        pipe.execute()
    return client.handle(job_id)


@pytest.mark.parametrize("field", ["success_callback_name", "failure_callback_name", "stopped_callback_name"])
def test_callbacks_named_on_the_rq_record_never_run(client, start_worker, redis_url, redis_client, field):
    """A callback path written into the RQ job record is never imported or called, in the horse or the worker."""
    hook = {field: "testjobs.record_callback"}
    if field == "failure_callback_name":
        handle = _tampered(client, testjobs.raises, ("boom",), **hook)
    elif field == "stopped_callback_name":
        handle = _tampered(client, testjobs.slow_saver, (redis_url, 100000), **hook)
    else:
        handle = _tampered(client, testjobs.side_effect, (redis_url, "k"), **hook)
    start_worker()
    if field == "stopped_callback_name":
        wait_until(lambda: redis_client.llen(f"log:{handle.id}") >= 5, what="job running")
        send_stop_job_command(redis_client, handle.id, serializer=MsgpackSerializer)
    elif field == "failure_callback_name":
        with pytest.raises(JobFailed, match="ValueError: boom"):
            handle.result(timeout=30)
    else:
        assert handle.result(timeout=30) == "ran"
    _canary(client, redis_url)
    assert redis_client.lrange("callbacks", 0, -1) == []


def test_webhooks_on_the_rq_record_are_never_sent(client, start_worker, redis_url, redis_client):
    """Webhooks written into the RQ job record make no request: a listener on the target gets no connection."""
    listener = socket.create_server(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/"
    try:
        hooks = [{"url": url, "job_status": status, "method": "POST", "timeout": 1} for status in ("finished", "failed")]
        done = _tampered(client, testjobs.side_effect, (redis_url, "k"), webhooks=json.dumps(hooks))
        failed = _tampered(client, testjobs.raises, ("boom",), webhooks=json.dumps(hooks))
        start_worker()
        assert done.result(timeout=30) == "ran"
        with pytest.raises(JobFailed):
            failed.result(timeout=30)
        _canary(client, redis_url)
        readable, _, _ = select.select([listener], [], [], 0)
        assert readable == [], "the worker connected to the webhook URL"
    finally:
        listener.close()
