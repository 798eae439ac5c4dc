"""JobHandle: what the enqueuer holds: status, progress, attempts, result()."""

from __future__ import annotations

import time
from typing import Any

from ..errors import JobFailed, JobParked, JobTimeout, NoSuchJob
from ..model import JobStatus
from ..storage.codec import decode
from ..storage.store import Store

POLL_INTERVAL = 0.05


class JobHandle:
    def __init__(self, job_id: str, store: Store) -> None:
        self.id = job_id
        self._store = store

    def __repr__(self) -> str:
        return f"<JobHandle {self.id} {self.status}>"

    def _fields(self) -> dict[str, str]:
        fields = self._store.job_fields(self.id)
        if not fields:
            raise NoSuchJob(f"no job {self.id}")
        return fields

    @property
    def status(self) -> str:
        """queued, running, completed, failed or parked."""
        return self._fields()["status"]

    @property
    def progress(self) -> tuple[int, int | None]:
        """(done, total) as the job last reported it; total None when unknown."""
        fields = self._fields()
        total = int(fields.get("total", -1))
        return int(fields.get("done", 0)), (None if total < 0 else total)

    @property
    def attempts(self) -> int:
        return int(self._fields().get("attempt", 0))

    def events(self) -> list[dict[str, Any]]:
        """The job's timeline, oldest first."""
        return self._store.events(self.id)

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the job to end; its return value, or JobFailed / JobParked / JobTimeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            fields = self._fields()
            status = fields["status"]
            if status == JobStatus.COMPLETED:
                return decode(self._store.result_bytes(self.id) or b"\xc0", key=f"result of {self.id}")
            if status == JobStatus.FAILED:
                raise JobFailed(self.id, fields.get("error", "unknown error"))
            if status == JobStatus.PARKED:
                raise JobParked(self.id, fields.get("parked_reason", "no reason recorded"))
            if deadline is not None and time.monotonic() >= deadline:
                raise JobTimeout(f"job {self.id} still {status} after {timeout} s")
            time.sleep(POLL_INTERVAL)
