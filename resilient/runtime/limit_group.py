"""A limit group: the workers on one host whose horses count against the same memory limit. They act as one
through a small state file (JSON under the private run directory, read and written under flock): at the hard
line exactly one horse is chosen to step aside, and a job is admitted only when its expected peak fits what
the group has left. Workers under different limits have different files and never see each other."""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from ..config import format_size
from ..memory.limits import Limit
from ..memory.probe import read_peak_rss, read_rss, read_rss_of
from ..model import Level
from ..ops.health import private_dir

log = logging.getLogger("resilient.memory")
SETTLE = 1.0  # seconds after a chosen horse has gone before the next one may be chosen
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


@dataclass(frozen=True)
class Seat:
    """One member as the policy sees it: its job, its horse (0: admitted, not forked yet) and memory."""

    worker_pid: int
    job_id: str
    horse_pid: int = 0
    rss: int = 0  # the horse's RSS now (its worker's RSS while the horse is not forked yet)
    base: int = 0  # its worker's RSS when it was admitted: what the horse shares with it at fork
    expected: int = 0  # bytes of RSS the job is expected to reach (0: nothing known)
    peak: int = 0  # the highest RSS its horse has had so far
    checkpoint_age: float = 0.0  # seconds of work since its last checkpoint
    started_at: float = 0.0  # wall clock: when its attempt started

    @property
    def running(self) -> bool:
        return self.horse_pid > 0 and self.rss > 0

    @property
    def leaving(self) -> bool:
        """Its horse has let go of its memory map and is on its way out: what it held is being freed."""
        return self.horse_pid > 0 and self.rss == 0

    @property
    def own(self) -> int:
        """What the horse holds beyond what it shares with its worker: what stepping aside frees."""
        return max(0, self.rss - self.base)


@dataclass(frozen=True)
class Choice:
    """The horse chosen to step aside, why, and the group as it was then."""

    seat: Seat
    reason: str
    usage: int
    hard: int
    members: list[Seat] = field(default_factory=list)


def choose_victim(seats: list[Seat], usage: int, hard: int) -> Choice | None:
    """The one running horse that steps aside when the group's `usage` is at or over the `hard` line.

    Policy (least harm per byte freed): only horses holding more than a fair share of the line (line / n)
    are candidates, unless none does; of those, the ones whose leaving alone brings usage under the line,
    unless none would; of those, the most memory freed per second of work since its last checkpoint (what
    a kill would lose, and what the step-aside must still carry to its safe point); on a tie the newest
    attempt. A small neighbour is never chosen while a big one is there."""
    running = [seat for seat in seats if seat.running]
    if not running or any(seat.leaving for seat in seats):
        return None  # with a horse on its way out, usage is about to drop: choose on the next sample
    share = hard // len(running)
    excess = usage - hard
    pool = [seat for seat in running if seat.own > share] or running
    enough = [seat for seat in pool if seat.own >= excess] or pool
    victim = max(enough, key=lambda seat: (seat.own / (1.0 + seat.checkpoint_age), seat.started_at))
    return Choice(victim, _why(victim, running, share, excess), usage, hard, running)


def _why(victim: Seat, running: list[Seat], share: int, excess: int) -> str:
    if len(running) == 1:
        return f"it ran alone: its {format_size(victim.own)} took the group over the line"
    facts = [f"it holds {format_size(victim.own)} of the {len(running)} jobs' memory "
             f"(fair share {format_size(share)})"]
    facts.append("its leaving alone brings the group under the line" if victim.own >= excess
                 else "it frees the most, yet not enough alone")
    facts.append(f"its last checkpoint is {victim.checkpoint_age:.1f} s old")
    return "; ".join(facts)


def fits(expected: int | None, usage: int, seats: list[Seat], base: int, soft: int, hard: int,
         lower_bound: bool = False) -> bool:
    """May a job expected to reach `expected` bytes of RSS (None: nothing known) start now? Each member may
    still grow back to the highest of its expected peak and its peak so far. A job with no history starts
    only below the soft line; so does one whose figure is a lower bound (the peak of an attempt that did
    not finish: it was still growing), the margin up to the hard line being its room to grow."""
    committed = usage + sum(max(0, max(seat.expected, seat.peak) - seat.rss) for seat in seats)
    if expected is None:
        return committed < soft
    return committed + max(0, expected - base) <= (soft if lower_bound else hard)


@dataclass(frozen=True)
class Need:
    """What a job is expected to reach, and whether that figure is only a lower bound."""

    expected: int | None  # bytes of RSS; None: nothing known
    lower_bound: bool = False


def expected_peak(declared: int | None, own_peak: int, recent: list[int]) -> Need:
    """The RSS a job is expected to reach: what it declared; else the highest of its own peak in earlier
    attempts (a lower bound: those did not finish) and the 90th percentile of its function's last 20
    attempts (old ones roll off, so the figure follows the function as it changes)."""
    if declared:
        return Need(declared)
    learned = sorted(recent)[int(0.9 * (len(recent) - 1))] if recent else 0
    return Need(max(own_peak, learned) or None, lower_bound=own_peak > 0 and own_peak >= learned)


