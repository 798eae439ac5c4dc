"""The effective limit L: the smallest of cgroups, configuration, rlimits and RAM, and what to measure."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from cgroup_support import FAKE_RAM, FakeHierarchy, GiB, MiB

from resilient.memory.limits import (
    CONFIGURED,
    PHYSICAL_RAM,
    Limit,
    discover_limit,
    physical_ram,
    usage_reader,
)
from resilient.memory.probe import read_rss


@pytest.fixture(params=[1, 2], ids=["v1", "v2"])
def tree(request: pytest.FixtureRequest, tmp_path: Path) -> FakeHierarchy:
    return FakeHierarchy(tmp_path, request.param)


def discover(tree: FakeHierarchy, configured: int | None = None) -> Limit:
    return discover_limit(configured, proc_root=tree.proc_root, cgroup_root=tree.cgroup_root)


# --- contract: the same behaviour on v1 and v2 ------------------------------------------------


def test_smallest_ancestor_limit_wins_even_in_the_middle(tree: FakeHierarchy) -> None:
    """A limit set on an enclosing group (not the process's own) is the one found, with its file."""
    tree.set_limit("/app", 2 * GiB)
    tree.set_limit("/app/job", 512 * MiB)
    tree.set_limit(tree.leaf, GiB)
    limit = discover(tree)
    assert limit == Limit(
        512 * MiB, f"cgroup v{tree.version} {tree.dir('/app/job') / tree.limit_file}", tree.cgroup("/app/job")
    )


def test_configured_limit_below_the_cgroup_wins(tree: FakeHierarchy) -> None:
    """--memory-limit below the container's limit is the one the governor works to."""
    tree.set_limit("/app/job", GiB)
    assert discover(tree, configured=300 * MiB) == Limit(300 * MiB, CONFIGURED)


def test_tie_between_configured_and_cgroup_names_the_cgroup(tree: FakeHierarchy) -> None:
    """When both say the same number, the cgroup is named: it is what the kernel enforces."""
    tree.set_limit(tree.leaf, 300 * MiB)
    limit = discover(tree, configured=300 * MiB)
    assert limit.bytes == 300 * MiB and limit.source.startswith(f"cgroup v{tree.version} ")


def test_no_limit_anywhere_means_physical_ram(tree: FakeHierarchy) -> None:
    """With no cgroup limit, no configuration and no rlimit, L is the machine's RAM."""
    assert discover(tree) == Limit(FAKE_RAM, PHYSICAL_RAM)


def test_cgroup_limit_measures_the_group_that_set_it(tree: FakeHierarchy) -> None:
    """Under a cgroup limit the whole limited group's usage is watched, not just the horse's."""
    tree.set_limit("/app/job", 512 * MiB)
    tree.set_usage("/app/job", anon=300 * MiB, cache=100 * MiB)
    tree.set_usage(tree.leaf, anon=100 * MiB)
    read = usage_reader(discover(tree))
    assert read() == 300 * MiB
    tree.set_usage("/app/job", anon=400 * MiB)
    assert read() == 400 * MiB


def test_group_usage_falls_back_to_own_rss_when_the_group_vanishes(tree: FakeHierarchy) -> None:
    """If the limited group's stats disappear mid-job, usage is still measured (our own RSS)."""
    tree.set_limit(tree.leaf, 512 * MiB)
    tree.set_usage(tree.leaf, anon=300 * MiB)
    read = usage_reader(discover(tree))
    (tree.dir(tree.leaf) / "memory.stat").unlink()
    assert abs(read() - read_rss()) < 16 * MiB


# --- other sources ----------------------------------------------------------------------------


def test_v2_memory_high_below_max_is_the_limit(tmp_path: Path) -> None:
    """On v2 memory.high (where the kernel starts throttling) counts when it is the lower line."""
    tree = FakeHierarchy(tmp_path, 2)
    tree.set_limit("/app", GiB)
    tree.set_high("/app", 700 * MiB)
    assert discover(tree).source == f"cgroup v2 {tree.dir('/app') / 'memory.high'}"


def test_configured_limit_without_cgroup_measures_own_rss() -> None:
    """With only a configured number, the horse's own RSS is what is compared with it."""
    read = usage_reader(Limit(300 * MiB, CONFIGURED), None)
    assert abs(read() - read_rss()) < 16 * MiB


@pytest.mark.parametrize("name", ["RLIMIT_AS", "RLIMIT_RSS"])
def test_rlimit_of_this_process_is_a_limit(name: str) -> None:
    """A process started under `ulimit -v` (or an RSS rlimit) reports that rlimit as L."""
    script = f"""
import json, resource
from resilient.memory.limits import discover_limit
cap = min(discover_limit().bytes - 4096, 1 << 30)
resource.setrlimit(resource.{name}, (cap, cap))
limit = discover_limit()
print(json.dumps([limit.bytes, limit.source, cap]))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    size, source, cap = json.loads(done.stdout)
    assert (size, source) == (cap, name)


def test_rlimit_of_another_process_is_read_from_proc(tree: FakeHierarchy) -> None:
    """The parent can find the limit of another pid (its horse) from /proc/PID/limits."""
    (tree.proc_root / "4242").mkdir()
    (tree.proc_root / "4242" / "cgroup").write_text((tree.proc_root / "self" / "cgroup").read_text())
    (tree.proc_root / "4242" / "limits").write_text(
        "Limit                     Soft Limit           Hard Limit           Units     \n"
        "Max resident set          unlimited            unlimited            bytes     \n"
        "Max address space         1073741824           unlimited            bytes     \n"
    )
    limit = discover_limit(pid=4242, proc_root=tree.proc_root, cgroup_root=tree.cgroup_root)
    assert limit == Limit(GiB, "RLIMIT_AS")


def test_physical_ram_without_meminfo_asks_the_c_library(tmp_path: Path) -> None:
    """Without a readable meminfo the RAM size still comes out (from sysconf)."""
    ram = physical_ram(tmp_path)
    assert ram.source == PHYSICAL_RAM and ram.bytes > 64 * MiB


def test_real_limit_is_found() -> None:
    """On this host a positive limit and its source are always found."""
    limit = discover_limit()
    assert limit.bytes > 0
    assert limit.source.startswith(("cgroup v1 ", "cgroup v2 ", "RLIMIT_", PHYSICAL_RAM))
