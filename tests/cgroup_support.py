"""Cgroup test support: fake v1/v2 hierarchies in a temp dir, and skip-or-fail for real cgroups.

Test modules import it as `from cgroup_support import ...`: tests/ has no __init__.py, so pytest's
default (prepend) import mode puts it on sys.path when it loads tests/conftest.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from resilient.errors import CgroupUnavailable
from resilient.memory.cgroup import Cgroup, create_child, find_cgroup, remove

MiB = 1 << 20
GiB = 1 << 30
REQUIRE_ENV = "RESILIENT_REQUIRE_OOM_TESTS"
V1_NO_LIMIT = 9223372036854771712  # what v1 shows for "no limit": LONG_MAX rounded down to a 4 KiB page
FAKE_RAM = 8 * GiB


def cgroups_or_skip() -> Cgroup:
    """This process's memory cgroup, if child groups can be created in it.

    Otherwise the test is skipped, or failed when RESILIENT_REQUIRE_OOM_TESTS=1 (a CI that must run them).
    """
    parent = find_cgroup()
    reason = "this process is in no memory cgroup" if parent is None else _cannot_create_under(parent)
    if reason is None and parent is not None:
        return parent
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{REQUIRE_ENV}=1 but real cgroups cannot be used: {reason}")
    pytest.skip(f"real cgroups cannot be used: {reason}")


def _cannot_create_under(parent: Cgroup) -> str | None:
    try:
        probe = create_child(64 * MiB, f"resilient-probe-{os.getpid()}", parent)
    except CgroupUnavailable as exc:
        return str(exc)
    remove(probe)
    return None


class FakeHierarchy:
    """A /proc and /sys/fs/cgroup laid out like a v1 (hybrid) or a v2 host, our process in group `leaf`.

    Groups are named by their path in the hierarchy ("/", "/app", "/app/job", ...); every group of the
    leaf's chain exists, with no limit, no OOM kills and no usage until a test sets them.
    """

    def __init__(self, root: Path, version: int, leaf: str = "/app/job/horse") -> None:
        self.version = version
        self.leaf = leaf
        self.proc_root = root / "proc"
        self.cgroup_root = root / "sys" / "fs" / "cgroup"
        (self.proc_root / "self").mkdir(parents=True)
        (self.proc_root / "meminfo").write_text(f"MemTotal:       {FAKE_RAM // 1024} kB\nMemFree: 1 kB\n")
        if version == 1:
            # A hybrid host: v1 controllers plus a v2 tree (without the memory controller) at unified/.
            self.mount = self.cgroup_root / "memory"
            (self.cgroup_root / "unified").mkdir(parents=True)
            membership = f"12:pids:/elsewhere\n4:memory:{leaf}\n1:name=systemd:/user.slice\n0::/\n"
        else:
            self.mount = self.cgroup_root
            membership = f"0::{leaf}\n"
        (self.proc_root / "self" / "cgroup").write_text(membership)
        parts = leaf.strip("/").split("/")
        for depth in range(len(parts) + 1):
            self._make("/" + "/".join(parts[:depth]))

    @property
    def limit_file(self) -> str:
        return "memory.limit_in_bytes" if self.version == 1 else "memory.max"

    def dir(self, group: str) -> Path:
        return self.mount / group.lstrip("/")

    def cgroup(self, group: str) -> Cgroup:
        return Cgroup(self.version, self.dir(group))

    def set_limit(self, group: str, value: int | None) -> None:
        """The hard limit (v1 memory.limit_in_bytes, v2 memory.max); None writes the "no limit" sentinel."""
        if value is None:
            value_text = str(V1_NO_LIMIT) if self.version == 1 else "max"
        else:
            value_text = str(value)
        (self.dir(group) / self.limit_file).write_text(value_text + "\n")

    def set_high(self, group: str, value: int | None) -> None:
        assert self.version == 2, "memory.high exists on v2 only"
        (self.dir(group) / "memory.high").write_text(("max" if value is None else str(value)) + "\n")

    def set_oom_kills(self, group: str, count: int) -> None:
        if self.version == 1:
            text = f"oom_kill_disable 0\nunder_oom 0\noom_kill {count}\n"
            (self.dir(group) / "memory.oom_control").write_text(text)
        else:
            text = f"low 0\nhigh 0\nmax 7\noom {count + 1}\noom_kill {count}\noom_group_kill 0\n"
            (self.dir(group) / "memory.events").write_text(text)

    def set_usage(self, group: str, anon: int, shmem: int = 0, cache: int = 200 * MiB) -> None:
        """memory.stat: `anon` bytes of anonymous memory (half of it THP-backed), shmem and page cache."""
        if self.version == 1:
            own = f"cache {cache}\nrss {anon}\nrss_huge {anon // 2}\nshmem {shmem}\nmapped_file 0\n"
            totals = f"total_cache {cache}\ntotal_rss {anon}\ntotal_rss_huge {anon // 2}\n"
            totals += f"total_shmem {shmem}\n"
            text = own + f"hierarchical_memory_limit {V1_NO_LIMIT}\n" + totals
        else:
            text = f"anon {anon}\nfile {cache + shmem}\nkernel 1048576\nshmem {shmem}\nanon_thp {anon // 2}\n"
        (self.dir(group) / "memory.stat").write_text(text)

    def _make(self, group: str) -> None:
        path = self.dir(group)
        path.mkdir(parents=True, exist_ok=True)
        self.set_oom_kills(group, 0)
        self.set_usage(group, 0, cache=0)
        if self.version == 2:
            (path / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
            (path / "cgroup.subtree_control").write_text("memory pids\n")
            if group == "/":
                return  # the v2 root has no memory.max / memory.high
            self.set_high(group, None)
        self.set_limit(group, None)
