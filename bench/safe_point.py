"""Cost of a safe point that does not persist: ctx.save() and one ctx.iterate step, in ns per call."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from resilient.client import Client
from resilient.config import Settings
from resilient.context import Context
from resilient.registry import JobOptions


def measure(data_dir: Path, n: int = 200_000) -> dict[str, float]:
    client = Client.from_settings(Settings(data_dir=data_dir))
    client.store.create_job("bench-safe-point", "bench.x", "bench", 10)
    _, attempt = client.store.begin_attempt("bench-safe-point", "bench", "local")
    ctx = Context(attempt, client.store, JobOptions(checkpoint_every=3600), None, 16 << 20)
    state = {"offset": 123456, "rows": 987}
    start = time.perf_counter_ns()
    for _ in range(n):
        ctx.save(state)
    save_ns = (time.perf_counter_ns() - start) / n
    start = time.perf_counter_ns()
    for _ in ctx.iterate(range(n)):
        pass
    iterate_ns = (time.perf_counter_ns() - start) / n
    return {"ctx.save (not persisting) ns": save_ns, "ctx.iterate per item ns": iterate_ns}


if __name__ == "__main__":
    for name, value in measure(Path(sys.argv[1] if len(sys.argv) > 1 else ".resilient")).items():
        print(f"{name}: {value:.0f}")
