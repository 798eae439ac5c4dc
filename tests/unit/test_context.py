"""Context.save / iterate against a real server, with a clock the test moves by hand, and how an attempt's
end is settled (attempt.settle)."""

from __future__ import annotations

import pytest

from resilient import CheckpointError, Preempted
from resilient.api.context import Context
from resilient.model import Attempt, Death, Decision, JobOptions, Level
from resilient.runtime.attempt import settle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Governor:
    """Stands in for the memory governor: the level the test sets, sampled fresh at every save."""

    def __init__(self, clock: Clock) -> None:
        self.level = self.group_level = Level.OK
        self.sampled_at = clock.now
        self._clock = clock

    def sample(self) -> Level:
        self.sampled_at = self._clock.now
        return self.level

    def make_room(self) -> None:
        pass


def _attempt(client, job_id: str = "ctx-job") -> Attempt:
    client.store.create_job(job_id, "tests.fn", "tests", 10)
    verdict, attempt = client.store.begin_attempt(job_id, "w", "h")
    assert verdict == "OK"
    return attempt


def _context(client, attempt: Attempt, clock: Clock, every: float = 10.0, governor=None) -> Context:
    return Context(attempt, client.store, JobOptions(checkpoint_every=every),
                   client.store.load_checkpoint(attempt.job_id), 1 << 20, governor=governor, clock=clock)


def test_save_persists_when_due_or_forced(client):
    clock = Clock()
    ctx = _context(client, _attempt(client), clock)
    ctx.save({"n": 1})
    assert ctx.seq == 0, "persisted before checkpoint_every had passed"
    clock.now += 10
    ctx.save({"n": 2})
    assert ctx.seq == 1
    ctx.save({"n": 3}, force=True)
    assert ctx.seq == 2
    assert client.store.load_checkpoint("ctx-job").seq == 2


def test_a_save_persists_after_the_server_lost_its_scripts(client, redis_client):
    """A save sends SAVE by its digest alone; a server that lost its scripts (restarted, SCRIPT FLUSH) is
    given the script again and the save goes through."""
    ctx = _context(client, _attempt(client, "ctx-flushed"), Clock())
    ctx.save({"n": 1}, force=True)
    redis_client.script_flush()
    ctx.save({"n": 2}, force=True)
    assert ctx.seq == 2 and client.store.load_checkpoint("ctx-flushed").seq == 2


def test_a_bad_state_fails_at_save_and_persists_nothing(client):
    clock = Clock()
    ctx = _context(client, _attempt(client), clock)
    with pytest.raises(CheckpointError) as bad:
        ctx.save({"rows": [1, {2}]}, force=True)
    assert "state['rows'][1]" in str(bad.value)
    assert client.store.load_checkpoint("ctx-job") is None


def test_iterate_resumes_after_the_last_saved_position(client):
    clock = Clock()
    attempt = _attempt(client)
    ctx = _context(client, attempt, clock, every=0.0)  # every item persists
    seen = []
    for item in ctx.iterate(range(10)):
        seen.append(item)
        if item == 3:
            break
    assert seen == [0, 1, 2, 3] and ctx.seq == 3  # item 3 was never saved as done
    _, again = client.store.begin_attempt("ctx-job", "w2", "h")
    resumed = _context(client, again, clock, every=0.0)
    assert list(resumed.iterate(range(10))) == [3, 4, 5, 6, 7, 8, 9]


def test_a_stop_request_persists_at_the_next_safe_point_then_preempts(client):
    clock = Clock()
    ctx = _context(client, _attempt(client), clock)
    ctx.request_stop("shutdown")
    with pytest.raises(Preempted):
        ctx.save({"n": 1})  # not due by the clock, persisted all the same
    assert client.store.load_checkpoint("ctx-job").seq == 1


def test_soft_pressure_persists_at_once_and_then_four_times_as_often(client):
    clock = Clock()
    governor = Governor(clock)
    ctx = _context(client, _attempt(client), clock, every=8.0, governor=governor)
    governor.level = Level.SOFT
    ctx.save({"n": 1})
    assert ctx.seq == 1, "a rise to soft did not persist at once"
    assert ctx.pressure == "soft"
    clock.now += 2.0  # a quarter of checkpoint_every
    ctx.save({"n": 2})
    assert ctx.seq == 2
    governor.level = Level.HARD
    with pytest.raises(Preempted):
        ctx.save({"n": 3})
    assert ctx.seq == 3


def test_settle_requeues_or_parks_once_and_refuses_a_superseded_attempt(client, redis_client):
    attempt = _attempt(client, "settle-1")
    assert settle(client.store, attempt, Death("killed"), Decision("requeue", "tests", "killed"))
    assert client.store.job_fields("settle-1")["status"] == "queued"
    assert redis_client.lrange("rq:queue:tests", 0, -1) == [b"settle-1"]
    assert not settle(client.store, attempt, Death("killed"), Decision("requeue", "tests", "killed")), \
        "requeued twice"
    assert redis_client.llen("rq:queue:tests") == 1

    _, second = client.store.begin_attempt("settle-1", "w", "h")
    assert not settle(client.store, attempt, Death("killed"), Decision("park", reason="old attempt"))
    assert settle(client.store, second, Death("oom:kernel"), Decision("park", reason="too big"))
    fields = client.store.job_fields("settle-1")
    assert fields["status"] == "parked" and fields["parked_reason"] == "too big"


def test_once_runs_its_effect_once_across_attempts_and_returns_the_record(client):
    """ctx.once calls its function once per job: a later call, in the same or a resumed attempt, gets the
    recorded result back (through msgpack) without calling it; an unstorable result fails like a bad state."""
    calls = []

    def charge(amount: int) -> tuple[str, int]:
        calls.append(amount)
        return ("ch_1", amount)

    clock = Clock()
    first = _attempt(client)
    ctx = _context(client, first, clock)
    assert ctx.once("charge", charge, 5) == ["ch_1", 5]
    assert ctx.once("charge", charge, 5) == ["ch_1", 5]
    with pytest.raises(CheckpointError, match="once"):
        ctx.once("bad", lambda: {1, 2})
    client.store.set_fields(first, status="queued")  # as a requeue after a death leaves it
    _, second = client.store.begin_attempt("ctx-job", "w", "h")
    assert _context(client, second, clock).once("charge", charge, 7) == ["ch_1", 5]
    assert calls == [5]


def test_a_superseded_attempt_cannot_record_an_effect(client):
    """An attempt whose epoch is no longer the job's writes no ctx.once record (StaleAttempt)."""
    from resilient.errors import StaleAttempt

    first = _attempt(client)
    client.store.set_fields(first, status="queued")
    _, second = client.store.begin_attempt("ctx-job", "w", "h")
    with pytest.raises(StaleAttempt):
        _context(client, first, Clock()).once("mail", lambda: "old")
    assert _context(client, second, Clock()).once("mail", lambda: "new") == "new"


def test_a_direct_script_sends_its_arguments_whole_after_the_server_lost_it(redis_client):
    """DirectScript's fallback (the script loaded again) gets the same arguments as the first try, even
    from a one-shot iterable."""
    from resilient.storage.store import DirectScript

    echo = DirectScript(redis_client, "return ARGV")
    redis_client.script_flush()
    assert echo(keys=(), args=(str(n) for n in range(3))) == [b"0", b"1", b"2"]
