"""The bodies of bench/jobs.py, each wrapped once with @resilient.job.

Workers load them with `resilient worker bench.resilient_jobs`.
"""

from __future__ import annotations

import resilient

from .jobs import batches, count, idle, items, leak, noop

NOOP_QUEUE, COUNT_QUEUE, LEAK_QUEUE, IDLE_QUEUE = "bench-noop", "bench-count", "bench-leak", "bench-idle"
BATCHES_QUEUE = "bench-batches"
ITEMS_QUEUE = "bench-items"
COUNT_CHECKPOINT_EVERY = 0.5  # seconds: an item is 10 ms, so at most ~50 items are redone after a kill
ITEMS_CHECKPOINT_EVERY = 5.0  # seconds: the realistic job's setting (scenario 10)

noop_job = resilient.job(queue=NOOP_QUEUE)(noop)
count_job = resilient.job(queue=COUNT_QUEUE, checkpoint_every=COUNT_CHECKPOINT_EVERY)(count)
leak_job = resilient.job(queue=LEAK_QUEUE, checkpoint_every=3600)(leak)
idle_job = resilient.job(queue=IDLE_QUEUE)(idle)
batches_job = resilient.job(queue=BATCHES_QUEUE, checkpoint_every=0.5)(batches)
items_job = resilient.job(queue=ITEMS_QUEUE, checkpoint_every=ITEMS_CHECKPOINT_EVERY)(items)
