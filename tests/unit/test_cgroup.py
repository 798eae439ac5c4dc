"""Memory cgroups: one contract over v1- and v2-shaped trees, version specifics, then the real hierarchy."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from cgroup_support import FakeHierarchy, GiB, MiB, cgroups_or_skip

from resilient.errors import CgroupUnavailable
from resilient.memory import probe
from resilient.memory.cgroup import (
    Cgroup,
    ancestors,
    anon_usage,
    create_child,
    find_cgroup,
    limit_of,
    move_into,
    oom_kill_count,
    pids_in,
    pressure_path,
    remove,
    v1_mount,
)
from resilient.memory.limits import discover_limit
from resilient.memory.probe import find_oom_line, read_kernel_log


@pytest.fixture(params=[1, 2], ids=["v1", "v2"])
def tree(request: pytest.FixtureRequest, tmp_path: Path) -> FakeHierarchy:
    return FakeHierarchy(tmp_path, request.param)


def find(tree: FakeHierarchy) -> Cgroup | None:
    return find_cgroup(proc_root=tree.proc_root, cgroup_root=tree.cgroup_root)


# --- contract: the same behaviour on v1 and v2 ------------------------------------------------


def test_finds_the_memory_group_of_the_process(tree: FakeHierarchy) -> None:
    """The worker finds its own memory cgroup directory and knows which version it is."""
    assert find(tree) == tree.cgroup(tree.leaf)


def test_no_cgroup_file_means_no_group(tree: FakeHierarchy) -> None:
    """A process whose /proc entry is gone or unreadable has no group rather than an error."""
    assert find_cgroup(pid=999999, proc_root=tree.proc_root, cgroup_root=tree.cgroup_root) is None


def test_ancestors_run_from_the_group_up_to_the_root(tree: FakeHierarchy) -> None:
    """Every enclosing group is visited, so a limit set higher up is not missed."""
    chain = ancestors(tree.cgroup(tree.leaf), tree.cgroup_root)
    assert [cg.path for cg in chain] == [tree.dir(g) for g in ("/app/job/horse", "/app/job", "/app", "/")]


def test_limit_is_reported_with_the_file_that_set_it(tree: FakeHierarchy) -> None:
    """A limit is shown together with the file it came from, so a user can check it."""
    tree.set_limit("/app/job", 512 * MiB)
    assert limit_of(tree.cgroup("/app/job")) == [(512 * MiB, str(tree.dir("/app/job") / tree.limit_file))]


def test_no_limit_sentinel_is_not_a_limit(tree: FakeHierarchy) -> None:
    """v1's huge 'unlimited' number and v2's 'max' never show up as a limit."""
    assert limit_of(tree.cgroup(tree.leaf)) == []


def test_oom_kill_counter_is_read(tree: FakeHierarchy) -> None:
    """Kernel OOM kills in the group are counted, the evidence for an 'oom:kernel' verdict."""
    tree.set_oom_kills(tree.leaf, 3)
    assert oom_kill_count(tree.cgroup(tree.leaf)) == 3


def test_unreadable_oom_counter_is_none_not_zero(tree: FakeHierarchy) -> None:
    """When the counter cannot be read the evidence says 'unavailable', never a silent 0."""
    for name in ("memory.oom_control", "memory.events"):
        (tree.dir(tree.leaf) / name).unlink(missing_ok=True)
    assert oom_kill_count(tree.cgroup(tree.leaf)) is None


def test_usage_counts_anonymous_memory_and_shmem_but_not_cache(tree: FakeHierarchy) -> None:
    """Usage is what the kernel cannot reclaim: anon + shmem, not the page cache it drops first."""
    tree.set_usage(tree.leaf, anon=100 * MiB, shmem=10 * MiB, cache=900 * MiB)
    assert anon_usage(tree.cgroup(tree.leaf)) == 110 * MiB


def test_unreadable_usage_is_none(tree: FakeHierarchy) -> None:
    """A group whose memory.stat is gone reports no usage instead of a made-up number."""
    (tree.dir(tree.leaf) / "memory.stat").unlink()
    assert anon_usage(tree.cgroup(tree.leaf)) is None


def test_path_from_another_namespace_falls_back_to_the_mount(tree: FakeHierarchy) -> None:
    """In a container without a cgroup namespace the group mounted at the root is the process's own."""
    (tree.proc_root / "self" / "cgroup").write_text(
        (tree.proc_root / "self" / "cgroup").read_text().replace(tree.leaf, "/host/docker/abc")
    )
    assert find(tree) == Cgroup(tree.version, tree.mount)


