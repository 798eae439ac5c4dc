"""The memory governor: a daemon thread in the horse that turns usage against L into a level and acts on it.

Cost, measured here (2 cores, kernel 6.18, 3 s runs, process CPU): sampling every 100 ms with read_rss
takes 0.2 % of one core, with a v1 cgroup's memory.stat as the usage source 0.4 %; at the 10 ms fast
interval 0.6-0.9 % and 1.0-1.5 %. Most of it is the thread waking up (~40-70 µs of CPU per wake-up in
this VM, cold caches after), not the reads (read_rss 2 µs, PSI 11 µs, memory.stat 25 µs when hot).
"""

from __future__ import annotations

import _thread
import ctypes
import functools
import gc
import logging
import threading
import time
from typing import Callable

from ..model import Level, Thresholds
from .limits import Limit
from .probe import Pressure

log = logging.getLogger(__name__)

RELIEF_INTERVAL = 1.0  # seconds between two gc.collect() + malloc_trim() runs at most
FAST_RISE = 0.05  # a rise of this fraction of L between two samples switches to the fast interval
PSI_REFRESH = 0.5  # seconds: the kernel recomputes PSI averages only every 2 s, rereading sooner is waste
HOLD_MAX = 2.0  # seconds a horse not chosen to step aside waits at a safe point for its group to make room


