"""Tying child processes to their parent's life (Linux PR_SET_PDEATHSIG), and ending what a horse left."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

import psutil

from . import deaths

log = logging.getLogger("resilient.worker")
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
LEFTOVER_PATIENCE = 5.0  # seconds to wait for killed leftovers to exit before giving up on them


def die_with_parent(parent_pid: int) -> None:
    """Linux: the kernel SIGKILLs this horse if its worker parent dies, so no orphan runs on unwatched."""
    set_parent_death_signal()
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(deaths.EXIT_STALE)


def set_parent_death_signal() -> None:
    """Linux: the kernel SIGKILLs the calling process when its parent dies."""
    prctl = load_prctl()
    if prctl is None:
        log.warning("cannot tie a child's life to the worker's (no prctl)")
        return
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def become_subreaper() -> None:
    """Linux: orphans of our descendants (a job's children, even detached with setsid) become our
    children instead of PID 1's, so end_leftovers can find them."""
    prctl = load_prctl()
    if prctl is None or prctl(PR_SET_CHILD_SUBREAPER, 1) != 0:
        log.warning("cannot adopt what jobs leave running (no PR_SET_CHILD_SUBREAPER): only their process "
                    "group is ended")


def end_leftovers(horse_pid: int, keep: set[int]) -> None:
    """After a horse exit: SIGKILL what is left of its process group, and every child of ours not in
    `keep` (orphans the job left, adopted by this subreaper), then reap them."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(horse_pid, signal.SIGKILL)  # RQ puts each horse in its own group
    end_orphans(keep)


def end_orphans(keep: set[int]) -> None:
    """SIGKILL and reap every child of ours not in `keep`: what a subreaper adopted."""
    deadline = time.monotonic() + LEFTOVER_PATIENCE
    while strays := [pid for pid in own_children() if pid not in keep]:
        # killing one may orphan its own children to us: the loop takes them on the next pass
        for pid in strays:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        if time.monotonic() > deadline:
            log.warning("processes left by the job would not exit: %s", strays)
            return
        time.sleep(0.005)


def own_children() -> list[int]:
    """The pids of this process's children: from /proc/self/task/*/children (~0.04 ms here; an orphan
    adopted by a subreaper may hang under any of its threads), else psutil, which reads every process on the
    machine (~4 ms with 100 of them: once per job, that was a tenth of a trivial job's cycle)."""
    try:
        return [int(pid) for task in os.listdir("/proc/self/task")
                for pid in Path(f"/proc/self/task/{task}/children").read_text().split()]
    except FileNotFoundError:  # a thread that just ended, or a kernel without CONFIG_PROC_CHILDREN
        return [child.pid for child in psutil.Process().children()]


@functools.cache
def load_prctl() -> Any:
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
