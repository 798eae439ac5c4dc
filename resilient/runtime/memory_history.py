"""RSS over time, per attempt: the horse writes a sample about once a second into a capped stream in Redis."""

from __future__ import annotations

import logging
from typing import Any

from ..model import Attempt
from ..storage.store import Store

log = logging.getLogger("resilient.memory")
INTERVAL = 1.0
CAP = 3600  # samples kept per attempt: an hour at one a second


class MemoryHistory:
    """Writes the governor's latest usage every INTERVAL seconds, from the governor's own thread."""

    def __init__(self, store: Store, attempt: Attempt, governor: Any) -> None:
        self.store, self.attempt, self.governor = store, attempt, governor

    def start(self) -> "MemoryHistory":
        # the first sample after a second: a job that ends sooner costs no write
        self.governor.every(INTERVAL, self._write)
        return self

    def _write(self) -> None:
        try:
            self.store.add_memory_sample(self.attempt, self.governor.usage, str(self.governor.level), CAP)
        except Exception as exc:  # history is for people; never let it disturb the job
            log.debug("memory history: %s", exc)


def series(store: Store, job_id: str, attempts: int) -> list[dict[str, Any]]:
    """Every sample of every attempt, oldest first: {at, rss, level, attempt}."""
    return [{**sample, "attempt": attempt} for attempt in range(1, attempts + 1)
            for sample in store.memory_samples(job_id, attempt)]
