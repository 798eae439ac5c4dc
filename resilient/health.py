"""Health probes for containers: --live (this process tree is ticking; no Redis needed) and --ready."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from .config import Settings

MAX_AGE = 30.0  # seconds since a worker's last loop tick before it counts as stuck
WAITING = "(waiting for Redis)"  # the name a process ticks under before it has reached Redis


def health_dir() -> Path:
    return Path(os.environ.get("RESILIENT_HEALTH_DIR") or Path(tempfile.gettempdir()) / "resilient-health")


def mark_alive(role: str, name: str) -> None:
    """Called from a loop tick: the file's mtime says when this process last made progress."""
    directory = health_dir()
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{role}-{os.getpid()}").write_text(name)


def forget(role: str) -> None:
    (health_dir() / f"{role}-{os.getpid()}").unlink(missing_ok=True)


def _ticking(max_age: float) -> list[tuple[str, str]]:
    """(role, name) of local processes alive and ticking within max_age (name is WAITING while they
    wait for Redis at start)."""
    found = []
    now = time.time()
    for path in health_dir().glob("*-*"):
        role, _, pid = path.name.rpartition("-")
        if not pid.isdigit() or not Path(f"/proc/{pid}").exists():
            path.unlink(missing_ok=True)  # a process that is gone
            continue
        if now - path.stat().st_mtime <= max_age:
            found.append((role, path.read_text()))
    return found


def check_live(max_age: float = MAX_AGE) -> tuple[bool, str]:
    ticking = _ticking(max_age)
    if not ticking:
        return False, f"no worker or supervisor here has ticked in the last {max_age:.0f} s"
    return True, f"{len(ticking)} process(es) ticking: " + ", ".join(f"{r} {n}" for r, n in ticking)


def check_ready(settings: Settings, max_age: float = MAX_AGE) -> tuple[bool, str]:
    """A local worker or supervisor ticks, Redis answers, none of them is still waiting for it, and every
    local worker is registered there."""
    from . import keys
    from .connection import open_redis
    from .errors import RedisUnavailable

    ticking = _ticking(max_age)
    if not ticking:
        return False, (f"not ready: no worker or supervisor here has ticked in the last {max_age:.0f} s; "
                       "start one (`resilient worker MODULES` or `resilient supervisor`)")
    try:
        connection, url = open_redis(settings)
    except RedisUnavailable as exc:
        return False, str(exc)
    waiting = sorted({role for role, name in ticking if name == WAITING})
    if waiting:
        return False, f"Redis at {url} answers, but the local {' and '.join(waiting)} has not reached it yet"
    workers = [name for role, name in ticking if role == "worker"]
    missing = [name for name in workers if not connection.exists(keys.worker_status(name))]
    if missing:
        return False, f"Redis at {url} answers, but worker(s) {', '.join(missing)} are not registered"
    supervisors = len(ticking) - len(workers)
    return True, f"Redis at {url} answers; {len(workers)} local worker(s) registered, {supervisors} supervisor(s)"
