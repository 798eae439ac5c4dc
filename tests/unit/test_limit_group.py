"""The rules of a limit group as tables: who steps aside, who may start, whose fault a memory death was,
and what counts toward a job's caps; then the shared state file with real processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from resilient.memory.limits import Limit
from resilient.model import Cause, Death, Level
from resilient.runtime import limit_group
from resilient.runtime.deaths import blame, describe
from resilient.runtime.limit_group import LimitGroup, Need, Seat, choose_victim, expected_peak, fits

MiB = 1 << 20
HARD = 850 * MiB  # the hard line of a 1000 MiB limit


def seat(name: str, own_mb: int, age: float = 0.0, started: float = 0.0, running: bool = True) -> Seat:
    """A member whose horse holds `own_mb` MiB of its own (on top of 20 MiB shared with its worker)."""
    rss = (own_mb + 20) * MiB if running else 0
    return Seat(hash(name) % 10_000 + 1, name, horse_pid=1000 + len(name), rss=rss, base=20 * MiB,
                checkpoint_age=age, started_at=started)


@pytest.mark.parametrize("seats, usage_mb, chosen, why", [
    # a greedy job among small ones: the only one over its fair share goes, whatever its checkpoint age
    ([seat("greedy", 600, age=9.0), seat("small-a", 60), seat("small-b", 60)], 900, "greedy", "fair share"),
    # all within a fair share: the most memory freed per second of work since the last checkpoint
    ([seat("a", 250, age=4.0), seat("b", 240, age=0.2), seat("c", 250, age=2.0)], 860, "b", "0.2 s old"),
    # a fresh checkpoint weighs: of two over their share, the one with nothing at risk
    ([seat("big-old", 400, age=1.0), seat("big-new", 300, age=0.0), seat("s", 10)], 1000, "big-new",
     "brings the group under the line"),
    # one whose leaving alone is enough goes before one that would score higher but free too little
    ([seat("enough", 400, age=3.0), seat("too-little", 130, age=0.0)], 1000, "enough",
     "brings the group under the line"),
    # nobody frees enough alone: the one that frees the most goes first
    ([seat("a", 120), seat("b", 140), seat("c", 100)], 1100, "b", "not enough alone"),
    # equal in everything: the newest attempt
    ([seat("old", 300, started=1.0), seat("new", 300, started=2.0)], 900, "new", "of the 2 jobs"),
    # alone: it is its own group's excess
    ([seat("only", 800)], 880, "only", "ran alone"),
])
def test_victim_choice(seats, usage_mb, chosen, why):
    choice = choose_victim(seats, usage_mb * MiB, HARD)
    assert choice is not None and choice.seat.job_id == chosen
    assert why in choice.reason
    assert {s.job_id for s in choice.members} == {s.job_id for s in seats}


@pytest.mark.parametrize("seats", [
    [],  # nobody running
    [seat("admitted-not-forked", 0, running=False).__class__(1, "x")],  # a seat without a horse
    [seat("a", 400), seat("leaving", 300, running=False)],  # a horse on its way out: wait for its memory
])
def test_no_victim(seats):
    assert choose_victim(seats, 900 * MiB, HARD) is None


@pytest.mark.parametrize("expected_mb, lower_bound, usage_mb, members, admitted", [
    (None, False, 600, [], True),  # no history: below the soft line (700) it starts
    (None, False, 710, [], False),  # ... above it, it waits
    (300, False, 500, [], True),  # 500 + 300 - 20 shared <= 850
    (400, False, 500, [], False),  # 880 > 850
    (300, True, 500, [], False),  # a lower bound must fit under soft: 780 > 700
    (150, True, 500, [], True),  # 630 <= 700
    # a member at 200 MiB that has already been at 350 will grow back: 500 + 150 + 300 - 20 > 850
    (300, False, 500, [Seat(1, "m", 9, rss=200 * MiB, peak=350 * MiB)], False),
    # ... and one expected to reach 250 from 200: 500 + 50 + 300 - 20 <= 850
    (300, False, 500, [Seat(1, "m", 9, rss=200 * MiB, expected=250 * MiB)], True),
    # a seat taken but not forked yet counts with its whole expected peak
    (None, False, 400, [Seat(1, "m", 0, rss=20 * MiB, expected=400 * MiB)], False),
])
def test_admission(expected_mb, lower_bound, usage_mb, members, admitted):
    expected = expected_mb * MiB if expected_mb else None
    assert fits(expected, usage_mb * MiB, members, 20 * MiB, 700 * MiB, HARD, lower_bound) is admitted


@pytest.mark.parametrize("declared, own, recent, need", [
    (300, 900, [100], Need(300)),  # what a job declares wins
    (None, 0, [], Need(None)),  # nothing known
    (None, 200, [], Need(200, lower_bound=True)),  # its own unfinished attempt: a lower bound
    (None, 0, [10, 20, 30, 40, 50, 60, 70, 80, 90, 1000], Need(90)),  # p90 of the last attempts
    (None, 100, [300] * 5, Need(300)),  # its function's history says more than its own try
])
def test_expected_peak(declared, own, recent, need):
    assert expected_peak(declared, own, recent) == need


NEIGHBOURS = [{"worker_pid": 2, "job_id": "n", "rss": 300 * MiB, "own": 280 * MiB}]


@pytest.mark.parametrize("cause, evidence, facts", [
    (Cause.PREEMPTED_MEMORY, {"neighbours": NEIGHBOURS, "own_rss": 400 * MiB}, {"for_neighbours": True}),
    (Cause.PREEMPTED_MEMORY, {"neighbours": NEIGHBOURS, "own_rss": 860 * MiB}, {"for_neighbours": False}),
    (Cause.PREEMPTED_MEMORY, {"neighbours": [], "own_rss": 400 * MiB}, {}),  # it ran alone
    (Cause.OOM_KERNEL, {"neighbours": NEIGHBOURS, "ru_maxrss": 500 * MiB},
     {"for_neighbours": True, "biggest": True}),
    (Cause.OOM_KERNEL, {"neighbours": NEIGHBOURS, "ru_maxrss": 200 * MiB},
     {"for_neighbours": True, "biggest": False}),
    (Cause.KILLED, {"neighbours": NEIGHBOURS, "ru_maxrss": 200 * MiB}, {}),  # not a memory death
])
def test_blame(cause, evidence, facts):
    assert blame(cause, evidence, HARD) == facts


@pytest.mark.parametrize("cause, for_neighbours, cap, memory, attempt", [
    (Cause.PREEMPTED_MEMORY, True, False, False, False),  # stepped aside for its neighbours: nothing counts
    (Cause.PREEMPTED_MEMORY, False, False, True, True),  # its own growth: a memory death and an attempt
    (Cause.OOM_KERNEL, True, False, False, False),  # killed while others shared the limit
    (Cause.OOM_KERNEL, False, True, True, True),
    (Cause.OOM_SELF, True, False, False, False),
    (Cause.PREEMPTED_SHUTDOWN, False, False, False, False),  # not the job's doing
    (Cause.PREEMPTED_REDIS, False, False, False, False),
    (Cause.STALE, False, False, False, False),
    (Cause.KILLED, False, True, False, True),
    (Cause.LOST, False, True, False, True),
])
def test_what_a_death_counts_toward(cause, for_neighbours, cap, memory, attempt):
    death = Death(cause, {"for_neighbours": for_neighbours})
    assert (death.counts_toward_cap, death.is_memory, death.counts_as_attempt) == (cap, memory, attempt)


def test_a_step_aside_for_neighbours_says_so():
    death = Death(Cause.PREEMPTED_MEMORY, {"for_neighbours": True, "group": "g1", "group_usage": 860 * MiB,
                                           "group_limit": 1000 * MiB, "own_rss": 400 * MiB,
                                           "chosen_because": "it holds the most"})
    assert describe(death) == ("stepped aside for its neighbours: group g1 at 860.0 MiB of 1000.0 MiB, this job "
                               "400.0 MiB, chosen because it holds the most; not counted against it")


# --- the shared state file, with real processes as workers and horses --------------------------------
@pytest.fixture
def processes():
    """Start idle processes to stand in for workers and horses (alive, with an RSS); ended by PID."""
    started: list[subprocess.Popen] = []

    def start() -> int:
        proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        started.append(proc)
        return proc.pid

    yield start
    for proc in started:
        proc.kill()
        proc.wait()


def _group(tmp_path: Path, usage: list[int]) -> LimitGroup:
    return LimitGroup("g", lambda: Limit(1000 * MiB, "test"), lambda: usage[0], 0.85, directory=tmp_path)


def _members(group: LimitGroup, usage: list[int], count: int, processes) -> list[int]:
    """`count` workers admitted while the group is low, each with a running horse; then usage at 900 MiB."""
    usage[0] = 100 * MiB
    workers = [processes() for _ in range(count)]
    for worker in workers:
        assert group.admit(worker, f"job-{worker}", Need(None), 0.7, 0.85)
        group.horse_started(worker, processes())
    usage[0] = 900 * MiB
    return workers


def test_one_horse_is_chosen_and_the_others_hold_until_it_has_gone(tmp_path, processes):
    usage = [0]
    group = _group(tmp_path, usage)
    workers = _members(group, usage, 3, processes)
    levels = [group.level_for(worker, Level.HARD, usage[0]) for worker in workers]
    assert sorted(levels) == sorted([Level.HARD, Level.SOFT, Level.SOFT])
    chosen = workers[levels.index(Level.HARD)]
    assert [group.level_for(w, Level.HARD, usage[0]) for w in workers] == levels, "the choice must stand"

    facts = group.leave(chosen)
    assert facts["chosen_because"] and len(facts["neighbours"]) == 2
    # still over the line: its neighbours are spared while memory settles, unless at the critical line
    rest = [w for w in workers if w != chosen]
    assert [group.level_for(w, Level.HARD, usage[0]) for w in rest] == [Level.SOFT, Level.SOFT]
    assert sorted(group.level_for(w, Level.CRITICAL, usage[0]) for w in rest) == [Level.CRITICAL, Level.SOFT]


def test_a_new_choice_after_the_settle_interval(tmp_path, processes, monkeypatch):
    monkeypatch.setattr(limit_group, "SETTLE", 0.0)
    usage = [0]
    group = _group(tmp_path, usage)
    workers = _members(group, usage, 2, processes)
    first = next(w for w in workers if group.level_for(w, Level.HARD, usage[0]) == Level.HARD)
    group.leave(first)
    (other,) = [w for w in workers if w != first]
    assert group.level_for(other, Level.HARD, usage[0]) == Level.HARD
    assert group.level_for(other, Level.SOFT, usage[0]) == Level.SOFT, "under the hard line nobody is chosen"


def test_a_dead_workers_seat_is_not_counted(tmp_path, processes):
    usage = [650 * MiB]
    group = _group(tmp_path, usage)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    group.admit(gone.pid, "orphan", Need(600 * MiB), 0.7, 0.85)  # alone: admitted
    me = processes()
    assert group.admit(me, "next", Need(None), 0.7, 0.85), "a SIGKILLed worker's seat kept the group full"
    assert [s.job_id for s in group.members()] == ["next"]


def test_an_undeclared_job_asks_for_its_expected_peak_only_when_it_has_neighbours(tmp_path, processes):
    """Alone, a job with no declared memory takes its seat at once; beside another it takes nothing and the
    worker is asked for the job's learned peak (read from Redis outside the group's lock)."""
    usage = [100 * MiB]
    group = _group(tmp_path, usage)
    first, second = processes(), processes()
    assert group.admit(first, "alone", None, 0.7, 0.85) is True
    assert group.admit(second, "beside", None, 0.7, 0.85) is None
    assert [s.job_id for s in group.members()] == ["alone"], "asking must not take a seat"
    assert group.admit(second, "beside", Need(300 * MiB), 0.7, 0.85) is True
    fits_now, seats = group.headroom(second, Need(2000 * MiB), 0.7, 0.85)
    assert not fits_now and seats == {(first, "alone"), (second, "beside")}