class Governor:
    """Samples usage against L, keeps the level, frees what it can under pressure, reports critical once."""

    def __init__(
        self,
        limit: Limit,
        thresholds: Thresholds,
        read_usage: Callable[[], int],
        read_psi: Callable[[], Pressure | None] | None = None,
        on_critical: Callable[[int], None] | None = None,
        arbiter: Callable[[Level, int], Level] | None = None,
        interval: float = 0.1,
        fast_interval: float = 0.01,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.thresholds = thresholds
        self.interval = interval
        self.fast_interval = fast_interval
        self.usage = 0
        self.peak = 0
        self.psi: Pressure | None = None
        self.samples = 0
        self.sampled_at = float("-inf")  # clock() of the last sample
        self.reliefs = 0
        self._read_usage = read_usage
        self._read_psi = read_psi
        self._on_critical = on_critical
        self._arbiter = arbiter  # turns the group's level into this horse's (see LimitGroup.level_for)
        self._clock = clock
        self._level = Level.OK
        self.group_level = Level.OK  # the level of the whole limit, before the arbiter's say
        self._critical_reported = False
        self._last_relief: float | None = None
        self._psi_read_at: float | None = None
        self._lock = threading.Lock()  # sample() and relieve() run on the thread and from ctx.save() alike
        self._stopping = threading.Event()
        self._started = False
        self._ended = threading.Event()  # set when the sampling thread has returned
        self._every: tuple[float, Callable[[], None]] | None = None  # a side task run on the same thread
        self._every_due = 0.0

    @property
    def level(self) -> Level:
        return self._level

    @property
    def fraction(self) -> float:
        return self.usage / self.limit.bytes

    def sample(self) -> Level:
        """Take one measurement, update usage/peak/psi/level, report critical (once); return the level."""
        usage = self._read_usage()
        self.usage = usage
        self.peak = max(self.peak, usage)
        if self._read_psi is not None and self._psi_due():
            self.psi = self._read_psi()
        self.group_level = level = self.classify(usage, self.psi)
        self._level = self._arbiter(level, usage) if self._arbiter is not None else level
        self.samples += 1
        self.sampled_at = self._clock()
        if self._level == Level.CRITICAL and self._on_critical is not None and self._claim_critical():
            self._on_critical(usage)
        return self._level

    def classify(self, usage: int, psi: Pressure | None) -> Level:
        """The level for this usage and PSI reading: PSI stalls alone make it at least soft."""
        fraction = usage / self.limit.bytes
        marks = self.thresholds
        lines = ((Level.CRITICAL, marks.critical), (Level.HARD, marks.hard), (Level.SOFT, marks.soft))
        level = next((name for name, line in lines if fraction >= line), Level.OK)
        if level == Level.OK and psi is not None and psi.some_avg10 > self.thresholds.psi_some_avg10:
            return Level.SOFT
        return level

    def make_room(self) -> None:
        """At a safe point, while the group is over its hard line and another horse was chosen to step
        aside: allocate nothing more until it has (usage back under the line), this horse is chosen
        itself, or HOLD_MAX has passed. Without the wait the others' growth can outrun the chosen one's
        way to its safe point and bring the kernel in."""
        deadline = self._clock() + HOLD_MAX
        while (self.group_level.rank >= Level.HARD.rank and self._level.rank < Level.HARD.rank
               and self._clock() < deadline):
            time.sleep(self.fast_interval)
            self.sample()

    def _claim_critical(self) -> bool:
        with self._lock:
            first, self._critical_reported = not self._critical_reported, True
            return first

    def _psi_due(self) -> bool:
        now = self._clock()
        if self._psi_read_at is not None and now - self._psi_read_at < PSI_REFRESH:
            return False
        self._psi_read_at = now
        return True

    def next_interval(self, level: Level, rise: int) -> float:
        """How long to wait before the next sample: fast from soft up or while usage climbs steeply."""
        if level != Level.OK or rise > FAST_RISE * self.limit.bytes:
            return self.fast_interval
        return self.interval

    def relieve(self) -> bool:
        """Hand freed memory back (gc.collect(), glibc malloc_trim(0)), at most once per second."""
        with self._lock:
            now = self._clock()
            if self._last_relief is not None and now - self._last_relief < RELIEF_INTERVAL:
                return False
            self._last_relief = now
            self.reliefs += 1
        gc.collect()
        trim = _malloc_trim()
        if trim is not None:
            trim(0)
        return True

    def every(self, seconds: float, task: Callable[[], None]) -> None:
        """Also run `task` every `seconds` on the sampling thread (one thread per horse, not two)."""
        self._every, self._every_due = (seconds, task), self._clock() + seconds

    def next_job(self, thresholds: Thresholds) -> None:
        """A reused horse starts another job: the job's lines, a peak of its own, a fresh critical report;
        the side task of the last job (its memory history) is dropped."""
        with self._lock:
            self.thresholds = thresholds
            self.peak = self.usage
            self._critical_reported = False
            self._every = None

    def start(self) -> None:
        """Start sampling on a daemon thread (no-op when already running). Started with _thread, which does
        not wait for the new thread to be scheduled: threading's start does, which cost ~0.6 ms of every
        trivial job's horse on this machine (2 cores under load)."""
        if self.running:
            return
        self._stopping.clear()
        self._ended.clear()
        self._started = True
        _thread.start_new_thread(self._run_until_stopped, ())

    def stop(self, timeout: float = 1.0) -> None:
        """Stop the sampling thread and wait for it (up to `timeout` seconds)."""
        self._stopping.set()
        if self._started:
            self._ended.wait(timeout)

    @property
    def running(self) -> bool:
        return self._started and not self._ended.is_set()

    def _run_until_stopped(self) -> None:
        try:
            self._run()
        finally:
            self._ended.set()

    def _run(self) -> None:
        # The thread remembers the level it last saw itself: ctx.save() also samples, from the job's thread.
        # Its first sample waits one interval: the first ctx.save() samples at once anyway, and a job that
        # ends within the interval costs nothing.
        delay, seen = self.interval, Level.OK
        while not self._stopping.wait(delay):
            delay, seen = self._step(seen)
            self._run_side_task()

    def _run_side_task(self) -> None:
        if self._every is None or self._clock() < self._every_due:
            return
        seconds, task = self._every
        self._every_due = self._clock() + seconds
        try:
            task()
        except Exception:
            log.exception("memory governor: its side task failed; carrying on")

    def _step(self, seen: Level) -> tuple[float, Level]:
        """One sample and the relief a rise calls for; returns the next delay and the level. Never raises."""
        previous_usage = self.usage
        try:
            level = self.sample()
            if level.rank > seen.rank:
                self.relieve()
            return self.next_interval(level, self.usage - previous_usage), level
        except Exception:
            log.exception("memory governor: a sample or its action failed; carrying on")
            return self.interval, seen


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None (musl, jemalloc builds without it, no C library to load)."""
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    trim = getattr(libc, "malloc_trim", None)
    if trim is not None:
        trim.argtypes = [ctypes.c_size_t]
        trim.restype = ctypes.c_int
    return trim
