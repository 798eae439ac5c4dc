"""RSS over time, per attempt: the horse samples about once a second into a capped stream in Redis."""

from __future__ import annotations

import logging
import threading
from typing import Any

from ..model import Attempt
from ..storage.store import Store

log = logging.getLogger("resilient.memory")
INTERVAL = 1.0
CAP = 3600  # samples kept per attempt: an hour at one a second


class MemoryHistory:
    """A daemon thread in the horse writing the governor's latest usage every INTERVAL seconds."""

    def __init__(self, store: Store, attempt: Attempt, governor: Any) -> None:
        self.store, self.attempt, self.governor = store, attempt, governor
        self._stop = threading.Event()

    def start(self) -> "MemoryHistory":
        threading.Thread(target=self._run, name="memory-history", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        # the first sample after a second: a job that ends sooner costs no write (nor a connection)
        while not self._stop.wait(INTERVAL):
            try:
                self.store.add_memory_sample(self.attempt, self.governor.usage, str(self.governor.level), CAP)
            except Exception as exc:  # history is for people; never let it disturb the job
                log.debug("memory history: %s", exc)


def series(store: Store, job_id: str, attempts: int) -> list[dict[str, Any]]:
    """Every sample of every attempt, oldest first: {at, rss, level, attempt}."""
    return [{**sample, "attempt": attempt} for attempt in range(1, attempts + 1)
            for sample in store.memory_samples(job_id, attempt)]
