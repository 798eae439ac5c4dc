"""What the Redis server is set up to do with our data: its eviction policy, its persistence, and how full it
is. A batch system's Redis must never evict a key (a job would vanish) and must survive a restart."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import cast

import redis

from ..config import format_size
from ..errors import RedisFull

CACHE_SECONDS = 1.0  # how long a client trusts its last reading of the server's memory before enqueueing


@dataclass(frozen=True)
class MemoryUse:
    used: int  # bytes (INFO used_memory)
    maxmemory: int  # bytes; 0: no limit set
    policy: str  # maxmemory-policy

    @property
    def fraction(self) -> float | None:
        return self.used / self.maxmemory if self.maxmemory else None


def memory_use(connection: redis.Redis) -> MemoryUse:
    info = connection.info("memory")
    return MemoryUse(int(info.get("used_memory", 0)), int(info.get("maxmemory", 0)),
                     str(info.get("maxmemory_policy", "unknown")))


def warnings(connection: redis.Redis) -> list[str]:
    """One line for each setting that can lose jobs: an eviction policy other than noeviction, no
    persistence at all."""
    found = []
    policy = memory_use(connection).policy
    if policy != "noeviction":
        found.append(f"Redis evicts keys under memory pressure (maxmemory-policy {policy}): jobs and checkpoints "
                     "can vanish; set maxmemory-policy noeviction")
    if not _persists(connection):
        found.append("Redis keeps no data on disk (no AOF, no RDB snapshots): a restart loses every job; "
                     "turn on appendonly yes (or RDB saves)")
    return found


def _persists(connection: redis.Redis) -> bool:
    persistence = connection.info("persistence")
    if int(persistence.get("aof_enabled", 0)):
        return True
    try:
        save = cast(dict[str, str], connection.config_get("save")).get("save", "")
    except redis.ResponseError:  # CONFIG is often renamed or refused by managed services: give the benefit
        return True
    return bool(save.strip())


class HighWater:
    """Refuses new jobs while the server is above `fraction` of its maxmemory, so that running jobs can still
    write their checkpoints and results (with noeviction, Redis refuses every write once full)."""

    def __init__(self, connection: redis.Redis, fraction: float) -> None:
        self.connection = connection
        self.fraction = fraction
        self._read_at = float("-inf")
        self._use: MemoryUse | None = None

    def check(self) -> None:
        now = time.monotonic()
        if self._use is None or now - self._read_at >= CACHE_SECONDS:
            self._use, self._read_at = memory_use(self.connection), now
        use = self._use
        if use.fraction is not None and use.fraction >= self.fraction:
            raise RedisFull(
                f"Redis holds {format_size(use.used)} of its {format_size(use.maxmemory)} maxmemory, above the "
                f"{self.fraction:.0%} high-water mark: new jobs are refused so that running ones can finish; "
                "free memory (a shorter RESILIENT_KEEP) or raise maxmemory")
