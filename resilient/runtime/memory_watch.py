"""The worker's view of memory: its limit (and own cgroup), the horse's governor, evidence at a death."""

from __future__ import annotations

import logging
import mmap
import os
import struct
import time
from typing import Any, Callable

from ..config import Settings, format_size
from ..errors import CgroupUnavailable
from ..memory import cgroup as cgroups
from ..memory.governor import Governor
from ..memory.limits import Limit, discover_limit, usage_reader
from ..memory.probe import in_container, read_kernel_log, read_pressure, read_rss, read_rss_of
from ..model import LEVELS, Level, Thresholds
from .deaths import kernel_log_verdict
from .limit_group import LimitGroup, Need, group_id

log = logging.getLogger("resilient.memory")
LIMIT_REFRESH = 5.0  # seconds between two reads of L (a container's limit can be changed live)
GROUP_PREFIX = "resilient-worker-"  # + the worker's pid
HORSE_OOM_SCORE_ADJ = 1000  # make the horse the kernel's first choice, never the parent
_SHARED = struct.Struct("qqqd")  # usage, peak, level index, time of the sample: written by the horse


class MemoryWatcher:
    """Lives in the worker parent; arms a Governor in each horse and gathers evidence when one dies."""

    def __init__(self, settings: Settings, own_cgroup: bool = True) -> None:
        self.settings = settings
        self.child_cgroup: cgroups.Cgroup | None = None
        if settings.memory_limit and own_cgroup:
            self.child_cgroup = self._enter_own_cgroup(settings.memory_limit)
        self.cgroup = cgroups.find_cgroup()
        self.limit = discover_limit(settings.memory_limit)
        self._limit_read_at = time.monotonic()
        self._read_usage = usage_reader(self.limit, self.cgroup)
        self._before: int | None = None
        self._shared = mmap.mmap(-1, _SHARED.size)  # anonymous, shared with the horses we fork
        self.governor: Governor | None = None  # the horse's
        self._watch = Governor(self.limit, self.thresholds(), self.usage, read_psi=self._read_psi)  # the parent's
        self.worker_pid = os.getpid()
        gid = group_id(self.limit)
        self.group = LimitGroup(gid, lambda: self.limit, self.usage, settings.hard) if gid else None

    # --- parent ----------------------------------------------------------------------------------
    def _enter_own_cgroup(self, limit: int) -> cgroups.Cgroup | None:
        """Put this worker (and so its horses) in a child cgroup capped at `limit`, as a container would."""
        _remove_groups_of_dead_workers()
        try:
            group = cgroups.create_child(limit, f"{GROUP_PREFIX}{os.getpid()}")
            _charge_moves_along(group)
            cgroups.move_into(group, os.getpid())
        except CgroupUnavailable as exc:
            log.warning("memory limit %s enforced by the governor alone: %s", format_size(limit), exc)
            return None
        log.info("worker runs in its own memory cgroup %s (limit %s)", group.path, format_size(limit))
        return group

    def refresh_limit(self) -> Limit:
        if time.monotonic() - self._limit_read_at >= LIMIT_REFRESH:
            self.limit = discover_limit(self.settings.memory_limit)
            self._read_usage = usage_reader(self.limit, self.cgroup)
            self._limit_read_at = time.monotonic()
        return self.limit

    def facts(self, soft: float | None = None, hard: float | None = None,
              critical: float | None = None) -> dict[str, Any]:
        """The limit and lines an attempt runs under, recorded with it (what inspect --plot draws against)."""
        t = self.thresholds(soft, hard, critical)
        return {"limit": self.limit.bytes, "limit_source": self.limit.source, "soft": t.soft, "hard": t.hard,
                "critical": t.critical}

    def before_attempt(self) -> None:
        self.refresh_limit()
        self._shared[:] = _SHARED.pack(0, 0, 0, 0.0)
        self._before = cgroups.oom_kill_count(self.cgroup) if self.cgroup else None

    def oom_counts(self) -> tuple[int | None, int | None]:
        after = cgroups.oom_kill_count(self.cgroup) if self.cgroup else None
        return self._before, after

    def usage(self) -> int:
        """What counts against L right now (the group's anon memory, or this process's RSS)."""
        return self._read_usage()

    def level(self) -> Level:
        """The level of the whole worker (parent + horse + siblings in its cgroup), PSI included."""
        self._watch.limit = self.refresh_limit()
        return self._watch.sample()

    def thresholds(self, soft: float | None = None, hard: float | None = None,
                   critical: float | None = None) -> Thresholds:
        s = self.settings
        return Thresholds(soft or s.soft, hard or s.hard, critical or s.critical, s.psi_threshold)

    def _read_psi(self) -> Any:
        return read_pressure(cgroups.pressure_path(self.cgroup))

    def evidence(self, before: int | None, after: int | None, fields: dict[str, str],
                 job_pid: int | None = None, killed: bool = False) -> dict[str, Any]:
        usage, peak, level, sampled_at = _SHARED.unpack(self._shared[:])
        psi = self._read_psi()
        evidence: dict[str, Any] = {
            "rss": usage or None,
            "peak_rss": peak or None,
            "level": LEVELS[level],
            "limit": self.limit.bytes,
            "limit_source": self.limit.source,
            "oom_kill_before": "unavailable" if before is None else before,
            "oom_kill_after": "unavailable" if after is None else after,
            "psi_some_avg10": psi.some_avg10 if psi else "unavailable",
            "psi_full_avg10": psi.full_avg10 if psi else "unavailable",
            "seq": int(fields.get("seq", 0)),
        }
        if killed and job_pid:
            evidence["kernel_log"] = kernel_log_verdict(job_pid, before, after, read_kernel_log(), in_container())
        return evidence

    def status(self, horse_pid: int = 0) -> dict[str, Any]:
        """For `resilient status`: usage against L and the level; the horse's RSS (its share of the usage);
        under a shared limit, the group's id and how often it chose a horse to step aside ("" and 0 alone)."""
        level = self.level()
        horse_rss = read_rss_of(horse_pid) if horse_pid else 0
        group = self.group
        return {"rss": self._watch.usage, "limit": self.limit.bytes, "limit_source": self.limit.source,
                "level": level, "soft": self.settings.soft, "hard": self.settings.hard, "horse_rss": horse_rss,
                "group": group.gid if group else "", "step_asides": group.preemptions() if group else 0}

    def admit(self, job_id: str, need: Need | None) -> bool | None:
        """Take a seat in the limit group if the job fits its headroom (always, for a worker alone).
        None: the job's need was not declared and others are present; call again with its expected peak."""
        if self.group is None:
            return True
        return self.group.admit(self.worker_pid, job_id, need, self.settings.soft, self.settings.hard)

    def headroom(self, need: Need) -> tuple[bool, set[tuple[int, str]]]:
        """Would a job of this need be admitted now (a look, no seat taken), and who holds the seats."""
        if self.group is None:
            return True, set()
        return self.group.headroom(self.worker_pid, need, self.settings.soft, self.settings.hard)

    def release_seat(self) -> dict[str, Any]:
        """The horse is gone: give the seat back; the group facts a death is judged by ({} alone)."""
        return self.group.leave(self.worker_pid) if self.group is not None else {}

    def close(self) -> None:
        self.release_seat()
        if self.child_cgroup is not None:
            cgroups.remove(self.child_cgroup)
            self.child_cgroup = None

    # --- horse -----------------------------------------------------------------------------------
    def in_horse(self, on_critical: Callable[[int], None], thresholds: Thresholds | None = None) -> Governor:
        """Arm the horse: the kernel should pick it first, and a governor thread watches it."""
        _raise_oom_score()
        read = self._read_usage
        shared = self._shared

        def read_and_share() -> int:
            usage = read()
            governor = self.governor
            peak = max(usage, governor.peak if governor else 0)
            level = governor.level.rank if governor else 0
            shared[:] = _SHARED.pack(usage, peak, level, time.time())
            return usage

        group, worker_pid = self.group, self.worker_pid
        arbiter = None
        if group is not None:
            group.horse_started(worker_pid, os.getpid())

            def arbiter(level: Level, usage: int) -> Level:
                return group.level_for(worker_pid, level, usage)

        self.governor = Governor(self.limit, thresholds or self.thresholds(), read_and_share,
                                 read_psi=self._read_psi, on_critical=on_critical, arbiter=arbiter,
                                 interval=self.settings.sample_interval)
        self.governor.start()
        return self.governor

    def next_job(self, thresholds: Thresholds) -> None:
        """In a reused horse, before each job after its first (see in_horse, which arms it for the first)."""
        if self.governor is not None:
            self.governor.next_job(thresholds)
        if self.group is not None:
            self.group.horse_started(self.worker_pid, os.getpid())

    def job_done(self) -> None:
        """In a reused horse, after each job: until the next, the shared peak is the idle process's, not the
        last job's (the parent zeroes it at the next attempt's start; a sample must not bring it back)."""
        if self.governor is not None:
            self.governor.next_job(self.governor.thresholds)

    def checkpointed(self) -> None:
        """In the horse, after a checkpoint persisted: the group's victim choice weighs work since then."""
        if self.group is not None:
            self.group.checkpointed(self.worker_pid)


