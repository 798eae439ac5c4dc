"""Where a process's memory cgroup is (v1 or v2), what its files say, and child groups for workers."""

from __future__ import annotations

import contextlib
import errno
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import CgroupUnavailable

PROC = Path("/proc")
CGROUP_ROOT = Path("/sys/fs/cgroup")

# v1 writes "no limit" as LONG_MAX rounded down to a page (9223372036854771712); anything this big is none.
V1_UNLIMITED = 2**62

_LIMIT_FILES = {1: ("memory.limit_in_bytes",), 2: ("memory.max", "memory.high")}
_OOM_FILES = {1: "memory.oom_control", 2: "memory.events"}
_REMOVE_PATIENCE = 2.0  # seconds rmdir retries EBUSY while exiting tasks leave the group


@dataclass(frozen=True)
class Cgroup:
    """The directory of one memory cgroup and the hierarchy version it belongs to."""

    version: int  # 1 or 2
    path: Path


def find_cgroup(
    pid: int | str = "self", proc_root: Path = PROC, cgroup_root: Path = CGROUP_ROOT
) -> Cgroup | None:
    """The memory cgroup of `pid`, or None when it has none we can see.

    On a hybrid host (v1 controllers plus a v2 `0::` line) the memory controller lives on v1,
    so a v1 `memory` line wins whenever the v1 memory hierarchy is mounted.
    """
    text = _read_text(Path(proc_root) / str(pid) / "cgroup")
    if text is None:
        return None
    v1_relative, v2_relative = _memberships(text)
    mount = v1_mount(cgroup_root)
    if v1_relative is not None and mount is not None:
        return Cgroup(1, _group_dir(mount, v1_relative))
    if v2_relative is not None and (Path(cgroup_root) / "cgroup.controllers").exists():
        return Cgroup(2, _group_dir(Path(cgroup_root), v2_relative))
    return None


def v1_mount(cgroup_root: Path = CGROUP_ROOT) -> Path | None:
    """The mount point of the v1 memory hierarchy (`memory`, or a co-mount such as `cpu,memory`)."""
    root = Path(cgroup_root)
    if _is_v1_memory_dir(root / "memory"):
        return root / "memory"
    try:
        entries = list(root.iterdir())
    except OSError:
        return None
    return next((e for e in entries if "memory" in e.name.split(",") and _is_v1_memory_dir(e)), None)


def _is_v1_memory_dir(path: Path) -> bool:
    return (path / "memory.limit_in_bytes").exists()


def hierarchy_root(cg: Cgroup, cgroup_root: Path = CGROUP_ROOT) -> Path:
    """The top directory of the hierarchy `cg` belongs to."""
    if cg.version == 1:
        return v1_mount(cgroup_root) or Path(cgroup_root) / "memory"
    return Path(cgroup_root)


def ancestors(cg: Cgroup, cgroup_root: Path = CGROUP_ROOT) -> list[Cgroup]:
    """`cg`, its parent, ... up to and including the root of its hierarchy."""
    root = hierarchy_root(cg, cgroup_root)
    chain = [path for path in (cg.path, *cg.path.parents) if path == root or root in path.parents]
    return [Cgroup(cg.version, path) for path in chain] or [cg]


def limit_of(cg: Cgroup) -> list[tuple[int, str]]:
    """The limits this one group sets, each with the file that set it ("none" sentinels left out)."""
    limits = []
    for name in _LIMIT_FILES[cg.version]:
        text = (_read_text(cg.path / name) or "").strip()  # v2 writes "max" for none
        if text.isdigit() and int(text) < V1_UNLIMITED:
            limits.append((int(text), str(cg.path / name)))
    return limits


def oom_kill_count(cg: Cgroup) -> int | None:
    """How many processes the kernel OOM-killed in this group; None when the counter is unreadable."""
    return _read_keyed(cg.path / _OOM_FILES[cg.version]).get("oom_kill")


def anon_usage(cg: Cgroup) -> int | None:
    """Bytes of swap-backed memory charged to the group and its descendants: what reclaim cannot drop.

    That is anonymous memory plus shmem (tmpfs, /dev/shm, shared anonymous maps), which the kernel
    keeps on the anon LRU too: with no swap neither can be reclaimed, so both push towards the OOM kill.
    Page cache is left out: the kernel drops it before it kills.
    """
    stat = _read_keyed(cg.path / "memory.stat")
    if cg.version == 2:
        anon = stat.get("anon")
        return None if anon is None else anon + stat.get("shmem", 0)
    # v1 `rss` already includes `rss_huge` (kernel docs; measured here: a 256 MiB THP-backed map showed
    # total_rss 273 MB, total_rss_huge 268 MB, usage_in_bytes 274 MB): adding rss_huge would count THP twice.
    prefix = "total_" if "total_rss" in stat else ""
    rss = stat.get(prefix + "rss")
    return None if rss is None else rss + stat.get(prefix + "shmem", 0)


