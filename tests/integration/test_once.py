"""ctx.once in a real worker: a side effect guarded by it runs once per job however often the job is killed,
and its records expire with the job's other keys."""

from __future__ import annotations

import os
import signal

import testjobs
from conftest import wait_until

from resilient.storage import keys


def _horse_pid(client, job_id: str, attempt: int) -> int:
    fields = client.store.job_fields(job_id)
    if int(fields.get("attempt", 0)) == attempt and fields.get("horse_pid"):
        return int(fields["horse_pid"])
    return 0


def test_an_effect_in_ctx_once_is_not_repeated_after_kills(client, redis_client, redis_url, start_worker,
                                                             monkeypatch):
    """SIGKILL the job twice mid-run (~20 items redone each time): every user is mailed, and again at most
    once per kill (a kill between a mail and its record, one Redis write, repeats that one: at least once);
    the receipts of earlier attempts come back from the records, which expire once the job has ended."""
    monkeypatch.setenv("RESILIENT_KEEP", "60s")
    start_worker()
    users = [f"user{n}" for n in range(150)]
    handle = testjobs.mail_each.enqueue_call((redis_url, users, 0.01), client=client)
    for attempt, mailed in ((1, 30), (2, 80)):
        wait_until(lambda: redis_client.llen(f"mails:{handle.id}") >= mailed, what=f"{mailed} mails")
        os.kill(wait_until(lambda: _horse_pid(client, handle.id, attempt), what="horse pid"), signal.SIGKILL)
        wait_until(lambda: _horse_pid(client, handle.id, attempt + 1), what=f"attempt {attempt + 1}")

    assert handle.result(timeout=60) == [f"receipt:{user}" for user in users]
    assert handle.attempts == 3
    mails = [m.decode() for m in redis_client.lrange(f"mails:{handle.id}", 0, -1)]
    assert set(mails) == set(users), "a user was not mailed"
    assert len(mails) - len(users) <= 2, f"{len(mails) - len(users)} mails repeated over 2 kills"
    assert 0 < redis_client.ttl(keys.once(handle.id)) <= 60, "ctx.once's records must expire with the job"
