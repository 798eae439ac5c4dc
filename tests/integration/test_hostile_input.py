"""Queue entries a worker must not trust (someone with write access to Redis wrote them): nothing outside
@resilient.job runs, no refused entry loops, the worker parent stays small and keeps running."""

from __future__ import annotations

import json
import pickle
import select
import socket
import uuid
import zlib

import msgpack
import pytest
import testjobs
from conftest import wait_until
from rq.command import send_stop_job_command

from resilient import JobFailed, JobHandle
from resilient.runtime.rqjob import rq_queue
from resilient.storage.codec import MsgpackSerializer

MiB = 1024 * 1024


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


def _peak_rss(pid: int) -> int:
    """The process's peak resident set (VmHWM), in bytes."""
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def _zlib_bomb(size: int) -> bytes:
    """`size` zero bytes, zlib-compressed (about a thousandth of that), made without holding them all."""
    compressor = zlib.compressobj(9)
    chunk = bytes(MiB)
    return b"".join(compressor.compress(chunk) for _ in range(size // MiB)) + compressor.flush()


def _empty_lists(count: int) -> bytes:
    """msgpack of a list of `count` empty lists: 1 byte each encoded, about 70 bytes each decoded."""
    return b"\xdd" + count.to_bytes(4, "big") + b"\x90" * count


@pytest.mark.parametrize("bomb", ["zlib", "arguments", "meta"])
def test_hostile_payload_does_not_grow_the_worker(client, start_worker, redis_url, redis_client, bomb):
    """A zlib bomb, or a payload that decodes to a GB of small objects, is dealt with by the worker parent
    without its peak RSS growing by more than a few tens of MB."""
    worker = start_worker()
    _canary(client, redis_url)  # every code path of a job has run once in the parent
    before = _peak_rss(worker.pid)
    if bomb == "zlib":
        hostile = {"data": _zlib_bomb(256 * MiB)}
    elif bomb == "arguments":
        call = b"\x94" + msgpack.packb("os.system") + b"\xc0" + _empty_lists(8 * MiB) + b"\x80"
        hostile = {"data": zlib.compress(call)}
    else:
        hostile = {"meta": _empty_lists(8 * MiB)}
    handle = _tampered(client, testjobs.side_effect, (redis_url, "k"), **hostile)
    _canary(client, redis_url)
    grown = _peak_rss(worker.pid) - before
    assert grown < 48 * MiB, f"worker peak RSS grew by {grown / MiB:.0f} MiB"
    if bomb != "meta":
        with pytest.raises(JobFailed, match="refused: "):
            handle.result(timeout=5)


@pytest.mark.parametrize(("field", "value"), [("status", "bogus"), ("result_ttl", "abc")])
def test_malformed_rq_record_fails_that_job_only(client, start_worker, redis_url, redis_client, field, value):
    """One bad field in an RQ record: that job fails, refused with the reason; the worker keeps running."""
    handle = _tampered(client, testjobs.side_effect, (redis_url, "k"), **{field: value})
    worker = start_worker("-q", "tests")  # one queue: RQ moves entries through its intermediate list
    with pytest.raises(JobFailed, match=f"refused: its RQ record is malformed.*{value}"):
        handle.result(timeout=30)
    _canary(client, redis_url)
    assert worker.proc.poll() is None
    assert redis_client.lrange("rq:queue:tests:intermediate", 0, -1) == []
    assert redis_client.llen("k") == 0


_REFUSED_PAYLOADS = {
    "pickle": pickle.dumps(("os.system", None, ("true",), {})),
    "unknown": zlib.compress(msgpack.packb(["os.system", None, ["true"], {}])),
    "garbage": b"\xc1\xc1 not msgpack",
}


@pytest.mark.parametrize("payload", sorted(_REFUSED_PAYLOADS))
def test_refused_entry_fails_its_job_at_once(client, start_worker, redis_url, redis_client, payload):
    """A job whose payload is refused fails with the reason (result() raises at once, no waiting forever),
    and its entry leaves RQ's intermediate list, so no reaper puts it back."""
    handle = _tampered(client, testjobs.side_effect, (redis_url, "k"), data=_REFUSED_PAYLOADS[payload])
    start_worker("-q", "tests")  # one queue: RQ moves entries through its intermediate list
    with pytest.raises(JobFailed, match="refused: ") as failed:
        handle.result(timeout=30)
    assert "\n" not in str(failed.value)
    assert redis_client.lrange("rq:queue:tests:intermediate", 0, -1) == []
    assert rq_queue("tests", redis_client).failed_job_registry.get_job_ids() == [handle.id]
    assert redis_client.llen("k") == 0
