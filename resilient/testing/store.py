"""The kit's checkpoint store: what a worker keeps in Redis for one job, kept in memory instead.

A simulated kill freezes it: from the moment of death nothing more reaches it, as nothing more reaches
Redis from a process that got SIGKILL.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import islice
from typing import Any

from ..model import Attempt, Checkpoint


class MemoryStore:
    """Implements api.context.CheckpointStore for one job: its checkpoint, its ctx.once records, progress."""

    def __init__(self, checkpoint: Checkpoint | None = None, once: dict[str, bytes] | None = None) -> None:
        self.seq = checkpoint.seq if checkpoint else 0
        self._data = checkpoint.data if checkpoint else None  # a Checkpoint is built only when asked for
        self.once: dict[str, bytes] = once if once is not None else {}
        self.fields: dict[str, Any] = {}
        self.dead = False  # the attempt writing here was killed: its later writes never happened

    @property
    def checkpoint(self) -> Checkpoint | None:
        return None if self._data is None else Checkpoint(self.seq, self._data, 0)

    def save_checkpoint(self, attempt: Attempt, data: bytes, done: int | None = None,
                        total: int | None = None, durable: bool = False) -> int:
        if not self.dead:
            self.seq += 1
            self._data = data
        return self.seq

    def set_fields(self, attempt: Attempt, **fields: Any) -> None:
        if not self.dead:
            self.fields.update(fields)

    def once_result(self, job_id: str, key: str) -> bytes | None:
        return self.once.get(key)

    def record_once(self, attempt: Attempt, key: str, data: bytes) -> None:
        if not self.dead:
            self.once.setdefault(key, data)

    def snapshot(self) -> "Persisted":
        """What a death at this moment would leave behind."""
        return Persisted(self.checkpoint, len(self.once))


@dataclass(frozen=True)
class Persisted:
    """What survived a death: the last persisted checkpoint and how many ctx.once records were written."""

    checkpoint: Checkpoint | None
    once_records: int

    def restore(self, reference: MemoryStore) -> MemoryStore:
        """A store holding what `reference` held at the moment this was taken."""
        return MemoryStore(self.checkpoint, dict(islice(reference.once.items(), self.once_records)))
