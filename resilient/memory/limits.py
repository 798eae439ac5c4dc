"""The effective memory limit L, where it comes from, and how to measure usage against it."""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .cgroup import CGROUP_ROOT, PROC, Cgroup, ancestors, anon_usage, find_cgroup, limit_of
from .probe import read_rss

CONFIGURED = "configured --memory-limit"
PHYSICAL_RAM = "physical RAM"
_RLIMITS = {"RLIMIT_AS": resource.RLIMIT_AS, "RLIMIT_RSS": resource.RLIMIT_RSS}
_PROC_LIMIT_NAMES = {"RLIMIT_AS": "Max address space", "RLIMIT_RSS": "Max resident set"}


@dataclass(frozen=True)
class Limit:
    """L in bytes and what set it, e.g. "cgroup v1 /sys/fs/cgroup/memory/x/memory.limit_in_bytes"."""

    bytes: int
    source: str
    cgroup: Cgroup | None = None  # the group whose limit this is, when a cgroup set it

    @property
    def from_cgroup(self) -> bool:
        return self.cgroup is not None


def discover_limit(
    configured: int | None = None,
    pid: int | str = "self",
    proc_root: Path = PROC,
    cgroup_root: Path = CGROUP_ROOT,
) -> Limit:
    """The smallest of: `configured`, every cgroup ancestor's limit, RLIMIT_AS/RSS, physical RAM.

    On a tie the cgroup wins, since that is the limit the kernel enforces.
    """
    candidates = cgroup_limits(pid, proc_root, cgroup_root)
    if configured is not None:
        candidates.append(Limit(configured, CONFIGURED))
    candidates += rlimits(pid, proc_root)
    candidates.append(physical_ram(proc_root))
    return min(candidates, key=lambda limit: limit.bytes)  # min() keeps the first of equals: the cgroup


def cgroup_limits(
    pid: int | str = "self", proc_root: Path = PROC, cgroup_root: Path = CGROUP_ROOT
) -> list[Limit]:
    """Every limit set by the process's memory cgroup or one of its ancestors, innermost first."""
    cg = find_cgroup(pid, proc_root, cgroup_root)
    if cg is None:
        return []
    return [
        Limit(value, f"cgroup v{group.version} {file}", group)
        for group in ancestors(cg, cgroup_root)
        for value, file in limit_of(group)
    ]


def rlimits(pid: int | str = "self", proc_root: Path = PROC) -> list[Limit]:
    """RLIMIT_AS / RLIMIT_RSS where set (soft limits: those are the ones that bite)."""
    found = []
    for name, which in _RLIMITS.items():
        soft = resource.getrlimit(which)[0] if pid == "self" else _proc_rlimit(proc_root, pid, name)
        if soft is not None and soft != resource.RLIM_INFINITY and soft > 0:
            found.append(Limit(soft, name))
    return found


def physical_ram(proc_root: Path = PROC) -> Limit:
    """MemTotal from `proc_root`/meminfo, else the page count the C library reports."""
    try:
        for line in (Path(proc_root) / "meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return Limit(int(line.split()[1]) * 1024, PHYSICAL_RAM)
    except (OSError, ValueError, IndexError):
        pass
    return Limit(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), PHYSICAL_RAM)


def usage_reader(limit: Limit, cg: Cgroup | None = None) -> Callable[[], int]:
    """A function returning the usage to compare with L: the same thing the enforcer of L counts.

    A cgroup limit is enforced on the whole group (worker parent, horse, siblings), so read the anon
    usage of the group that set it (~25 µs for a v1 memory.stat here); anything else is per process:
    read our own RSS (~2 µs). `cg` stands in when `limit` names a cgroup source but carries no group.
    """
    group = limit.cgroup or (cg if limit.source.startswith("cgroup") else None)
    if group is None or anon_usage(group) is None:
        return read_rss

    def read_group_usage() -> int:
        usage = anon_usage(group)
        return read_rss() if usage is None else usage  # the group vanished: our own RSS is the best left

    return read_group_usage


def _proc_rlimit(proc_root: Path, pid: int | str, name: str) -> int | None:
    """A soft limit of another process from `proc_root`/PID/limits; None when unreadable or unlimited."""
    label = _PROC_LIMIT_NAMES[name]
    try:
        text = (Path(proc_root) / str(pid) / "limits").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(label):
            soft = line[len(label) :].split()[0]
            return int(soft) if soft.isdigit() else None
    return None