def group_id(limit: Limit) -> str | None:
    """Who shares this limit: the cgroup that sets it, named the same from every container and namespace on
    the host (boot id, device and inode of its directory). None when the limit is this worker's own (a
    configured figure or an rlimit measured against its own RSS, or physical RAM measured per process)."""
    if limit.cgroup is None:
        return None
    try:
        info = os.stat(limit.cgroup.path)
        boot = BOOT_ID.read_text().strip()
    except OSError:
        return None
    return hashlib.sha1(f"{boot}:{info.st_dev}:{info.st_ino}".encode()).hexdigest()[:16]


class LimitGroup:
    """The shared state of one limit group. Every method is one locked read-modify-write of its file."""

    def __init__(self, gid: str, limit: Callable[[], Limit], usage: Callable[[], int], hard_line: float,
                 directory: Path | None = None) -> None:
        self.gid = gid
        self.hard_line = hard_line  # fraction of L where the group's hard line is
        self._limit = limit
        self._usage = usage
        directory = directory or private_dir() / "groups"
        directory.mkdir(mode=0o700, exist_ok=True)
        self.path = directory / gid

    # --- the worker parent --------------------------------------------------------------------
    def admit(self, worker_pid: int, job_id: str, need: Need | None, soft: float, hard: float) -> bool | None:
        """Take a seat for `job_id` if it fits the group's headroom now (see fits). `need` None means not
        declared: alone, the job takes its seat; with others present, nothing is taken and the answer is
        None, asking for the expected peak (learned from Redis, which must not be read under the lock)."""
        base = read_rss()
        with self._state() as state:
            if need is None:
                if self._others(state, worker_pid):
                    return None
                need = Need(None)
            elif not self._fits(state, worker_pid, need, base, soft, hard):
                return False
            seat = Seat(worker_pid, job_id, base=base, expected=need.expected or 0)
            state["members"][str(worker_pid)] = asdict(seat)
            return True

    def headroom(self, worker_pid: int, need: Need, soft: float, hard: float) -> tuple[bool, set[tuple[int, str]]]:
        """One look, no seat taken: would a job of this need be admitted now, and who holds the seats
        ((worker pid, job id): what changes when one leaves or comes)."""
        with self._state(write=False) as state:
            fits_now = self._fits(state, worker_pid, need, read_rss(), soft, hard)
            seats = self._seats(state["members"]).values()
            return fits_now, {(seat.worker_pid, seat.job_id) for seat in seats}

    def _fits(self, state: dict[str, Any], worker_pid: int, need: Need, base: int, soft: float,
              hard: float) -> bool:
        """Alone in the group, any job may start (one that cannot fit alone is turned away before)."""
        others = self._others(state, worker_pid)
        limit = self._limit().bytes
        return not others or fits(need.expected, self._usage(), others, base, int(soft * limit),
                                  int(hard * limit), need.lower_bound)

    def _others(self, state: dict[str, Any], worker_pid: int) -> list[Seat]:
        return [seat for pid, seat in self._seats(state["members"]).items() if pid != worker_pid]

    def leave(self, worker_pid: int) -> dict[str, Any]:
        """The worker's horse is gone (or never started): free its seat. Returns the facts of the group a
        death is judged by: the choice, if this horse was chosen, and the neighbours as they are now."""
        with self._state() as state:
            seat = state["members"].pop(str(worker_pid), None)
            choice: dict[str, Any] | None = state.get("choice")
            if choice is not None and choice["worker_pid"] == worker_pid:
                _settle(state, choice)
            else:
                choice = None
            neighbours = [self._seat_of(value) for value in self._live(state["members"]).values()]
        return self._facts(seat, choice, neighbours)

    def _facts(self, seat: dict[str, Any] | None, choice: dict[str, Any] | None,
               neighbours: list[Seat]) -> dict[str, Any]:
        facts: dict[str, Any] = {"group": self.gid, "group_limit": self._limit().bytes}
        if choice is not None:
            facts.update(chosen_because=choice["reason"], group_usage=choice["usage"],
                         neighbours=choice["neighbours"], own_rss=choice["own"])
        else:
            facts.update(group_usage=self._usage(), neighbours=[_brief(other) for other in neighbours
                                                                 if other.running])
        if seat is not None:
            facts["expected"] = seat.get("expected", 0)
        return facts

    def members(self) -> list[Seat]:
        """Every live seat, with its horse's RSS now (for status views)."""
        with self._state(write=False) as state:
            return list(self._seats(state["members"]).values())

    def preemptions(self) -> int:
        """How many times the group has chosen a horse to step aside for the others (for status views)."""
        with self._state(write=False) as state:
            return int(state.get("preemptions", 0))

    # --- the horse ----------------------------------------------------------------------------
    def horse_started(self, worker_pid: int, horse_pid: int) -> None:
        now = time.time()
        with self._state() as state:
            seat = state["members"].get(str(worker_pid))
            if seat is not None:
                seat.update(horse_pid=horse_pid, started_at=now, checkpoint_at=now)

    def checkpointed(self, worker_pid: int) -> None:
        with self._state() as state:
            seat = state["members"].get(str(worker_pid))
            if seat is not None:
                seat["checkpoint_at"] = time.time()

    def level_for(self, worker_pid: int, level: Level, usage: int) -> Level:
        """The level this horse acts on: the group's, except that at the hard line and above only the
        chosen horse sees it; the others see soft (checkpoint sooner, shed memory) and carry on."""
        if level.rank < Level.HARD.rank:
            return level
        with self._state() as state:
            choice = self._current_choice(state, usage, urgent=level == Level.CRITICAL)
        if choice is not None and choice["worker_pid"] == worker_pid:
            return level
        return Level.SOFT

    def _current_choice(self, state: dict[str, Any], usage: int, urgent: bool) -> dict[str, Any] | None:
        """The standing choice until its worker gives its seat back (leave); then a new one, though not
        among the last choice's neighbours until the group has settled (SETTLE seconds, not when `urgent`:
        at the critical line someone must go now)."""
        members = self._live(state["members"])
        choice: dict[str, Any] | None = state.get("choice")
        if choice is not None:
            if str(choice["worker_pid"]) in members:
                return choice
            _settle(state, choice)  # its worker died without giving the seat back
        settle = state.get("settle") or {}
        spared = set() if urgent or time.time() >= settle.get("until", 0.0) else set(settle.get("spared", []))
        seats = [seat for seat in self._seats(members).values() if seat.worker_pid not in spared]
        made = choose_victim(seats, usage, int(self._limit().bytes * self.hard_line))
        if made is None:
            return None
        log.warning("group %s at %s of %s: job %s is chosen to step aside (%s)", self.gid, format_size(usage),
                    format_size(self._limit().bytes), made.seat.job_id, made.reason)
        state["choice"] = choice = _record(made)
        state["preemptions"] = state.get("preemptions", 0) + 1
        return choice

    # --- the file -----------------------------------------------------------------------------
    @contextmanager
    def _state(self, write: bool = True) -> Iterator[dict[str, Any]]:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if write else fcntl.LOCK_SH)
            state = _read(fd)
            yield state
            if write:
                data = json.dumps(state).encode()
                os.lseek(fd, 0, os.SEEK_SET)
                os.write(fd, data)
                os.ftruncate(fd, len(data))
        finally:
            os.close(fd)  # releases the lock

    @staticmethod
    def _live(members: dict[str, Any]) -> dict[str, Any]:
        """Seats whose worker still runs (a SIGKILLed worker cannot give its seat back)."""
        return {pid: seat for pid, seat in members.items() if _alive(int(pid))}

    def _seats(self, members: dict[str, Any]) -> dict[int, Seat]:
        return {int(pid): self._seat_of(seat) for pid, seat in self._live(members).items()}

    @staticmethod
    def _seat_of(value: dict[str, Any]) -> Seat:
        horse = int(value.get("horse_pid", 0))
        rss = read_rss_of(horse) if horse else int(value.get("base", 0))
        age = time.time() - float(value.get("checkpoint_at", 0.0)) if horse else 0.0
        return Seat(int(value["worker_pid"]), str(value.get("job_id", "")), horse, rss,
                    int(value.get("base", 0)), int(value.get("expected", 0)), read_peak_rss(horse) if horse else 0,
                    max(0.0, age), float(value.get("started_at", 0.0)))


