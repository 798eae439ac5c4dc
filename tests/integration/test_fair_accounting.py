"""What a death counts toward, as stored in Redis: a step-aside or kernel kill for neighbours, a shutdown or an
outage never uses up max_attempts or the memory parking; peaks are learned from every attempt's end."""

from __future__ import annotations

from resilient.model import Cause, Death, JobOptions
from resilient.runtime.deaths import decide
from resilient.storage.codec import encode

MiB = 1 << 20
FOR_NEIGHBOURS = {"for_neighbours": True, "ru_maxrss": 300 * MiB}


def _begin(client, job_id: str):
    verdict, attempt = client.store.begin_attempt(job_id, "w", "h")
    return verdict, attempt


def test_step_asides_for_neighbours_and_shutdowns_use_no_attempts(client):
    client.store.create_job("fair", "tests.fn", "tests", max_attempts=2)
    for cause, evidence in [(Cause.PREEMPTED_MEMORY, FOR_NEIGHBOURS)] * 4 + [
            (Cause.OOM_KERNEL, FOR_NEIGHBOURS), (Cause.PREEMPTED_SHUTDOWN, {}), (Cause.PREEMPTED_REDIS, {})]:
        verdict, attempt = _begin(client, "fair")
        assert verdict == "OK", f"{cause} used up an attempt"
        count = client.store.record_death(attempt, Death(cause, evidence))
        assert count.attempt == 0 and count.memory_stuck == 0 and count.stuck == 0
        client.store.mark_requeued(attempt, cause, "tests")
    for _ in range(2):  # two deaths of its own: max_attempts reached
        verdict, attempt = _begin(client, "fair")
        assert verdict == "OK"
        client.store.record_death(attempt, Death(Cause.KILLED))
        client.store.mark_requeued(attempt, Cause.KILLED, "tests")
    verdict, attempt = _begin(client, "fair")
    assert verdict == "EXHAUSTED" and attempt.attempt == 10


def test_memory_deaths_for_neighbours_never_park_but_its_own_do(client):
    options = JobOptions(queue="tests")
    client.store.create_job("mem", "tests.fn", "tests", 10)
    for _ in range(5):
        _, attempt = _begin(client, "mem")
        death = Death(Cause.PREEMPTED_MEMORY, FOR_NEIGHBOURS)
        decision = decide(death, client.store.record_death(attempt, death), options, "tests")
        assert decision.action == "requeue"
        client.store.mark_requeued(attempt, death.cause, "tests")
    decisions = []
    for _ in range(2):
        _, attempt = _begin(client, "mem")
        death = Death(Cause.PREEMPTED_MEMORY, {"ru_maxrss": 900 * MiB, "limit": 1000 * MiB})
        decisions.append(decide(death, client.store.record_death(attempt, death), options, "tests").action)
        client.store.mark_requeued(attempt, death.cause, "tests")
    assert decisions == ["requeue", "park"]


def test_an_operator_requeue_gives_more_attempts_on_top_of_those_counted(client):
    client.store.create_job("rel", "tests.fn", "tests", max_attempts=1)
    for death in [Death(Cause.PREEMPTED_SHUTDOWN), Death(Cause.KILLED)]:
        _, attempt = _begin(client, "rel")
        client.store.record_death(attempt, death)
        client.store.mark_requeued(attempt, death.cause, "tests")
    _, attempt = _begin(client, "rel")
    client.store.park(attempt, "gave up")
    client.connection.hset("rq:job:rel", "status", "failed")  # RQ's record, as the worker leaves it
    assert client.store.release("rel", more_attempts=1) == "OK"
    verdict, attempt = _begin(client, "rel")  # exactly one more, the shutdown before not held against it
    assert verdict == "OK"
    client.store.record_death(attempt, Death(Cause.KILLED))
    client.store.mark_requeued(attempt, Cause.KILLED, "tests")
    assert _begin(client, "rel")[0] == "EXHAUSTED"


def test_peaks_are_learned_from_completions_and_deaths(client):
    for n in range(25):
        client.store.create_job(f"p{n}", "tests.peaky", "tests", 10)
        _, attempt = _begin(client, f"p{n}")
        if n % 2:
            client.store.complete(attempt, encode(n), peak_rss=(100 + n) * MiB)
        else:
            client.store.record_death(attempt, Death(Cause.KILLED, {"ru_maxrss": (100 + n) * MiB}))
    own, recent = client.store.peaks("p24", "tests.peaky")
    assert own == 124 * MiB
    assert recent == [(100 + n) * MiB for n in range(24, 4, -1)], "the last 20, newest first"
    assert 0 < client.connection.ttl("resilient:peaks:tests.peaky") <= 30 * 86400