def test_removing_a_group_that_is_gone_is_fine(tree: FakeHierarchy) -> None:
    """Cleaning up twice (or after someone else did) does not raise."""
    remove(tree.cgroup("/app/never-made"))


def test_child_group_name_must_be_one_component(tree: FakeHierarchy) -> None:
    """A worker name with a slash cannot escape the parent group."""
    with pytest.raises(CgroupUnavailable, match="one path component"):
        create_child(64 * MiB, "../escape", tree.cgroup(tree.leaf))


def test_child_group_gets_the_limit(tree: FakeHierarchy) -> None:
    """--memory-limit creates a child group carrying that limit in the version's own file."""
    child = create_child(300 * MiB, "worker-1", tree.cgroup("/app/job"))
    assert child == tree.cgroup("/app/job/worker-1")
    assert (child.path / tree.limit_file).read_text() == str(300 * MiB)


# --- version specifics ------------------------------------------------------------------------


def test_hybrid_host_prefers_the_v1_memory_controller(tmp_path: Path) -> None:
    """On a hybrid host (v1 controllers plus a v2 '0::' line) the v1 memory group is used."""
    tree = FakeHierarchy(tmp_path, 1)
    (tree.cgroup_root / "unified" / "cgroup.controllers").write_text("")
    assert find(tree) == Cgroup(1, tree.dir(tree.leaf))


