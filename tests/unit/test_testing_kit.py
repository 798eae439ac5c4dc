"""resilient.testing: a job runs inline with a real Context, and assert_resumable catches the resume bugs users
write (a resume position off by one, an accumulator saved before its work, an effect repeated) while correct
jobs pass, quickly enough to check every safe point of a 1,000-item job."""

from __future__ import annotations

from typing import Any

import pytest

import resilient
from resilient import CheckpointError
from resilient.testing import KitError, NotResumable, assert_resumable, record_effect, run


# --- correct jobs ---------------------------------------------------------------------------------------
@resilient.job(checkpoint_every=1.0)
def square_sum(ctx: resilient.Context, n: int) -> int:
    """The accumulator lives in the checkpoint, saved after the work it counts."""
    state = ctx.checkpoint or {"i": 0, "total": 0}
    i, total = state["i"], state["total"]
    while i < n:
        total += i * i
        i += 1
        ctx.save({"i": i, "total": total})
    return int(total)


@resilient.job
def count_iterated(ctx: resilient.Context, n: int) -> int:
    for _ in ctx.iterate(range(n)):
        pass
    return n


@resilient.job
def mail_once(ctx: resilient.Context, users: list[str]) -> int:
    for user in ctx.iterate(users):
        ctx.once(f"mail:{user}", record_effect, "mail", user)
    return len(users)


@resilient.job
def report(ctx: resilient.Context, n: int) -> dict[str, Any]:
    """Returns what its last attempt saw, for tests that look at how it was resumed (compared with equal=)."""
    resumed_from = ctx.checkpoint
    death = ctx.previous_death
    for _ in ctx.iterate(range(n)):
        pass
    return {"resumed_from": resumed_from, "attempt": ctx.attempt, "previous": death.cause if death else None}


# --- the bugs users write -------------------------------------------------------------------------------
@resilient.job
def off_by_one(ctx: resilient.Context, n: int) -> int:
    state = ctx.checkpoint or {"i": 0, "total": 0}
    i, total = state["i"], state["total"]
    if ctx.checkpoint:
        i += 1  # "the saved item is done, start at the next one": it was the next one already
    while i < n:
        total += i * i
        i += 1
        ctx.save({"i": i, "total": total})
    return int(total)


@resilient.job
def saved_before_work(ctx: resilient.Context, n: int) -> int:
    state = ctx.checkpoint or {"i": 0, "total": 0}
    i, total = state["i"], state["total"]
    while i < n:
        ctx.save({"i": i + 1, "total": total})  # claims item i done before adding it
        total += i * i
        i += 1
    return int(total)


@resilient.job
def local_accumulator(ctx: resilient.Context, n: int) -> int:
    total = 0  # not in the checkpoint: lost with the process
    for i in ctx.iterate(range(n)):
        total += i * i
    return total


@resilient.job
def mail_everyone(ctx: resilient.Context, users: list[str]) -> int:
    for user in ctx.iterate(users):
        record_effect("mail", user)  # redone for the users after the last persisted position
    return len(users)


@resilient.job
def once_per_attempt(ctx: resilient.Context, users: list[str]) -> int:
    for user in ctx.iterate(users):
        ctx.once(f"mail:{user}:{ctx.attempt}", record_effect, "mail", user)  # a key that changes on resume
    return len(users)


@resilient.job
def fails_on_resume(ctx: resilient.Context, n: int) -> int:
    if ctx.checkpoint is not None and ctx.checkpoint.get("position") == 3:
        raise KeyError("total")
    return count_iterated.fn(ctx, n)  # type: ignore[no-any-return]


@resilient.job
def swallows_everything(ctx: resilient.Context, n: int) -> int:
    try:
        for _ in ctx.iterate(range(n)):
            pass
    except BaseException:
        pass
    return n


def _caught(fn: Any, *args: Any, **options: Any) -> NotResumable:
    with pytest.raises(NotResumable) as failure:
        assert_resumable(fn, *args, **options)
    return failure.value


def test_run_calls_a_job_inline_with_a_real_context():
    """run() needs no Redis or worker: first attempt, no checkpoint, no previous death, the result as a
    worker stores it (msgpack: a tuple comes back a list)."""
    seen = {}

    @resilient.job
    def look(ctx: resilient.Context, a: int, b: int = 0) -> tuple[int, ...]:
        seen.update(attempt=ctx.attempt, checkpoint=ctx.checkpoint, previous=ctx.previous_death)
        ctx.progress(1, 2)
        ctx.save({"a": a}, force=True)
        return (a, b)

    assert run(look, 1, b=2) == [1, 2]
    assert seen == {"attempt": 1, "checkpoint": None, "previous": None}
    assert run(square_sum, 4) == 14
    assert run(lambda ctx, xs: sum(ctx.iterate(xs)), [1, 2, 3]) == 6  # a plain function taking ctx works too


def test_run_fails_on_a_state_or_an_argument_a_worker_could_not_store():
    """The codec's checks apply: an unencodable state fails at ctx.save naming its path, as in a worker."""

    @resilient.job
    def keeps_a_set(ctx: resilient.Context) -> None:
        ctx.save({"seen": [1, {2}]})

    with pytest.raises(CheckpointError, match=r"state\['seen'\]\[1\]"):
        run(keeps_a_set)
    with pytest.raises(CheckpointError, match="arguments"):
        run(square_sum, {3})