def _remove_groups_of_dead_workers() -> None:
    """A worker that was SIGKILLed could not remove its group: remove the empty ones whose pid is gone."""
    parent = cgroups.find_cgroup()
    if parent is None:
        return
    for path in parent.path.glob(f"{GROUP_PREFIX}*"):
        pid = path.name.removeprefix(GROUP_PREFIX)
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            group = cgroups.Cgroup(parent.version, path)
            if cgroups.pids_in(group):
                continue
            try:
                cgroups.remove(group)
            except CgroupUnavailable as exc:  # someone else's to deal with: this worker can still start
                log.warning("cannot remove the cgroup of a dead worker: %s", exc)


def _charge_moves_along(group: cgroups.Cgroup) -> None:
    """v1 leaves memory charged to the old group when a process moves; count ours where we go, as a
    container would from the start (v2 has no such switch and needs none for new allocations)."""
    switch = group.path / "memory.move_charge_at_immigrate"
    if group.version == 1 and switch.exists():
        try:
            switch.write_text("3")
        except OSError as exc:
            log.info("memory charged before the move stays with the old group: %s", exc)


def _raise_oom_score() -> None:
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(HORSE_OOM_SCORE_ADJ))
    except OSError as exc:  # not fatal: the governor still acts before the kernel does
        log.warning("cannot raise the horse's oom_score_adj: %s", exc)


__all__ = ["MemoryWatcher", "read_rss"]
