"""Tying child processes to their parent's life (Linux PR_SET_PDEATHSIG)."""

from __future__ import annotations

import functools
import logging
import os
import signal
from typing import Any

from . import deaths

log = logging.getLogger("resilient.worker")


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
    prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@functools.cache
def load_prctl() -> Any:
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