def test_correct_jobs_pass_at_every_safe_point():
    """A checkpointed accumulator, ctx.iterate and effects under ctx.once resume to the same result; every
    safe point is checked, plus a death after the last one."""
    checked = assert_resumable(square_sum, 30)
    assert (checked.result, checked.safe_points, checked.checked, checked.seed) == (8555, 30, 31, None)
    assert assert_resumable(count_iterated, 30).checked == 31
    assert assert_resumable(mail_once, ["ann", "bob", "cy"], memory=True, deaths=3, seed=1).result == 3


def test_an_off_by_one_resume_position_is_caught_with_where_and_both_results():
    """The failure names the safe point of the death, the checkpoint resumed from, and both results."""
    failure = _caught(off_by_one, 10)
    assert "killed at safe point 2 of 10" in str(failure)
    assert "resumed from checkpoint seq 1: {'i': 1, 'total': 0}" in str(failure)
    assert "returned 284" in str(failure) and "uninterrupted run returned 285" in str(failure)
    assert (failure.resumed_from, failure.result, failure.expected) == ({"i": 1, "total": 0}, 284, 285)


def test_an_accumulator_saved_before_its_work_is_caught():
    """Saving "item i is done" before doing it loses item i when the job dies in between."""
    failure = _caught(saved_before_work, 10)
    assert failure.result != failure.expected == 285


def test_an_accumulator_outside_the_checkpoint_is_caught():
    """A local variable does not survive a death."""
    assert _caught(local_accumulator, 10).result < 285


def test_an_effect_repeated_after_a_resume_is_caught():
    """Effects outside ctx.once are redone after a resume, and so are those under a key that changes between
    attempts; the failure names the effect and how often it ran."""
    failure = _caught(mail_everyone, ["ann", "bob", "cy"])
    assert failure.result == failure.expected == 3
    assert failure.effects == ["effect mail('ann') ran 2 times (1 uninterrupted): repeated after a resume"]
    assert "repeated after a resume" in str(_caught(once_per_attempt, ["ann", "bob"]))


def test_a_job_that_raises_after_a_resume_is_caught():
    """An exception in a resumed attempt is a failure to resume, with the checkpoint it started from."""
    failure = _caught(fails_on_resume, 6)
    assert "raised KeyError" in str(failure) and failure.resumed_from == {"position": 3}


def test_only_what_was_persisted_survives_a_kill():
    """With saves persisting every 3rd safe point, a kill resumes from the last multiple of 3 (the saves since
    are lost); a memory preemption resumes from the very safe point it happened at."""
    resumes: list[tuple[Any, str | None]] = []

    def record(got: dict[str, Any], expected: dict[str, Any]) -> bool:
        resumes.append((got["resumed_from"], got["previous"]))
        return True

    assert_resumable(report, 10, persist_every=3, memory=True, equal=record)
    killed = [state["position"] if state else 0 for state, cause in resumes if cause == "killed"]
    preempted = [state["position"] for state, cause in resumes if cause == "preempted:memory"]
    assert killed == [0, 0, 0, 3, 3, 3, 6, 6, 6, 9, 9]
    assert preempted == list(range(1, 11))


def test_several_deaths_in_one_run_resume_each_time():
    """deaths=3: a seeded sample of runs killed up to three times; the later attempts know how the one before
    ended, and the same seed checks the same deaths."""
    attempts: list[int] = []

    def record(got: dict[str, Any], expected: dict[str, Any]) -> bool:
        attempts.append(got["attempt"])
        return True

    first = assert_resumable(report, 40, deaths=3, seed=11, equal=record)
    assert first.seed == 11 and first.checked == 41 and max(attempts) == 4
    again: list[int] = []
    assert_resumable(report, 40, deaths=3, seed=11, equal=lambda got, _: again.append(got["attempt"]) or True)
    assert again == attempts


def test_many_safe_points_are_sampled_with_a_printed_seed(capsys):
    """Above max_points, a seeded sample is checked and its seed printed, to be passed back."""
    checked = assert_resumable(count_iterated, 100, max_points=10, seed=5)
    assert (checked.checked, checked.seed) == (10, 5)
    assert "seed=5" in capsys.readouterr().out
    assert "seed=" in str(_caught(off_by_one, 50, max_points=20))


def test_a_job_that_catches_the_simulated_kill_is_refused():
    """A kill cannot be caught: a job that swallows BaseException cannot be checked, and is told why (seen
    once an attempt dies in the kit: the first death of a run is the uninterrupted run's, not run again)."""
    with pytest.raises(KitError, match="caught the simulated death"):
        assert_resumable(swallows_everything, 5, deaths=2, seed=3)


def test_every_safe_point_of_a_1000_item_iterate_is_checked_in_seconds():
    """1,001 deaths of a 1,000-item ctx.iterate job, each resumed to the end: ~0.7-1.2 s measured on a busy
    2-core machine."""
    checked = assert_resumable(count_iterated, 1000)
    assert checked.checked == 1001
    assert checked.seconds < 5, f"{checked.seconds:.2f} s"
