"""The worker's view of memory: the limit, the horse's governor, and the evidence at a death."""

from __future__ import annotations

from typing import Any, Callable

from .config import Settings


class MemoryWatcher:
    """Placeholder until the memory subpackage is wired: no limit, no governor, counters unavailable."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.governor = None
        self._before: int | None = None

    def before_attempt(self) -> None:
        self._before = None

    def oom_counts(self) -> tuple[int | None, int | None]:
        return self._before, None

    def in_horse(self, on_critical: Callable[[int], None]) -> None:
        pass

    def evidence(self, before: int | None, after: int | None, fields: dict[str, str],
                 job_pid: int | None = None) -> dict[str, Any]:
        return {
            "oom_kill_before": "unavailable" if before is None else before,
            "oom_kill_after": "unavailable" if after is None else after,
            "seq": int(fields.get("seq", 0)),
        }

    def close(self) -> None:
        pass
