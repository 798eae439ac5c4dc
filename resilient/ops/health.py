"""Health probes for containers: --live (this process tree is ticking; no Redis needed) and --ready."""

from __future__ import annotations

import os
import stat
import tempfile
import time
from pathlib import Path

import psutil

from ..config import Settings, configured_health_dir
from ..errors import ConfigError

MAX_AGE = 30.0  # seconds since a worker's last loop tick before it counts as stuck
WAITING = "(waiting for Redis)"  # the name a process ticks under before it has reached Redis
_redis_of_this_process = ""  # the (masked) URL this process serves, written with each tick


def for_redis(settings: Settings) -> None:
    """Say which Redis this process serves (before it first ticks): --ready then looks only at the local
    processes of the Redis it checks, not at those of another server on the same host."""
    from ..storage.connection import mask_password, resolve_url

    global _redis_of_this_process
    _redis_of_this_process = mask_password(resolve_url(settings))


def health_dir() -> Path:
    """RESILIENT_HEALTH_DIR, else this user's own directory under the temp dir."""
    return configured_health_dir() or Path(tempfile.gettempdir()) / f"resilient-health-{os.getuid()}"


def private_dir() -> Path:
    """The health dir, made 0700; refused when it is a symlink or belongs to another user."""
    directory = health_dir()
    try:
        directory.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        pass
    info = os.lstat(directory)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise ConfigError(f"{directory} is not a directory of this user's; remove it or set RESILIENT_HEALTH_DIR")
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(directory, 0o700)
    return directory


def mark_alive(role: str, name: str) -> None:
    """Called from a loop tick: the file's mtime says when this process last made progress. Written aside
    and renamed into place: a probe never reads it half written, and a symlink there is replaced, not
    written through."""
    directory = private_dir()
    aside = directory / f".{role}.{os.getpid()}.tmp"  # no "-": probes do not take it for a tick file
    fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(f"{name}\n{_redis_of_this_process}")
    os.replace(aside, directory / f"{role}-{os.getpid()}")


def forget(role: str) -> None:
    (health_dir() / f"{role}-{os.getpid()}").unlink(missing_ok=True)


def _ticking(max_age: float) -> list[tuple[str, str, str]]:
    """(role, name, Redis URL) of local processes alive and ticking within max_age (name is WAITING while
    they wait for Redis at start; the URL is "" for a process that did not say)."""
    found = []
    now = time.time()
    for path in private_dir().glob("*-*"):
        role, _, pid = path.name.rpartition("-")
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            continue
        if not (pid.isdigit() and stat.S_ISREG(info.st_mode) and info.st_uid == os.getuid() and _ours(int(pid))):
            path.unlink(missing_ok=True)  # a process that is gone, or something that is not our file
            continue
        if now - info.st_mtime <= max_age:
            name, _, url = path.read_text().partition("\n")
            found.append((role, name, url))
    return found


def _ours(pid: int) -> bool:
    """pid is a live `resilient` (or `python -m resilient`) process of this user, not a recycled pid."""
    try:
        proc = psutil.Process(pid)
        return proc.uids().real == os.getuid() and "resilient" in {Path(arg).name for arg in proc.cmdline()[:4]}
    except psutil.Error:
        return False


def check_live(max_age: float = MAX_AGE) -> tuple[bool, str]:
    ticking = _ticking(max_age)
    if not ticking:
        return False, f"no worker or supervisor here has ticked in the last {max_age:.0f} s"
    return True, f"{len(ticking)} process(es) ticking: " + ", ".join(f"{r} {n}" for r, n, _ in ticking)


def check_ready(settings: Settings, max_age: float = MAX_AGE) -> tuple[bool, str]:
    """A local worker or supervisor ticks, Redis answers, none of them is still waiting for it, and every
    local worker is registered there."""
    from ..errors import RedisUnavailable
    from ..storage import keys, redis_settings
    from ..storage.connection import open_redis

    ticking = _ticking(max_age)
    if not ticking:
        return False, (f"not ready: no worker or supervisor here has ticked in the last {max_age:.0f} s; "
                       "start one (`resilient worker MODULES` or `resilient supervisor`)")
    try:
        connection, url = open_redis(settings)
    except RedisUnavailable as exc:
        return False, str(exc)
    here = [(role, name) for role, name, served in ticking if not served or served == url]
    if not here:
        return False, (f"not ready: no worker or supervisor here serves Redis at {url} ({len(ticking)} serve "
                       "another server); start one with this REDIS_URL")
    waiting = sorted({role for role, name in here if name == WAITING})
    if waiting:
        return False, f"Redis at {url} answers, but the local {' and '.join(waiting)} has not reached it yet"
    workers = [name for role, name in here if role == "worker"]
    missing = [name for name in workers if not connection.exists(keys.worker_status(name))]
    if missing:
        return False, f"Redis at {url} answers, but worker(s) {', '.join(missing)} are not registered"
    supervisors = len(here) - len(workers)
    ready = f"Redis at {url} answers; {len(workers)} local worker(s) registered, {supervisors} supervisor(s)"
    return True, "; ".join([ready, *(f"warning: {w}" for w in redis_settings.warnings(connection))])
