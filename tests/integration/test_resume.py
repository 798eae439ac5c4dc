"""A job whose horse is SIGKILLed resumes from its last checkpoint and finishes with the right result."""

from __future__ import annotations

import os
import random
import signal

import redis
import testjobs
from conftest import wait_until


def _log(r: redis.Redis, job_id: str) -> list[tuple[int, int]]:
    return [tuple(map(int, e.decode().split(":"))) for e in r.lrange(f"log:{job_id}", 0, -1)]


def _horse_pid(client, job_id: str, attempt: int) -> int:
    fields = client.store.job_fields(job_id)
    if int(fields.get("attempt", 0)) == attempt and fields.get("horse_pid"):
        return int(fields["horse_pid"])
    return 0


def test_killed_horse_resumes_from_checkpoint(client, redis_client, redis_url, start_worker):
    """Kill the horse mid-run: the job completes with the uninterrupted result, resuming at its checkpoint."""
    start_worker()
    handle = testjobs.count_items.enqueue_call((redis_url, 200), client=client)
    wait_until(lambda: int(client.store.job_fields(handle.id).get("seq", 0)) >= 3, what="a few checkpoints")
    pid = wait_until(lambda: _horse_pid(client, handle.id, 1), what="horse pid")
    os.kill(pid, signal.SIGKILL)
    seq_at_kill = int(client.store.job_fields(handle.id)["seq"])

    assert handle.result(timeout=60) == sum(range(200))
    assert handle.attempts == 2
    log = _log(redis_client, handle.id)
    first_after_resume = next(item for attempt, item in log if attempt == 2)
    saved_position = client.store.checkpoint_history_entries(handle.id)  # history kept
    assert saved_position
    last_item_of_first = max(item for attempt, item in log if attempt == 1)
    assert first_after_resume <= last_item_of_first + 1, "resumed past work never done"
    assert first_after_resume >= 3, "restarted from scratch instead of the checkpoint"
    causes = [e.get("cause") for e in handle.events() if e["type"] == "died"]
    assert causes == ["killed"]
    assert seq_at_kill >= 3


def test_iterate_survives_three_kills(client, redis_client, redis_url, start_worker):
    """ctx.iterate over 1,000 items with 3 kills: every item done, little redone per kill."""
    start_worker()
    handle = testjobs.iterate_items.enqueue_call((redis_url, 1000, 0.002), client=client)
    rng = random.Random(7)
    for attempt in (1, 2, 3):
        target = rng.randint(50, 200)
        wait_until(lambda: redis_client.llen(f"log:{handle.id}") >= attempt * 250 + target - 250 + 0,
                   what=f"progress before kill {attempt}")
        os.kill(wait_until(lambda: _horse_pid(client, handle.id, attempt), what="horse pid"), signal.SIGKILL)
        wait_until(lambda: _horse_pid(client, handle.id, attempt + 1), what=f"attempt {attempt + 1}")
    assert handle.result(timeout=60) == 1000
    log = _log(redis_client, handle.id)
    assert {item for _, item in log} == set(range(1000))
    redone = len(log) - 1000
    # checkpoint_every=0.1 s at ~2 ms/item (plus Redis round trips): at most ~50 items per interval
    assert redone <= 3 * 60, f"{redone} items redone over 3 kills"
    assert handle.attempts == 4


def test_a_completed_job_shows_all_its_items_done(client, start_worker, redis_url):
    """Progress written during the run is throttled; once the job has completed, it reads n of n."""
    handle = testjobs.iterate_items.enqueue_call((redis_url, 300, 0.0), client=client)
    start_worker("--burst").proc.wait(60)
    assert handle.result(timeout=30) == 300
    fields = client.store.job_fields(handle.id)
    assert (fields["done"], fields["total"]) == ("300", "300")