def _settle(state: dict[str, Any], choice: dict[str, Any]) -> None:
    """The chosen horse is gone: its neighbours then are spared for SETTLE seconds while memory settles."""
    state["choice"] = None
    state["settle"] = {"until": time.time() + SETTLE, "spared": [n["worker_pid"] for n in choice["neighbours"]]}


def _record(choice: Choice) -> dict[str, Any]:
    seat = choice.seat
    return {"worker_pid": seat.worker_pid, "horse_pid": seat.horse_pid, "job_id": seat.job_id,
            "reason": choice.reason, "usage": choice.usage, "own": seat.own,
            "neighbours": [_brief(other) for other in choice.members if other is not seat]}


def _brief(seat: Seat) -> dict[str, Any]:
    return {"worker_pid": seat.worker_pid, "job_id": seat.job_id, "rss": seat.rss, "own": seat.own}


def _read(fd: int) -> dict[str, Any]:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    try:
        state: dict[str, Any] = json.loads(b"".join(chunks) or b"{}")
    except ValueError:  # a torn file cannot happen under the lock; anything else is started afresh
        log.warning("limit group state unreadable; starting it afresh")
        state = {}
    state.setdefault("members", {})
    return state


def _alive(pid: int) -> bool:
    return pid > 0 and os.path.exists(f"/proc/{pid}")
