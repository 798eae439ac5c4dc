"""Job ids a client must refuse before writing anything: ids RQ would reject, and ids already in use."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import testjobs

from resilient import Client, ConfigError
from resilient.runtime.rqjob import rq_queue
from resilient.storage import keys


@pytest.mark.parametrize("job_id", ["has space", "a:b", "ü"])
def test_invalid_job_id_writes_nothing(client, redis_url, redis_client, job_id):
    """An id RQ would refuse is refused first, in one line, and nothing is written."""
    with pytest.raises(ConfigError, match="job id .* is invalid") as refused:
        testjobs.side_effect.enqueue_call((redis_url, "k"), client=client, job_id=job_id)
    assert "\n" not in str(refused.value)
    assert redis_client.keys("*") == []


def test_id_of_an_existing_rq_job_is_not_reused(client, redis_url, redis_client):
    """An id already held by a plain RQ job is refused; neither record is written or changed."""
    rq_queue("tests", redis_client).enqueue_call(func="testjobs.side_effect", args=(redis_url, "x"), job_id="taken")
    before = redis_client.hgetall("rq:job:taken")
    with pytest.raises(ConfigError, match="already used"):
        testjobs.side_effect.enqueue_call((redis_url, "k"), client=client, job_id="taken")
    assert not redis_client.exists(keys.job("taken"), keys.events("taken"))
    assert redis_client.hgetall("rq:job:taken") == before


def test_concurrent_enqueues_of_one_id_create_one_job(redis_url, redis_client):
    """Eight clients enqueue the same id at once (25 ids in turn): each id is created and queued once."""
    clients = [Client.from_url(redis_url) for _ in range(8)]
    ids = [f"same-{n}" for n in range(25)]
    start = threading.Barrier(len(clients))

    def enqueue(client: Client) -> int:
        created = 0
        for job_id in ids:
            start.wait()
            try:
                testjobs.side_effect.enqueue_call((redis_url, "k"), client=client, job_id=job_id)
                created += 1
            except ConfigError:
                pass
        return created

    with ThreadPoolExecutor(len(clients)) as pool:
        assert sum(pool.map(enqueue, clients)) == len(ids)
    assert rq_queue("tests", redis_client).get_job_ids() == ids
    assert {redis_client.llen(keys.events(job_id)) for job_id in ids} == {1}
