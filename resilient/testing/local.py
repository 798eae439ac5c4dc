"""run(): a job called inline, once, as a worker's horse would call it (without the fork and Redis)."""

from __future__ import annotations

from typing import Any

from .attempts import LocalJob, Monitor, run_attempt
from .effects import EffectLog
from .store import MemoryStore


def run(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Call the job `fn` with a real Context (in-memory checkpoints, its own checkpoint_every on the real
    clock) and these arguments, both through msgpack as a worker gets them; its result, as a worker
    stores it (msgpack: a tuple comes back a list)."""
    job = LocalJob.of(fn, args, kwargs, 16 * 1024 * 1024)
    store = MemoryStore()
    return run_attempt(job, store, 1, None, Monitor(store, EffectLog()), persist_every=None).result