def test_v1_comounted_memory_controller_is_found(tmp_path: Path) -> None:
    """A v1 memory controller co-mounted with others (cpu,memory) is still found."""
    (tmp_path / "cpu,memory").mkdir()
    (tmp_path / "cpu,memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    assert v1_mount(tmp_path) == tmp_path / "cpu,memory"


def test_a_directory_named_memory_is_not_enough(tmp_path: Path) -> None:
    """An empty 'memory' directory (cgroups not mounted) is not taken for a memory cgroup."""
    (tmp_path / "memory").mkdir()
    assert v1_mount(tmp_path) is None


def test_v1_transparent_huge_pages_are_not_counted_twice(tmp_path: Path) -> None:
    """v1 total_rss already includes total_rss_huge, so a THP-heavy job is not seen at twice its size."""
    tree = FakeHierarchy(tmp_path, 1)
    (tree.dir(tree.leaf) / "memory.stat").write_text(
        "rss 1\nrss_huge 1\ntotal_rss 273313792\ntotal_rss_huge 268435456\ntotal_shmem 0\n"
    )
    assert anon_usage(tree.cgroup(tree.leaf)) == 273313792


def test_v1_without_hierarchical_totals_uses_own_counters(tmp_path: Path) -> None:
    """Kernels without total_* lines in memory.stat still give a usage."""
    tree = FakeHierarchy(tmp_path, 1)
    (tree.dir(tree.leaf) / "memory.stat").write_text("cache 5\nrss 4096\nrss_huge 0\nshmem 4096\n")
    assert anon_usage(tree.cgroup(tree.leaf)) == 8192


def test_v2_memory_high_is_a_limit_too(tmp_path: Path) -> None:
    """On v2 both memory.max (kill) and memory.high (throttle) count as limits."""
    tree = FakeHierarchy(tmp_path, 2)
    tree.set_limit(tree.leaf, GiB)
    tree.set_high(tree.leaf, 768 * MiB)
    directory = tree.dir(tree.leaf)
    assert limit_of(tree.cgroup(tree.leaf)) == [
        (GiB, str(directory / "memory.max")),
        (768 * MiB, str(directory / "memory.high")),
    ]


def test_v2_group_pressure_file_is_preferred(tmp_path: Path) -> None:
    """On v2 the group's own memory.pressure is watched: it sees only this container's stalls."""
    tree = FakeHierarchy(tmp_path, 2)
    (tree.dir(tree.leaf) / "memory.pressure").write_text("some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n")
    assert pressure_path(tree.cgroup(tree.leaf), tree.proc_root) == tree.dir(tree.leaf) / "memory.pressure"


def test_v1_pressure_falls_back_to_the_system_file(tmp_path: Path) -> None:
    """On v1 (no per-group PSI) the system-wide /proc/pressure/memory is watched."""
    tree = FakeHierarchy(tmp_path, 1)
    assert pressure_path(tree.cgroup(tree.leaf), tree.proc_root) == tree.proc_root / "pressure" / "memory"


def test_v2_without_memory_controller_cannot_make_child(tmp_path: Path) -> None:
    """When v2 offers no memory controller the worker says so instead of running uncapped."""
    tree = FakeHierarchy(tmp_path, 2)
    (tree.dir("/app/job") / "cgroup.controllers").write_text("cpu io pids\n")
    with pytest.raises(CgroupUnavailable, match="memory controller is not available"):
        create_child(64 * MiB, "worker-1", tree.cgroup("/app/job"))


def test_v2_memory_controller_is_enabled_for_children(tmp_path: Path) -> None:
    """On v2 the parent's subtree_control is asked for +memory so the child's memory.max exists."""
    tree = FakeHierarchy(tmp_path, 2)
    (tree.dir("/app/job") / "cgroup.subtree_control").write_text("pids\n")
    create_child(64 * MiB, "worker-1", tree.cgroup("/app/job"))
    assert (tree.dir("/app/job") / "cgroup.subtree_control").read_text() == "+memory"


# --- the real hierarchy of this machine -------------------------------------------------------


@pytest.mark.skipif(not Path("/proc/self/cgroup").exists(), reason="no /proc/self/cgroup (not Linux)")
def test_real_memory_group_is_found() -> None:
    """On this host the worker finds the memory cgroup it runs in."""
    cg = find_cgroup()
    assert cg is not None and cg.path.is_dir()
    assert any((cg.path / name).exists() for name in ("memory.limit_in_bytes", "memory.stat"))


@pytest.mark.oom
def test_real_child_group_caps_a_process_and_leaves_nothing_behind() -> None:
    """A worker's own 64 MiB group holds its process, counts OOM kills, and is gone after remove()."""
    parent = cgroups_or_skip()
    child = create_child(64 * MiB, f"resilient-test-{uuid.uuid4().hex[:8]}", parent)
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        move_into(child, sleeper.pid)
        assert pids_in(child) == [sleeper.pid]
        assert limit_of(child)[0][0] == 64 * MiB
        assert oom_kill_count(child) == 0
        limit = discover_limit(pid=sleeper.pid)
        assert limit.bytes <= 64 * MiB
        if limit.bytes == 64 * MiB:
            assert limit.cgroup == child and limit.source.startswith(f"cgroup v{child.version} {child.path}")
        remove(child)
        assert not child.path.exists()
        assert sleeper.pid in pids_in(parent)
    finally:
        sleeper.kill()
        sleeper.wait()
        remove(child)


@pytest.mark.oom
def test_real_kernel_oom_kill_is_counted_and_logged(monkeypatch: pytest.MonkeyPatch) -> None:
    """A process that outgrows its group is killed by the kernel; the counter and kernel log show it."""
    parent = cgroups_or_skip()
    child = create_child(64 * MiB, f"resilient-test-{uuid.uuid4().hex[:8]}", parent)
    hog = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.readline(); b = bytearray(b'x') * (256 << 20)"],
        stdin=subprocess.PIPE,
    )
    try:
        move_into(child, hog.pid)
        assert hog.stdin is not None
        hog.stdin.write(b"go\n")
        hog.stdin.close()
        assert hog.wait(timeout=30) == -9
        assert oom_kill_count(child) == 1
        line = find_oom_line(read_kernel_log(), hog.pid)
        if _kernel_log_readable():
            assert line is not None and f"Killed process {hog.pid} (" in line
            monkeypatch.setattr(probe, "_dmesg", lambda: None)  # without dmesg, /dev/kmsg says the same
            assert find_oom_line(read_kernel_log(), hog.pid) == line
    finally:
        if hog.poll() is None:
            hog.kill()
            hog.wait()
        remove(child)


def _kernel_log_readable() -> bool:
    return os.geteuid() == 0 and subprocess.run(["dmesg"], capture_output=True).returncode == 0