def pressure_path(cg: Cgroup | None, proc_root: Path = PROC) -> Path:
    """The PSI file that speaks for this group: its own on v2, else the system-wide one."""
    if cg is not None and cg.version == 2 and (cg.path / "memory.pressure").exists():
        return cg.path / "memory.pressure"
    return Path(proc_root) / "pressure" / "memory"


def create_child(limit_bytes: int, name: str, parent: Cgroup | None = None) -> Cgroup:
    """Make (or reuse) the child group `name` under `parent`, capped by the kernel at `limit_bytes`."""
    parent = parent or find_cgroup()
    if parent is None:
        raise CgroupUnavailable("(none)", "this process is in no memory cgroup visible under /sys/fs/cgroup")
    if not name or "/" in name or name in (".", ".."):
        raise CgroupUnavailable(str(parent.path / name), "a child group name must be one path component")
    if parent.version == 2:
        _enable_memory_controller(parent)
    child = Cgroup(parent.version, parent.path / name)
    # Reuse a leftover of the same name (its worker died before remove()): names carry the worker's identity.
    created = not child.path.exists()
    try:
        child.path.mkdir(exist_ok=True)
    except OSError as exc:
        raise CgroupUnavailable(str(child.path), _why(exc, "create a group")) from None
    try:
        _write(child.path / _LIMIT_FILES[child.version][0], str(limit_bytes))
    except OSError as exc:
        if created:
            with contextlib.suppress(OSError):
                child.path.rmdir()
        raise CgroupUnavailable(str(child.path), _why(exc, "set its memory limit")) from None
    return child


def move_into(cg: Cgroup, pid: int) -> None:
    """Move process `pid` (all its threads) into the group."""
    try:
        _write(cg.path / "cgroup.procs", str(pid))
    except OSError as exc:
        raise CgroupUnavailable(str(cg.path), _why(exc, f"move pid {pid} into it")) from None


def pids_in(cg: Cgroup) -> list[int]:
    """The processes directly in this group (empty when it is gone)."""
    text = _read_text(cg.path / "cgroup.procs") or ""
    return [int(line) for line in text.split()]


def remove(cg: Cgroup) -> None:
    """Move any processes still inside to the parent group, then delete the group; a gone group is fine."""
    if not cg.path.is_dir():
        return
    for pid in pids_in(cg):
        with contextlib.suppress(OSError):  # it exited meanwhile, or rmdir below says why
            _write(cg.path.parent / "cgroup.procs", str(pid))
    deadline = time.monotonic() + _REMOVE_PATIENCE
    while True:
        try:
            cg.path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            # A task that is exiting can keep the group busy for a moment after it left cgroup.procs.
            if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                raise CgroupUnavailable(str(cg.path), _why(exc, "remove it")) from None
            time.sleep(0.01)


def _memberships(text: str) -> tuple[str | None, str | None]:
    """(v1 memory path, v2 path) from the lines of /proc/PID/cgroup."""
    v1 = v2 = None
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, relative = parts
        if "memory" in controllers.split(","):
            v1 = relative
        elif hierarchy == "0" and controllers == "":
            v2 = relative
    return v1, v2


def _group_dir(mount: Path, relative: str) -> Path:
    path = mount / relative.lstrip("/")
    # In a container without a cgroup namespace /proc says the host's path while the mount shows only
    # the container's own group at its root: that root is then our group.
    return path if path.is_dir() else mount


def _enable_memory_controller(parent: Cgroup) -> None:
    available = (_read_text(parent.path / "cgroup.controllers") or "").split()
    if "memory" not in available:
        raise CgroupUnavailable(
            str(parent.path), "the memory controller is not available here (not in cgroup.controllers)"
        )
    if "memory" in (_read_text(parent.path / "cgroup.subtree_control") or "").split():
        return
    try:
        _write(parent.path / "cgroup.subtree_control", "+memory")
    except OSError as exc:
        raise CgroupUnavailable(
            str(parent.path),
            f"the memory controller is not enabled for child groups and enabling it failed ({exc.strerror}); "
            "on cgroup v2 a group that holds processes cannot hand controllers to children",
        ) from None


def _why(exc: OSError, action: str) -> str:
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"not permitted to {action}: run as root or delegate this cgroup to the user"
    if exc.errno == errno.EROFS:
        return f"cannot {action}: the cgroup filesystem is mounted read-only"
    return f"cannot {action}: {exc.strerror or exc}"


def _write(path: Path, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return None


def _read_keyed(path: Path) -> dict[str, int]:
    """`key value` lines (memory.stat, memory.events, memory.oom_control) as a dict; empty when unreadable."""
    values = {}
    for line in (_read_text(path) or "").splitlines():
        key, _, value = line.partition(" ")
        if value.strip().isdigit():
            values[key] = int(value)
    return values

